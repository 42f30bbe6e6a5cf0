"""Train FQ-GANs: ProGAN, StyleGAN, StyleGAN2, U-GAT-IT and BigGAN with feature quantization in D.

    python run_training.py                                   # FQ-StyleGAN2, built-in data, 32x32
    python run_training.py --model stylegan2 --fq-blocks 16,32 --dataset ~/data/ffhq --config e
    python run_training.py --fq-blocks ""                    # the baseline, without FQ
    python run_training.py --out runs/demo --resume          # continue a stopped run
    python run_training.py --init-from converted/ffhq --dataset ~/data/faces   # fine-tune
    python run_training.py --model ugatit --dataset ~/data/selfie2anime --config official
    python run_training.py --model biggan --dataset ~/data/cifar10 --config cifar10

Every run writes into its own folder (--out, default runs/<NNNNN>-<model>-<dataset>): checkpoints,
sample grids (fakesKKKKKK.png), TensorBoard events (tensorboard/), a JSON-lines log (log.jsonl),
the options used (training_options.json), summary.json, and once training is finished the
generator as a SavedModel (export/, as run_export.py writes it).
"""

import glob
import importlib
import json
import os
import re
import shutil
import signal
import sys

import cli_common  # noqa: E402

cli_common.training_environment()   # before TensorFlow is imported

from absl import app, flags, logging  # noqa: E402
from training.run_options import FAMILIES, OPTIONS_FILE, PRECISIONS  # noqa: E402

FLAGS = flags.FLAGS

# What --resume may change: the run's length, where it runs and how many checkpoints it keeps.
# Every other option is the run's own (training_options.json); a flag that would change one is
# an error, never ignored.
RESUME_MAY_CHANGE = ("kimg", "iterations", "strategy", "devices", "cpu-replicas",
                     "keep-checkpoints")
# Flags that are not options of a run, and flags whose option field has another name.
NOT_OPTIONS = ("model", "out", "resume", "deterministic", "checkpoint-minutes", "intra-op-threads")
FLAG_FIELDS = {"lr": "learning_rate", "gamma": "r1_gamma"}   # Options.FLAG_FIELDS add to these
# --intra-op-threads defaults to 1 for the demo presets on a machine without GPUs
# (training.distribute.set_intra_op_threads): their ops are small (16-64 channels at 32x32), so
# splitting one op over the cores costs more than it gains, and TensorFlow's inter-op threads
# (one per core) then run independent ops side by side. img/s of each model's default run with 1
# vs TensorFlow's default (every core), Intel Xeon 2 cores, 2026-12-04: StyleGAN2 215 vs 187,
# StyleGAN (8x8 stage) 990 vs 730, BigGAN 1225 vs 945, U-GAT-IT 12.4 vs 7.8 it/s. The reference
# setting (256 channels, bench/bench_peer.py) is the opposite case, 19.6 vs 22.8 img/s, so the
# other presets keep TensorFlow's default.
# Old spellings, kept for one release (cli_common).
RENAMED = {"img-size": "resolution"}
# Flags run_training.py reads itself for every model; any other flag given must be one the
# model's family reads (`family_options`), so a flag of another family is an error, not ignored.
TOOL_FLAGS = NOT_OPTIONS + ("init-from", "keep-checkpoints", "cpu-replicas", "mixed-precision")
# What to use instead, named in that error.
OTHER_FAMILY_FLAGS = {"fq-blocks": "--fq-layers (D blocks by index)",
                      "fq-layers": "--fq-blocks (D blocks by input resolution)",
                      "iterations": "--kimg (the length in thousands of images)"}
# The range of every numeric flag (0 = "the preset's" where the help says so), checked for
# every model before anything is read or built; the families check what depends on the data.
POSITIVE, NON_NEGATIVE, AT_LEAST_ONE = ((lambda v: v > 0), "> 0"), ((lambda v: v >= 0), ">= 0"), \
    ((lambda v: v >= 1), ">= 1")
DECAY = ((lambda v: 0 <= v < 1), "in [0, 1) (0 = the model's default)")
FLAG_RANGES = {
    "resolution": NON_NEGATIVE, "kimg": POSITIVE, "batch": NON_NEGATIVE, "lr": NON_NEGATIVE,
    "initial-resolution": ((lambda v: v == 0 or v >= 4 and v & (v - 1) == 0),
                           "a power of two >= 4 (0 = the preset's)"),
    "stabilize-kimg": NON_NEGATIVE, "transition-kimg": POSITIVE,
    "fq-num-embeddings": NON_NEGATIVE, "fq-decay": DECAY, "fq-alpha": NON_NEGATIVE,
    "fq-warmup-kimg": NON_NEGATIVE, "num-images": NON_NEGATIVE, "sq-dim": AT_LEAST_ONE,
    "sq-codebook": ((lambda v: v >= 2), ">= 2"), "sq-beta": NON_NEGATIVE,
    "sq-weight": NON_NEGATIVE, "sq-uniformity-t": POSITIVE, "sq-cr-weight": NON_NEGATIVE,
    "sq-cr-sigma": NON_NEGATIVE, "sq-cbi-steps": AT_LEAST_ONE, "sq-cbi-lr": POSITIVE,
    "sq-cbi-epsilon": POSITIVE, "sq-cbi-batch": NON_NEGATIVE, "seed": NON_NEGATIVE,
    "cpu-replicas": NON_NEGATIVE, "tick-kimg": POSITIVE, "snapshot-ticks": AT_LEAST_ONE,
    "iterations": NON_NEGATIVE, "d-steps": NON_NEGATIVE, "checkpoint-minutes": NON_NEGATIVE,
    "keep-checkpoints": NON_NEGATIVE, "intra-op-threads": NON_NEGATIVE,
}


def define_flags(fv=FLAGS):
    """All flags of run_training.py (defined only when run as a script, or on `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_enum("model", "stylegan2", list(FAMILIES), "Model family.", **d)
    flags.DEFINE_string("config", "demo",
                        "Preset of the model's official settings (a preset of another model is "
                        "an error). Every model: demo (CPU-sized, the default). stylegan2: e, f "
                        "(StyleGAN2 config-e / config-f), limited (stylegan2-ada paper256, for "
                        "100-5,000 images; add --sq for SQ-GAN). stylegan: ffhq (NVlabs/stylegan "
                        "FFHQ, one GPU). progan: celebahq (progressive_growing_of_gans "
                        "CelebA-HQ, one GPU). ugatit: official. biggan: cifar10, cifar100, "
                        "imagenet64.", **d)
    flags.DEFINE_string("dataset", "shapes",
                        "Dataset folder (NVlabs TFRecords, see `python -m datasets.prepare`) or a "
                        "built-in synthetic dataset name (shapes).", **d)
    flags.DEFINE_integer("resolution", 0, "Training resolution (a level of the dataset; U-GAT-IT: "
                         "the image size, divisible by 4, preset 256 official / 64 demo); "
                         "0 = the dataset's full resolution.", **d)
    flags.DEFINE_boolean("conditional", None, "Condition G and D on the dataset's labels (default: "
                         "the preset's: the StyleGAN2 demo when the data has labels, otherwise "
                         "not; --noconditional turns it off).", **d)
    flags.DEFINE_float("kimg", None, "Training length in thousands of real images "
                       "(default: the preset's: demo 40 stylegan2, 28 stylegan / progan; 12000 "
                       "celebahq, 25000 otherwise).", **d)
    flags.DEFINE_integer("batch", 0, "Global minibatch at every resolution (0 = preset: demo 8 "
                         "stylegan2, 16 stylegan / progan, 32 e/f, 64 limited; ffhq / celebahq "
                         "per resolution, 128 at 4-16 down to 4 at 512 and above).", **d)
    flags.DEFINE_float("lr", 0.0, "Learning rate of G and D at every resolution (0 = preset: "
                       "demo 0.004 (StyleGAN2) or 0.002, e/f 0.002, limited 0.0025; ffhq 0.001 "
                       "up to 64, then 0.0015, 0.002, 0.003; celebahq 0.001, 0.0015 at 1024). "
                       "The StyleGAN2 demo's D learns at three times G's rate, the others at G's.",
                       **d)
    flags.DEFINE_float("gamma", -1.0, "R1 weight (< 0 = preset: demo 0.5, e 100, f 10, "
                       "limited 1, ffhq 10; ProGAN has no R1).", **d)
    flags.DEFINE_boolean("mirror", False, "Mirror augmentation (random left-right flips).", **d)
    flags.DEFINE_boolean("progressive", False, "StyleGAN2 with progressive growing "
                         "(ProGAN and StyleGAN always grow).", **d)
    flags.DEFINE_integer("initial-resolution", 0, "First resolution of progressive growing "
                         "(0 = preset: 4 celebahq, 8 otherwise).", **d)
    flags.DEFINE_float("stabilize-kimg", 600.0, "kimg per stabilisation phase.", **d)
    flags.DEFINE_float("transition-kimg", 600.0, "kimg per fade-in phase.", **d)
    flags.DEFINE_string("fq-blocks", None,
                        "Discriminator blocks to quantise, by input resolution (block R takes "
                        "RxR and FQ quantises its R/2 output); \"\" = baseline. Default: the "
                        "preset's (StyleGAN2 demo: 16), else the official blocks (StyleGAN2 "
                        "16,32; StyleGAN/ProGAN 8) that exist at the training resolution.", **d)
    flags.DEFINE_enum("fq-preset", "official", ["official", "paper"],
                      "official: continuous D forward, FQ only adds a loss (the released code); "
                      "paper: quantised forward, alpha ramped from 0 over --fq-warmup-kimg.", **d)
    flags.DEFINE_integer("fq-num-embeddings", 0, "Dictionary size K (0 = model default: "
                         "StyleGAN2 64 for blocks >= 128 and 128 below, as the official code; "
                         "StyleGAN/ProGAN 1024).", **d)
    flags.DEFINE_float("fq-decay", 0.0, "Dictionary EMA decay (0 = model default 0.8).", **d)
    flags.DEFINE_float("fq-commitment", -1.0, "Commitment cost (< 0 = model default: "
                       "StyleGAN2 0.25, StyleGAN/ProGAN 5.0).", **d)
    flags.DEFINE_float("fq-alpha", 1.0, "FQ loss weight alpha.", **d)
    flags.DEFINE_float("fq-warmup-kimg", 0.0, "Ramp alpha from 0 over this many kimg; with "
                       "--fq-preset paper D is fed the continuous features until it ends, the "
                       "quantised ones after (paper preset default: a quarter of --kimg).", **d)
    # fq_keras.UPDATE_CADENCES, spelled out: TensorFlow is imported after the flags parse.
    flags.DEFINE_enum("fq-update-cadence", "step", ["step", "official"],
                      "When the FQ dictionaries update. step: once per D step from its real and "
                      "fake features together; official: once per D evaluation, as the released "
                      "code (G-step fakes, D-step reals, D-step fakes: three per iteration).",
                      **d)
    flags.DEFINE_integer("num-images", 0, "Train on only the first N images of the dataset "
                         "(built-in data: render N images); 0 = all. Limited-data runs.", **d)
    # SQ-GAN (StyleGAN2 only).
    flags.DEFINE_boolean("sq", False, "SQ-GAN: quantise the generator's w with a learned "
                         "codebook (style quantization), with uniformity and consistency "
                         "regularisation. StyleGAN2 only.", **d)
    flags.DEFINE_integer("sq-dim", 4, "SQ: sub-vector (code) length; must divide w_dim "
                         "(paper: 4).", **d)
    flags.DEFINE_integer("sq-codebook", 1024, "SQ: codebook entries K (not given in the paper).",
                         **d)
    flags.DEFINE_boolean("sq-hyperspherical", True, "SQ: unit-sphere codes and sub-vectors "
                         "(paper); --nosq-hyperspherical = plain VQ.", **d)
    flags.DEFINE_float("sq-beta", 0.25, "SQ: commitment cost beta (VQ-VAE default).", **d)
    flags.DEFINE_float("sq-weight", 0.01, "SQ: G loss weight of the VQ and uniformity terms.",
                       **d)
    flags.DEFINE_boolean("sq-uniformity", True, "SQ: include the codebook uniformity loss.", **d)
    flags.DEFINE_float("sq-uniformity-t", 2.0, "SQ: uniformity temperature t.", **d)
    flags.DEFINE_float("sq-cr-weight", 0.01, "SQ: D loss weight of the quantisation-based "
                       "consistency term; 0 = off.", **d)
    flags.DEFINE_float("sq-cr-sigma", 0.1, "SQ: std of the latent perturbation of the "
                       "consistency term.", **d)
    flags.DEFINE_string("sq-cbi-features", "", "SQ: .npy image features (num_images, F) of the "
                        "training set (e.g. CLIP image embeddings) for codebook initialisation "
                        "before training; \"\" = random codebook.", **d)
    flags.DEFINE_integer("sq-cbi-steps", 500, "SQ: codebook-initialisation steps.", **d)
    flags.DEFINE_float("sq-cbi-lr", 1e-3, "SQ: codebook-initialisation learning rate (Adam).",
                       **d)
    flags.DEFINE_float("sq-cbi-epsilon", 0.05, "SQ: Sinkhorn entropic regularisation of "
                       "codebook initialisation.", **d)
    flags.DEFINE_integer("sq-cbi-batch", 0, "SQ: images per codebook-initialisation step; "
                         "0 = all.", **d)
    flags.DEFINE_string("out", "", "Run folder (default runs/<NNNNN>-<model>-<dataset>).", **d)
    flags.DEFINE_boolean("resume", False, "Continue the run in --out from its latest checkpoint "
                         "(from the beginning if it has none yet). The run keeps its options "
                         "(--model need not be given); only --kimg / --iterations, --strategy "
                         "/ --devices / --cpu-replicas and --keep-checkpoints may change.", **d)
    flags.DEFINE_string("init-from", "", "Start a new run from trained weights: converted "
                        "official networks (run_convert.py --outdir), a run folder (its latest "
                        "checkpoint) or a checkpoint (<run>/checkpoints/ckpt-N). G, Gs and D (or "
                        "U-GAT-IT's six networks) are loaded; optimizers, counters and schedule "
                        "start fresh; the architecture must match. A network or FQ dictionaries "
                        "the source lacks start fresh.", **d)
    flags.DEFINE_integer("keep-checkpoints", 3, "Newest checkpoints (snapshots and interval "
                         "ones) kept in the run folder; 0 = keep all (NVlabs keeps every "
                         "snapshot).", **d)
    flags.DEFINE_float("checkpoint-minutes", 10.0, "Also write a checkpoint (without images) "
                       "after this many minutes since the last one; 0 = only at snapshots. "
                       "Ctrl-C or SIGTERM writes one too, then stops.", **d)
    flags.DEFINE_integer("seed", 0, "Random seed.", **d)
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"],
                      "tf.distribute strategy (multiworker needs TF_CONFIG).", **d)
    flags.DEFINE_list("devices", [], "Devices for --strategy mirrored (default: all GPUs).", **d)
    flags.DEFINE_integer("cpu-replicas", 0, "Split the CPU into this many logical devices for "
                         "--strategy mirrored on a machine without GPUs.", **d)
    flags.DEFINE_integer("intra-op-threads", None, "Threads one TensorFlow op may use (0 = "
                         "TensorFlow's default, every core). Default: 1 for --config demo on a "
                         "machine without GPUs (independent small ops then run side by side "
                         "on the inter-op threads: 1.15-1.6x the demos' img/s on 2 cores), "
                         "else 0. May change on --resume.", **d)
    flags.DEFINE_enum("precision", "auto", ["auto", *PRECISIONS], "Keras dtype policy: "
                      "float32; mixed_float16 (float16 compute, loss scaling: GPUs); "
                      "mixed_bfloat16 (bfloat16 compute: CPUs with AMX, TPUs, recent GPUs). "
                      "auto: mixed_bfloat16 for --config demo on a CPU with AMX bfloat16 "
                      "(1.3x faster there, same quality), else float32.", **d)
    flags.DEFINE_boolean("mixed-precision", False, "Old spelling of --precision mixed_float16, "
                         "kept for one release.", **d)
    flags.DEFINE_boolean("xla", False, "Compile the training step with XLA "
                         "(--strategy default only).", **d)
    flags.DEFINE_boolean("deterministic", False, "TensorFlow op determinism "
                         "(tf.config.experimental.enable_op_determinism): bit-exact reruns and "
                         "resumes on GPUs, whose fastest kernels are not deterministic (slower "
                         "there; CPU kernels already are). Pass it again with --resume.", **d)
    flags.DEFINE_float("tick-kimg", 4.0, "kimg between progress lines and log entries.", **d)
    flags.DEFINE_integer("snapshot-ticks", 10, "Ticks between checkpoints and sample grids "
                         "(the StyleGAN demo config: 2).", **d)
    flags.DEFINE_list("metrics", ["swd"], "Metrics at each snapshot: swd or none.", **d)
    # U-GAT-IT and BigGAN.
    flags.DEFINE_string("fq-layers", None, "U-GAT-IT / BigGAN: discriminator layers to quantise "
                        "(U-GAT-IT default 1,2,3: after the global D's down-sampling convs; BigGAN "
                        "default 0,1,2,3: after D blocks); \"\" = baseline.", **d)
    flags.DEFINE_integer("iterations", 0, "U-GAT-IT / BigGAN: training length in iterations "
                         "(G updates); 0 = preset.", **d)
    flags.DEFINE_boolean("light", False, "U-GAT-IT light mode (global-pooled gamma/beta MLP).", **d)
    flags.DEFINE_integer("d-steps", 0, "BigGAN: D steps per G step (0 = preset: 4).", **d)
    cli_common.define_renamed(fv, RENAMED)


def new_run_dir(root, options):
    """runs/<NNNNN>-<model>-<dataset>: a fresh folder, never an existing one."""
    os.makedirs(root, exist_ok=True)
    numbers = [int(m.group(1)) for m in (re.match(r"(\d+)-", n) for n in os.listdir(root)) if m]
    name = os.path.basename(os.path.normpath(options.dataset)) or "data"
    path = os.path.join(root, f"{max(numbers, default=-1) + 1:05d}-{options.model}-{name}")
    os.makedirs(path)
    return path


class _FlagsRead:
    """Parsed flags as a family's `options_from_flags` reads them, noting every flag read."""

    def __init__(self, fv):
        object.__setattr__(self, "_fv", fv)
        object.__setattr__(self, "read", set())

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._fv, name)

    def __getitem__(self, name):
        self.read.add(name)
        return self._fv[name]

    def __setattr__(self, name, value):
        setattr(self._fv, name, value)

    def __contains__(self, name):
        return name in self._fv

    def __iter__(self):
        return iter(self._fv)


def family_options(family, fv):
    """family.options_from_flags(fv); app.UsageError naming every flag given on the command
    line that neither the family nor run_training.py reads (e.g. --fq-blocks with --model
    biggan), which would otherwise be silently ignored."""
    flags_read = _FlagsRead(fv)
    options = family.options_from_flags(flags_read)
    defined = flags.FlagValues()
    define_flags(defined)
    ignored = sorted(name for name in defined if fv[name].present
                     and name not in flags_read.read and name not in TOOL_FLAGS + tuple(RENAMED))
    if ignored:
        instead = [OTHER_FAMILY_FLAGS[name] for name in ignored if name in OTHER_FAMILY_FLAGS]
        one = len(ignored) == 1
        raise app.UsageError(
            f"{', '.join('--' + name for name in ignored)} {'does' if one else 'do'} not apply "
            f"to --model {fv.model}; drop {'it' if one else 'them'}"
            + (f" (this model: {', '.join(instead)})." if instead else "."))
    return options


def main(argv, fv=FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli_common.warn_renamed("run_training.py", fv, RENAMED)
    if fv["mixed-precision"].present:
        if fv["precision"].present:
            raise app.UsageError("--mixed-precision is the old spelling of --precision "
                                 "mixed_float16; give only --precision.")
        print("run_training.py: --mixed-precision is deprecated and goes in the next release; "
              "use --precision mixed_float16.", file=sys.stderr)
        if fv["mixed-precision"].value:
            fv["precision"].parse("mixed_float16")   # as if given (--resume compares it)
    for name, (valid, requirement) in FLAG_RANGES.items():
        value = fv[name].value
        if value is not None and not valid(value):
            raise app.UsageError(f"--{name} must be {requirement}, got {value:g}.")
    cli_common.import_tensorflow_quietly()
    if fv.resume:
        if fv["init-from"].value:
            raise app.UsageError("--init-from starts a new run and --resume continues one; "
                                 "give one of them.")
        family, options = resumed_options(fv)
    else:
        family = importlib.import_module(FAMILIES[fv.model])
        options = family_options(family, fv)
        options.init_from = fv["init-from"].value
        options.keep_checkpoints = fv["keep-checkpoints"].value
    from training.distribute import set_intra_op_threads
    set_intra_op_threads(fv["intra-op-threads"].value, small_ops=options.small_ops)
    family.validate(options)
    if fv["cpu-replicas"].value:
        if fv.strategy != "mirrored":
            raise app.UsageError("--cpu-replicas needs --strategy mirrored.")
        from training.distribute import split_virtual_cpus
        devices = split_virtual_cpus(fv["cpu-replicas"].value)
        options.devices = options.devices or tuple(devices)
    run_dir = fv.out
    created = False   # the run folder is this command's own (removed again on a config error)
    resume = fv.resume
    if resume:
        from training.checkpoints import latest_checkpoint
        if latest_checkpoint(run_dir) is None:
            print(f"No checkpoint in {run_dir} yet: starting the run from the beginning.")
            clear_run_outputs(run_dir)
            resume = False
    elif run_dir:
        if os.path.exists(run_dir) and os.listdir(run_dir):
            raise app.UsageError(f"--out {run_dir} exists and is not empty; pick a new folder or "
                                 "add --resume to continue that run.")
        created = not os.path.exists(run_dir)
        os.makedirs(run_dir, exist_ok=True)
    else:
        run_dir, created = new_run_dir("runs", options), True

    from training import TrainingConfigError, TrainingDiverged
    if fv.deterministic:
        import tensorflow as tf
        tf.config.experimental.enable_op_determinism()
    logging.set_verbosity(logging.WARNING)  # no per-checkpoint INFO lines from TensorFlow
    try:
        summary = family.training_loop(options, run_dir, resume=resume,
                                       checkpoint_minutes=fv["checkpoint-minutes"].value)
    except TrainingConfigError as e:
        from training.checkpoints import latest_checkpoint
        if created and latest_checkpoint(run_dir) is None:
            shutil.rmtree(run_dir)   # a new run that never trained: no half-made folder left
        print(f"run_training.py: error: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"run_training.py: error: {e}", file=sys.stderr)
        return 1
    if summary.get("interrupted"):
        name = summary["interrupted"]
        print(f"Stopped by {name} at kimg {summary['kimg']:g}, checkpoint "
              f"{summary['checkpoint']}; continue with: python run_training.py --out {run_dir} "
              "--resume")
        return 128 + signal.Signals[name].value if name in signal.Signals.__members__ else 1
    summary = export_finished_run(run_dir, summary)
    print(f"Done: {summary['kimg']:g} kimg in {summary['seconds']:.0f} s.")
    for label, key in (("checkpoint", "checkpoint"), ("exported model", "export")):
        if summary.get(key):
            print(f"  {label + ':':16}{summary[key]}")
    print(f"  {'sample grids:':16}{run_dir}/fakes*.png")
    print(f"  {'TensorBoard:':16}tensorboard --logdir {run_dir}/tensorboard")
    print(f"  {'log:':16}{run_dir}/log.jsonl")
    return 0


def resumed_options(fv):
    """(family module, options) of the run in --out: its saved options, with the length and
    placement flags applied. Raises app.UsageError (one line) for a folder that is not a run,
    a --model other than the run's, or a flag that would change another option."""
    run_dir = fv.out
    if not run_dir or not os.path.isdir(run_dir):
        raise app.UsageError("--resume needs --out pointing at an existing run folder.")
    try:
        model = saved_model(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(f"--resume: {e}") from None
    if fv["model"].present and fv.model != model:
        raise app.UsageError(f"--model {fv.model}: {run_dir} is a {model} run, and a resumed "
                             "run keeps its model; drop --model.")
    family = importlib.import_module(FAMILIES[model])
    try:
        saved = family.Options.load(run_dir)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(f"--resume: {e}") from None
    fv.model = model                        # the flags read as the run's family reads them
    given = family_options(family, fv)   # also checks the values of the flags given
    changed, fields = [], {**FLAG_FIELDS, **getattr(saved, "FLAG_FIELDS", {})}
    for name in sorted(fv):
        field = fields.get(name, name.replace("-", "_"))
        if (fv[name].present and name not in RESUME_MAY_CHANGE + NOT_OPTIONS
                and name not in RENAMED and hasattr(saved, field)
                and _canonical(getattr(given, field)) != _canonical(getattr(saved, field))):
            changed.append(f"--{name}")
    if changed:
        raise app.UsageError(
            f"--resume keeps the run's options, and {', '.join(changed)} would change "
            f"{run_dir}/training_options.json; only --kimg, --iterations, --strategy, --devices, "
            "--cpu-replicas and --keep-checkpoints may change (start a new run with another "
            "--out for the rest).")
    if fv["iterations"].present and hasattr(saved, "iterations"):
        saved.iterations = given.iterations
    elif fv["kimg"].present:
        saved.kimg = fv.kimg
    saved.strategy, saved.devices = given.strategy, given.devices
    if fv["keep-checkpoints"].present:
        saved.keep_checkpoints = fv["keep-checkpoints"].value
    if getattr(saved, "xla", False) and saved.strategy != "default":
        raise app.UsageError("this run trains with --xla, which works with --strategy default "
                             "only.")
    return family, saved


def saved_model(run_dir):
    """The model family recorded in run_dir/training_options.json (FileNotFoundError,
    ValueError with the reason)."""
    path = os.path.join(run_dir, OPTIONS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir}: no {OPTIONS_FILE}; not a run folder written by "
                                "run_training.py.")
    try:
        with open(path) as f:
            model = json.load(f).get("model")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None
    if model not in FAMILIES:
        raise ValueError(f"{path}: unknown model {model!r}; was it written by a newer version?")
    return model


def _canonical(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


def clear_run_outputs(run_dir):
    """Removes what a run that never reached a checkpoint wrote (logs, TensorBoard events,
    sample and reals grids, summary), keeping its training_options.json: the run starts again."""
    names = ["log.jsonl", "summary.json", "tensorboard", "checkpoints", "export", "reals.png"]
    paths = [os.path.join(run_dir, n) for n in names] + \
        glob.glob(os.path.join(run_dir, "fakes*.png"))
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def export_finished_run(run_dir, summary):
    """Exports the generator of a finished run into <run_dir>/export (on the chief; replaced
    after a resumed run finishes) and records the path in `summary` and summary.json.

    The loops leave this to their caller: a SavedModel is rebuilt from the run's last
    checkpoint, exactly as `run_export.py --network <run_dir>` does. A run cut short
    (`finished` false) exports when it is resumed and finishes."""
    from training.distribute import task_index
    if not summary.get("finished") or task_index() != 0:
        return summary
    from export import export_run
    summary["export"] = export_run(run_dir, overwrite=True)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def run(argv, fv=FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_training.py", main, argv, fv)


if __name__ == "__main__":
    define_flags()
    cli_common.start("run_training.py", run)
