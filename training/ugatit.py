"""U-GAT-IT for run_training.py: options, presets, networks, the training loop, loading a run.

    python run_training.py --model ugatit                       # demo: built-in pair, 64x64
    python run_training.py --model ugatit --dataset ~/data/selfie2anime --config official
    python run_training.py --model ugatit --light --resolution 128 --fq-layers ""   # baseline

The run_training.py family contract (see run_training.FAMILIES): `Options` (dataclass with
save / load), `options_from_flags(fv)`, `validate(options)`, `training_loop(options, run_dir,
resume)`; plus `load_networks(run_dir, checkpoint)` for translation and export.

The loop runs one compiled iteration per call (training/ugatit_trainer.py) over the distributed
unpaired pipeline (flip, resize to 286/256 of the size, random crop: the official
augmentation). Every `tick` it reads the accumulated losses, stops with TrainingDiverged on a
non-finite one, logs them (TensorBoard + log.jsonl) and prints a progress line; every
`snapshot_ticks` ticks it writes the official 7-panel sample strips for A->B and B->A
(fakes-A2B-NNNNNNN.png, fakes-B2A-NNNNNNN.png and TensorBoard) and a checkpoint.

Exact resume: the checkpoint holds the six networks (spectral-norm vectors, FQ dictionaries),
both optimisers and the iteration counter, and the data stream is a pure function of the seed
and the pairs consumed (`UnpairedDataset.distribute(start_image=...)`), so stop + resume equals
an uninterrupted run.

When the run is finished, run_training.py exports both generators as one SavedModel into
<run>/export (export/ugatit.py: a2b / b2a on uint8 images, with CAM heatmaps), which loads with
plain TensorFlow and which run_translation.py --network also takes.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import app

import datasets
from networks import ugatit
from training import loop
from training.checkpoints import Checkpoints, checkpoint_state, checkpoint_to_load
from training.loop import IterationRun, replicated
from training.ugatit_trainer import (NETWORK_NAMES, LossWeights, UGATITTrainer, strip,
                                     translation_panels)
from training.run_options import RunOptions, parse_index_flag

CONFIGS = ("demo", "official")
# Network sizes and run length per --config. "official" is the paper's U-GAT-IT (ngf = ndf = 64,
# 4 residual blocks, 256^2, batch 1, 1M iterations, full mode unless --light); "demo" is sized
# for a CPU: narrow networks at 64^2 that show progress lines within a minute or two.
CONFIG_PRESETS = {
    "demo": dict(ngf=16, ndf=16, n_blocks=2, img_size=64, batch=1, iterations=10000,
                 learning_rate=1e-4, tick_kimg=0.1),
    "official": dict(ngf=64, ndf=64, n_blocks=4, img_size=256, batch=1, iterations=1_000_000,
                     learning_rate=1e-4, tick_kimg=1.0),
}
FQ_PRESETS = tuple(ugatit.FQ_PRESETS)
SYNTHETIC = "shapes2cartoon"
# run_training.py flags of other model families, refused when given with --model ugatit.
FOREIGN_FLAGS = ("conditional", "gamma", "progressive",
                 "initial-resolution", "stabilize-kimg", "transition-kimg", "fq-blocks",
                 "d-steps", "metrics")


@dataclasses.dataclass
class Options(RunOptions):
    """One U-GAT-IT run. 0 (or None) means "the --config preset" for every sized field."""
    MODELS = ("ugatit",)
    FAMILY = "U-GAT-IT"
    FLAG_FIELDS = {"resolution": "img_size"}   # run_training.py flag -> field, where they differ

    model: str = "ugatit"
    config: str = "demo"
    dataset: str = SYNTHETIC           # Folder with trainA/ trainB/ (testA/ testB/) or built-in.
    light: bool = False                # Light mode (global-pooled gamma/beta MLP).
    img_size: int = 0
    ngf: int = 0
    ndf: int = 0
    n_blocks: int = 0
    iterations: int = 0                # Length in iterations (one D and one G update each).
    batch: int = 0
    learning_rate: float = 0.0
    weight_decay: float = 1e-4         # Coupled (PyTorch Adam) weight decay.
    decay_lr: bool = True              # Linear decay to 0 over the second half.
    adv_weight: float = 1.0
    cycle_weight: float = 10.0
    identity_weight: float = 10.0
    cam_weight: float = 1000.0
    # Feature quantization in the global discriminators.
    fq_preset: str = "official"
    fq_layers: tuple = None            # None = the preset's layers; () = baseline U-GAT-IT.
    fq_num_embeddings: int = 0         # 0 = preset (official: 2^[5,6,7,7,7,7][i]; paper 1024).
    fq_decay: float = 0.0              # 0 = preset (official 0.85, paper 0.8).
    fq_commitment: float = -1.0        # < 0 = preset (official 2.0, paper 0.25).
    fq_alpha: float = 1.0
    fq_warmup_kimg: float = 0.0        # Paper preset: alpha ramps from 0 over this many kimg
                                       # (0 = a quarter of the run), then the quantised forward.
    fq_update_cadence: str = "step"    # fq_keras.UPDATE_CADENCES.
    # Running (besides RunOptions').
    tick_kimg: float = 0.0             # 0 = preset.
    sample_images: int = 5             # Strip columns per domain from train and from test.
    synthetic_images: int = 0          # Built-in data: images per domain (0 = its default).

    # -- derived -----------------------------------------------------------------------------

    def preset(self, name):
        return CONFIG_PRESETS[self.config][name]

    def resolved(self, name):
        """The option `name`, or its --config preset when 0."""
        return getattr(self, name) or self.preset(name)

    @property
    def size(self):
        return self.resolved("img_size")

    @property
    def minibatch(self):
        return self.resolved("batch")

    @property
    def images_per_iteration(self):
        """Image pairs one iteration trains on."""
        return self.minibatch

    @property
    def lr(self):
        return self.resolved("learning_rate")

    @property
    def total_iterations(self):
        return self.resolved("iterations")

    @property
    def tick(self):
        """kimg between progress lines."""
        return self.resolved("tick_kimg")

    @property
    def kimg(self):
        """Training length in thousands of image pairs (run_training.py's unit)."""
        return self.total_iterations * self.minibatch / 1000.0

    @kimg.setter
    def kimg(self, value):
        self.iterations = max(1, int(round(value * 1000.0 / self.minibatch)))

    @property
    def discriminator_layers(self):
        """(global, local) n_layers: official 7 and 5, fewer where the image is too small."""
        fits = ugatit.max_discriminator_layers(self.size)
        return min(7, fits), min(5, fits)

    def fq_config(self):
        """(fq_layers, fq_kwargs) of the global discriminators."""
        layers, kwargs = ugatit.fq_preset(self.fq_preset)
        if self.fq_layers is not None:
            layers = tuple(self.fq_layers)
        if self.fq_preset == "official":
            # Per-layer official sizes K = 2^[5,6,7,7,7,7][i] (the discriminator's default).
            kwargs.pop("num_embeddings", None)
        if self.fq_num_embeddings:
            kwargs["num_embeddings"] = self.fq_num_embeddings
        if self.fq_decay:
            kwargs["decay"] = self.fq_decay
        if self.fq_commitment >= 0:
            kwargs["commitment_cost"] = self.fq_commitment
        return tuple(layers), kwargs

    def loss_weights(self):
        return LossWeights(adv=self.adv_weight, cycle=self.cycle_weight,
                           identity=self.identity_weight, cam=self.cam_weight)


#----------------------------------------------------------------------------
# run_training.py's interface.


def options_from_flags(fv):
    """Options from parsed run_training.py flags; app.UsageError (one line) when impossible."""
    if fv.config not in CONFIGS:
        raise app.UsageError(f"--config {fv.config!r}: U-GAT-IT presets are "
                             f"{', '.join(CONFIGS)}.")
    foreign = [f"--{name}" for name in FOREIGN_FLAGS if fv[name].present]
    if foreign:
        raise app.UsageError(f"{', '.join(foreign)}: not used by --model ugatit (its length is "
                             "--iterations or --kimg, its FQ placement --fq-layers).")
    fq_layers = parse_index_flag("fq-layers", fv["fq-layers"].value,
                                 "discriminator conv indices like 1,2,3")
    for name in ("iterations", "batch", "resolution"):
        if fv[name].value < 0:
            raise app.UsageError(f"--{name} must be positive (0 = preset).")
    if fv.lr < 0:
        raise app.UsageError("--lr must be positive (0 = preset: 1e-4).")
    tick_kimg = fv["tick-kimg"].value if fv["tick-kimg"].present else 0.0
    if fv["tick-kimg"].value <= 0 or fv["snapshot-ticks"].value < 1:
        raise app.UsageError("--tick-kimg must be > 0 and --snapshot-ticks >= 1.")
    if fv.xla and fv.strategy != "default":
        raise app.UsageError("--xla works with --strategy default only (tf.distribute does not "
                             "compile its collectives with XLA here).")
    if fv.kimg is not None and fv.iterations:
        raise app.UsageError("--kimg and --iterations both set the training length; give one.")
    if fv.kimg is not None and not fv.kimg > 0:
        raise app.UsageError("--kimg must be > 0.")
    dataset = fv.dataset if fv["dataset"].present else SYNTHETIC
    options = Options(
        config=fv.config, dataset=dataset, light=fv.light, img_size=fv.resolution,
        iterations=fv.iterations, batch=fv.batch, learning_rate=fv.lr,
        fq_preset=fv["fq-preset"].value, fq_layers=fq_layers,
        fq_num_embeddings=fv["fq-num-embeddings"].value, fq_decay=fv["fq-decay"].value,
        fq_commitment=fv["fq-commitment"].value, fq_alpha=fv["fq-alpha"].value,
        fq_warmup_kimg=fv["fq-warmup-kimg"].value,
        fq_update_cadence=fv["fq-update-cadence"].value, seed=fv.seed,
        strategy=fv.strategy, devices=tuple(fv.devices),
        precision=fv.precision, xla=fv.xla, tick_kimg=tick_kimg,
        snapshot_ticks=fv["snapshot-ticks"].value)
    if fv.kimg is not None:
        options.kimg = fv.kimg     # thousands of image pairs -> iterations
    return options


def validate(options):
    """Checks what can be checked before TensorFlow builds anything (one clear line each)."""
    if options.config not in CONFIGS:
        raise app.UsageError(f"config {options.config!r}: U-GAT-IT presets are "
                             f"{', '.join(CONFIGS)}.")
    if options.fq_preset not in FQ_PRESETS:
        raise app.UsageError(f"--fq-preset {options.fq_preset!r}: choose one of "
                             f"{', '.join(FQ_PRESETS)}.")
    size = options.size
    if size % 4 or size < 8:
        raise app.UsageError(f"--resolution {size}: must be divisible by 4 and at least 8 (the "
                             "generator down-samples twice).")
    if not is_builtin(options.dataset):
        try:
            open_pair(options, verify=False)   # the folder layout (images decode in the loop)
        except datasets.DatasetError as e:
            raise app.UsageError(f"--dataset: {e}") from None
    global_layers, _ = options.discriminator_layers
    layers, kwargs = options.fq_config()
    wrong = [i for i in layers if not 0 <= i < global_layers - 1]
    if wrong:
        raise app.UsageError(
            f"--fq-layers {','.join(map(str, wrong))}: not a conv of the global discriminator at "
            f"{size}x{size} ({global_layers} layers); valid: "
            f"{','.join(map(str, range(global_layers - 1)))} (or \"\" for none).")
    if len(set(layers)) != len(layers):
        raise app.UsageError(f"--fq-layers {','.join(map(str, layers))}: repeated layer.")
    if layers and kwargs.get("num_embeddings", 2) < 2:
        raise app.UsageError("--fq-num-embeddings must be at least 2.")
    if layers and "decay" in kwargs and not 0 < kwargs["decay"] < 1:
        raise app.UsageError(f"--fq-decay {kwargs['decay']}: must be in (0, 1).")
    if options.total_iterations < 1:
        raise app.UsageError("--iterations must be at least 1.")


def is_builtin(dataset):
    """True for the built-in pair (an existing folder of that name wins, as in the loader)."""
    return not os.path.isdir(dataset) and dataset.removeprefix("synthetic:") == SYNTHETIC


def open_pair(options, verify=True):
    """The run's UnpairedDataset. Built-in data is rendered at the smallest power of two >= the
    training size (the augmentation resizes it to 286/256 of the size, then crops)."""
    kwargs = {}
    if options.synthetic_images:
        kwargs["num_images"] = options.synthetic_images
    render = 1 << max(2, (options.size - 1).bit_length())
    return datasets.open_unpaired(options.dataset, resolution=render, seed=options.seed,
                                  verify=verify, **kwargs)


def build_networks(options):
    """The six networks for the options (call inside `strategy.scope()`); not yet built."""
    global_layers, local_layers = options.discriminator_layers
    fq_layers, fq_kwargs = options.fq_config()
    return ugatit.make_ugatit(
        light=options.light, img_size=options.size, ngf=options.resolved("ngf"),
        ndf=options.resolved("ndf"), n_blocks=options.resolved("n_blocks"), fq=None,
        fq_layers=fq_layers, fq_kwargs=fq_kwargs, global_layers=global_layers,
        local_layers=local_layers)


def load_networks(run_dir, checkpoint=None, which=("genA2B", "genB2A")):
    """Rebuilds a run's networks and loads them from its checkpoint (latest by default).

    Args:
      run_dir: a folder written by run_training.py --model ugatit.
      checkpoint: a checkpoint path (run_dir/checkpoints/ckpt-N); None = the latest.
      which: names among NETWORK_NAMES.
    Returns:
      (options, {name: network}), networks built for (options.size, options.size, 3) images.
    Raises:
      FileNotFoundError naming where it looked when there is no checkpoint.
    """
    options = Options.load(run_dir)
    checkpoint = checkpoint_to_load(run_dir, checkpoint)
    unknown = sorted(set(which) - set(NETWORK_NAMES))
    if unknown:
        raise ValueError(f"load_networks: unknown networks {unknown}; choose from "
                         f"{list(NETWORK_NAMES)}.")
    nets = build_networks(options)
    nets = {name: nets[name] for name in which}
    for net in nets.values():
        net.build((None, options.size, options.size, 3))
    state = checkpoint_state(**nets)
    Checkpoints(state, run_dir).checkpoint.read(checkpoint).expect_partial() \
        .assert_existing_objects_matched()
    return options, nets

#----------------------------------------------------------------------------
# The loop.


def _fixed_samples(pair, size, count):
    """{"A": images, "B": images}: the same strip columns at every snapshot and on resume:
    `count` training images (resized, not augmented) then `count` test images per domain."""
    counts = pair.info.counts
    n = min(count, counts["trainA"], counts["trainB"])
    a, b = next(iter(pair.train_pipeline(size, n, flip=False, augment_size=size, shuffle=False,
                                         repeat=False)))
    samples = {"A": [a.numpy()], "B": [b.numpy()]}
    for domain in "AB":
        if counts["test" + domain]:
            samples[domain].append(next(iter(pair.test_pipeline(domain, size, count))).numpy())
    return {k: np.concatenate(v) for k, v in samples.items()}


class UGATITRun(IterationRun):
    """U-GAT-IT for `training.loop.training_loop`. Position = iterations (one D and one G
    update on a minibatch of A and B images)."""

    progress_keys = ("d_loss", "g_adv_loss", "g_cycle_loss", "g_identity_loss", "g_cam_loss",
                     "d_fq_loss")
    network_names = NETWORK_NAMES

    def open_data(self):
        self.pair = open_pair(self.options)
        self.samples = None

    def build_trainer(self):
        options, size = self.options, self.options.size
        return UGATITTrainer(
            build_networks(options), (size, size, 3), options.total_iterations,
            weights=options.loss_weights(), fq_alpha=options.fq_alpha,
            learning_rate=options.lr, weight_decay=options.weight_decay,
            decay_lr=options.decay_lr, loss_scaling=options.loss_scaling,
            fq_warmup_iterations=options.fq_warmup_iterations,
            fq_update_cadence=options.fq_update_cadence)

    def start_message(self, iteration, stop):
        options, replicas = self.options, self.strategy.num_replicas_in_sync
        mode = " light" if options.light else ""
        fq_layers = list(options.fq_config()[0]) or "none"
        return (f"U-GAT-IT{mode} {options.size}x{options.size}, batch {options.minibatch}, "
                f"{replicas} replica(s), FQ layers {fq_layers}; iterations {iteration} -> {stop} "
                f"of {options.total_iterations}")

    def total(self):
        return self.options.total_iterations

    def networks(self):
        return {"G": self.trainer.generators, "D": self.trainer.discriminators}

    def data_summary(self):
        counts = self.pair.info.counts
        return {"source": self.pair.info.source, "resolution": self.options.size,
                "images": {name: counts[name] for name in ("trainA", "trainB")}}

    def real_images(self, count):
        """Training images of domain A, then as many of B, augmented as the data stream
        (resize, crop, flip), shuffled with the run's seed."""
        a, b = next(iter(self.pair.train_pipeline(self.options.size, count // 2, repeat=False,
                                                  seed=self.options.seed)))
        return np.concatenate([a.numpy(), b.numpy()])

    def tick_images(self):
        batch = self.options.minibatch
        return max(1, int(round(self.options.tick * 1000 / batch))) * batch

    def tick_prefix(self, iteration):
        return f"it {iteration}/{self.options.total_iterations}  "

    def compile_step(self, iteration):
        options = self.options
        iterator = iter(self.pair.distribute(self.strategy, options.minibatch, options.size,
                                             start_image=self.images(iteration),
                                             seed=options.seed))
        step = compile_step(self.strategy, self.trainer, self.accumulator, options.minibatch,
                            options.xla)
        return lambda: step(iterator)

    def snapshot_grids(self, iteration):
        """The official 7-panel strips of A->B and B->A (one image each)."""
        if self.samples is None:
            self.samples = _fixed_samples(self.pair, self.options.size,
                                          self.options.sample_images)
        trainer, grids = self.trainer, []
        for direction, (forward, backward) in (("A2B", (trainer.genA2B, trainer.genB2A)),
                                               ("B2A", (trainer.genB2A, trainer.genA2B))):
            image = strip(translation_panels(forward, backward, self.samples[direction[0]]))
            grids.append((f"fakes-{direction}-{iteration:07d}.png", direction,
                          image[np.newaxis], 1, 1))
        return grids


def training_loop(options, run_dir, resume=False, log=print, stop_after_iterations=None,
                  **loop_options):
    """Trains per `options` (Options) into `run_dir`; returns the run summary
    (training.loop.training_loop, which takes `loop_options`, e.g. `strategy`).
    `stop_after_iterations`: stop with a checkpoint there, as if killed (tests of exact
    resume)."""
    return loop.training_loop(UGATITRun(options, run_dir, log), resume, stop_after_iterations,
                              **loop_options)


def compile_step(strategy, trainer, accumulator, global_batch, xla):
    """tf.function(iterator) running one iteration on every replica, the counter, the logs."""
    run = replicated(strategy, lambda data: trainer.train_step(data, global_batch),
                     accumulator, xla)

    @tf.function(autograph=False)
    def step(iterator):
        run(next(iterator))
        trainer.finish_step()

    return step
