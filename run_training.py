"""Train FQ-GANs: ProGAN, StyleGAN and StyleGAN2 with feature quantization in D.

    python run_training.py                                   # FQ-StyleGAN2, built-in data, 32x32
    python run_training.py --model stylegan2 --fq-blocks 16,32 --dataset ~/data/ffhq --config e
    python run_training.py --fq-blocks ""                    # the baseline, without FQ
    python run_training.py --out runs/demo --resume          # continue a stopped run

Every run writes into its own folder (--out, default runs/<NNNNN>-<model>-<dataset>): checkpoints,
sample grids (fakesKKKKKK.png), TensorBoard events (tensorboard/), a JSON-lines log (log.jsonl)
and the options used (training_options.json).
"""

import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(fv=FLAGS):
    """All flags of run_training.py (defined only when run as a script, or on `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_enum("model", "stylegan2", ["progan", "stylegan", "stylegan2"],
                      "Model family.", **d)
    flags.DEFINE_enum("config", "demo", ["demo", "e", "f"],
                      "Network widths and loss preset: demo (CPU-sized, the default), e or f "
                      "(StyleGAN2 paper configs: fmap_base 8192 / 16384, gamma 100 / 10).", **d)
    flags.DEFINE_string("dataset", "shapes",
                        "Dataset folder (NVlabs TFRecords, see `python -m datasets.prepare`) or a "
                        "built-in synthetic dataset name (shapes).", **d)
    flags.DEFINE_integer("resolution", 0, "Training resolution (a level of the dataset); "
                         "0 = the dataset's full resolution.", **d)
    flags.DEFINE_boolean("conditional", False, "Condition G and D on the dataset's labels.", **d)
    flags.DEFINE_float("kimg", None, "Training length in thousands of real images "
                       "(default 300 for --config demo, 25000 otherwise).", **d)
    flags.DEFINE_integer("batch", 0, "Global minibatch (0 = preset: 16 demo, 32 e/f).", **d)
    flags.DEFINE_float("lr", 0.0, "Learning rate of G and D (0 = preset: 0.002).", **d)
    flags.DEFINE_float("gamma", -1.0, "R1 weight (< 0 = preset: demo 0.5, e 100, f 10).", **d)
    flags.DEFINE_boolean("mirror", False, "Mirror augmentation (random left-right flips).", **d)
    flags.DEFINE_boolean("progressive", False, "StyleGAN2 with progressive growing "
                         "(ProGAN and StyleGAN always grow).", **d)
    flags.DEFINE_integer("initial-resolution", 8, "First resolution of progressive growing.", **d)
    flags.DEFINE_float("stabilize-kimg", 600.0, "kimg per stabilisation phase.", **d)
    flags.DEFINE_float("transition-kimg", 600.0, "kimg per fade-in phase.", **d)
    flags.DEFINE_string("fq-blocks", "16,32",
                        "Discriminator blocks to quantise, by input resolution (block R takes "
                        "RxR and FQ quantises its R/2 output); \"\" = baseline.", **d)
    flags.DEFINE_enum("fq-preset", "official", ["official", "paper"],
                      "official: continuous D forward, FQ only adds a loss (the released code); "
                      "paper: quantised forward, alpha ramped from 0 over --fq-warmup-kimg.", **d)
    flags.DEFINE_integer("fq-num-embeddings", 0, "Dictionary size K (0 = model default: "
                         "StyleGAN2 128, StyleGAN/ProGAN 1024).", **d)
    flags.DEFINE_float("fq-decay", 0.0, "Dictionary EMA decay (0 = model default 0.8).", **d)
    flags.DEFINE_float("fq-commitment", -1.0, "Commitment cost (< 0 = model default: "
                       "StyleGAN2 0.25, StyleGAN/ProGAN 5.0).", **d)
    flags.DEFINE_float("fq-alpha", 1.0, "FQ loss weight alpha.", **d)
    flags.DEFINE_float("fq-warmup-kimg", 0.0, "Ramp alpha from 0 over this many kimg "
                       "(paper preset default: a quarter of --kimg).", **d)
    flags.DEFINE_string("out", "", "Run folder (default runs/<NNNNN>-<model>-<dataset>).", **d)
    flags.DEFINE_boolean("resume", False, "Continue from the latest checkpoint in --out.", **d)
    flags.DEFINE_integer("seed", 0, "Random seed.", **d)
    flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"],
                      "tf.distribute strategy (multiworker needs TF_CONFIG).", **d)
    flags.DEFINE_list("devices", [], "Devices for --strategy mirrored (default: all GPUs).", **d)
    flags.DEFINE_integer("cpu-replicas", 0, "Split the CPU into this many logical devices for "
                         "--strategy mirrored on a machine without GPUs.", **d)
    flags.DEFINE_boolean("mixed-precision", False, "mixed_float16 policy with loss scaling.", **d)
    flags.DEFINE_boolean("xla", False, "Compile the training step with XLA "
                         "(--strategy default only).", **d)
    flags.DEFINE_float("tick-kimg", 4.0, "kimg between progress lines and log entries.", **d)
    flags.DEFINE_integer("snapshot-ticks", 10, "Ticks between checkpoints and sample grids.", **d)
    flags.DEFINE_list("metrics", ["swd"], "Metrics at each snapshot: swd or none.", **d)


def options_from_flags(fv):
    """TrainingOptions from parsed flags; raises app.UsageError on impossible settings."""
    from training.config import TrainingOptions
    blocks = fv["fq-blocks"].value.strip()
    try:
        fq_blocks = tuple(int(b) for b in blocks.split(",") if b.strip()) if blocks else ()
    except ValueError:
        raise app.UsageError(f"--fq-blocks must be comma-separated resolutions like 16,32, got "
                             f"{blocks!r}.") from None
    metrics = tuple(m for m in fv.metrics if m != "none")
    if set(metrics) - {"swd"}:
        raise app.UsageError(f"--metrics: unknown {sorted(set(metrics) - {'swd'})}; during "
                             "training only swd is available (run_metrics.py does the rest).")
    kimg = fv.kimg if fv.kimg is not None else (300.0 if fv.config == "demo" else 25000.0)
    if kimg <= 0 or fv["tick-kimg"].value <= 0 or fv["snapshot-ticks"].value < 1:
        raise app.UsageError("--kimg and --tick-kimg must be > 0 and --snapshot-ticks >= 1.")
    if fv.batch < 0:
        raise app.UsageError("--batch must be positive.")
    if fv.xla and fv.strategy != "default":
        raise app.UsageError("--xla works with --strategy default only (tf.distribute does not "
                             "compile its collectives with XLA here).")
    if fv["cpu-replicas"].value and fv.strategy != "mirrored":
        raise app.UsageError("--cpu-replicas needs --strategy mirrored.")
    return TrainingOptions(
        model=fv.model, config=fv.config, dataset=fv.dataset, resolution=fv.resolution,
        conditional=fv.conditional, kimg=kimg, batch=fv.batch, learning_rate=fv.lr,
        r1_gamma=fv.gamma, mirror=fv.mirror, progressive=fv.progressive,
        initial_resolution=fv["initial-resolution"].value,
        stabilize_kimg=fv["stabilize-kimg"].value, transition_kimg=fv["transition-kimg"].value,
        fq_blocks=fq_blocks, fq_preset=fv["fq-preset"].value,
        fq_num_embeddings=fv["fq-num-embeddings"].value, fq_decay=fv["fq-decay"].value,
        fq_commitment=fv["fq-commitment"].value, fq_alpha=fv["fq-alpha"].value,
        fq_warmup_kimg=fv["fq-warmup-kimg"].value, seed=fv.seed, strategy=fv.strategy,
        devices=tuple(fv.devices), mixed_precision=fv["mixed-precision"].value, xla=fv.xla,
        tick_kimg=fv["tick-kimg"].value, snapshot_ticks=fv["snapshot-ticks"].value,
        metrics=metrics)


def new_run_dir(root, options):
    """runs/<NNNNN>-<model>-<dataset>: a fresh folder, never an existing one."""
    os.makedirs(root, exist_ok=True)
    numbers = [int(m.group(1)) for m in (re.match(r"(\d+)-", n) for n in os.listdir(root)) if m]
    name = os.path.basename(os.path.normpath(options.dataset)) or "data"
    path = os.path.join(root, f"{max(numbers, default=-1) + 1:05d}-{options.model}-{name}")
    os.makedirs(path)
    return path


def validate(options):
    """Checks what can be checked before TensorFlow builds anything (one clear message each)."""
    import datasets
    from training.distribute import STRATEGIES  # noqa: F401  (import check)
    try:
        dataset = datasets.open_dataset(options.dataset, resolution=options.resolution or None)
    except datasets.DatasetError as e:
        raise app.UsageError(f"--dataset: {e}") from None
    info = dataset.info
    resolution = options.resolution or info.resolution
    if options.conditional and not info.has_labels:
        raise app.UsageError(f"--conditional: {info.source} has no labels.")
    if options.is_progressive and options.initial_resolution > resolution:
        raise app.UsageError(f"--initial-resolution {options.initial_resolution} is above the "
                             f"training resolution {resolution}.")
    valid_blocks = [2 ** r for r in range(resolution.bit_length() - 1, 2, -1)]
    wrong = [b for b in options.fq_blocks if b not in valid_blocks]
    if wrong:
        raise app.UsageError(f"--fq-blocks {','.join(map(str, wrong))}: not a discriminator block "
                             f"at resolution {resolution}; valid blocks: "
                             f"{','.join(map(str, valid_blocks))} (or \"\" for no FQ).")
    batch = options.minibatch
    if batch % 4:
        raise app.UsageError(f"--batch {batch}: must be a multiple of the minibatch-stddev group "
                             "size 4 (per replica).")


def main(argv, fv=FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    options = options_from_flags(fv)
    validate(options)
    if fv["cpu-replicas"].value:
        from training.distribute import split_virtual_cpus
        devices = split_virtual_cpus(fv["cpu-replicas"].value)
        options.devices = options.devices or tuple(devices)
    run_dir = fv.out
    if fv.resume:
        if not run_dir or not os.path.isdir(run_dir):
            raise app.UsageError("--resume needs --out pointing at an existing run folder.")
        from training.config import TrainingOptions
        saved = TrainingOptions.load(run_dir)
        saved.kimg, saved.strategy, saved.devices = options.kimg, options.strategy, options.devices
        options = saved
    elif run_dir:
        if os.path.exists(run_dir) and os.listdir(run_dir):
            raise app.UsageError(f"--out {run_dir} exists and is not empty; pick a new folder or "
                                 "add --resume to continue that run.")
        os.makedirs(run_dir, exist_ok=True)
    else:
        run_dir = new_run_dir("runs", options)

    from training.loop import TrainingDiverged, training_loop
    print(f"Run folder: {run_dir}")
    try:
        summary = training_loop(options, run_dir, resume=fv.resume)
    except TrainingDiverged as e:
        print(f"run_training.py: error: {e}", file=sys.stderr)
        return 1
    print(f"Done: {summary['kimg']:g} kimg in {summary['seconds']:.0f} s.")
    print(f"  checkpoint:     {summary['checkpoint']}")
    print(f"  sample grids:   {run_dir}/fakes*.png")
    print(f"  TensorBoard:    tensorboard --logdir {run_dir}/tensorboard")
    print(f"  log:            {run_dir}/log.jsonl")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
