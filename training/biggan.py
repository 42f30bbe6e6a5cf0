"""BigGAN / FQ-BigGAN runs of run_training.py: presets, options, the training loop, resume.

    python run_training.py --model biggan                                  # demo, built-in shapes
    python run_training.py --model biggan --dataset ~/data/cifar10 --config cifar10
    python run_training.py --model biggan --dataset ~/data/cifar100 --config cifar100
    python run_training.py --model biggan --dataset ~/data/i64 --config imagenet64
    python run_training.py --model biggan --config cifar10 --dataset D --fq-layers ""  # BigGAN

BigGAN is class-conditional: the dataset must have one-hot class labels (`python -m
datasets.prepare create_cifar10 ...`, or `create_from_images --labels`); the built-in `shapes`
data has 5 classes. Presets (`CONFIGS`) reproduce the official launch scripts: cifar10 / cifar100
(scripts/launch_C10.sh, launch_C100.sh: batch 64, 4 D steps per G step, Adam(0, 0.999, 1e-8),
lr 2e-4, G_ema 0.9999 from iteration 1000, 500 epochs) and imagenet64 (launch_I64_bs128x4.sh:
batch 128 x 4 accumulations, 1 D step, G lr 1e-4, D lr 4e-4, Adam eps 1e-6, G_ema from 20000,
samples in eval mode); `demo` is the CIFAR architecture at ch 4 for a CPU.

Time is counted in iterations (G updates); an iteration shows D `batch x d_steps x
accumulations` real images, which is what kimg counts (ticks, logs, --kimg).

Exact resume: the checkpoint holds G, G_ema, D (FQ dictionaries, SN vectors, BN statistics), both
optimizers, the iteration counter and the RNG state, and the data stream is a pure function of
the seed and the images consumed (`ImageDataset.distribute(start_image=...)`), so stop + resume
equals an uninterrupted run.
"""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import app

import datasets
from networks import biggan
from training import TrainingConfigError, loop
from training.biggan_trainer import BigGANSettings, BigGANTrainer
from training.checkpoints import Checkpoints, checkpoint_state, checkpoint_to_load
from training.logs import grid_upscale
from training.loop import IterationRun, replicated
from training.run_options import RunOptions, parse_index_flag

# Per --config: network preset (networks.biggan.PRESETS) and its overrides, optimisation, G_ema,
# length (iterations, or epochs over the dataset) and the sampling mode of G_ema
# (sample_training: BigGAN-PyTorch samples CIFAR models in train mode, i.e. with batch
# statistics; the ImageNet script passes --G_eval_mode).
CONFIGS = {
    "demo": dict(network="cifar10", network_overrides=dict(ch=4), fq=dict(num_embeddings=128),
                 batch=16, d_steps=4, accumulations=1, g_lr=2e-4, d_lr=2e-4,
                 betas=(0.0, 0.999), adam_epsilon=1e-8, ema_decay=0.999, ema_start=200,
                 iterations=1000, epochs=0, sample_training=True),
    "cifar10": dict(network="cifar10", network_overrides={}, fq={}, batch=64, d_steps=4,
                    accumulations=1, g_lr=2e-4, d_lr=2e-4, betas=(0.0, 0.999),
                    adam_epsilon=1e-8, ema_decay=0.9999, ema_start=1000, iterations=0,
                    epochs=500, sample_training=True),
    "cifar100": dict(network="cifar100", network_overrides={}, fq={}, batch=64, d_steps=4,
                     accumulations=1, g_lr=2e-4, d_lr=2e-4, betas=(0.0, 0.999),
                     adam_epsilon=1e-8, ema_decay=0.9999, ema_start=1000, iterations=0,
                     epochs=500, sample_training=True),
    "imagenet64": dict(network="imagenet64", network_overrides={}, fq={}, batch=128, d_steps=1,
                       accumulations=4, g_lr=1e-4, d_lr=4e-4, betas=(0.0, 0.999),
                       adam_epsilon=1e-6, ema_decay=0.9999, ema_start=20000, iterations=0,
                       epochs=100, sample_training=False),
}
FQ_PRESETS = ("official", "paper")
METRICS = ("swd",)


@dataclasses.dataclass
class BigGANOptions(RunOptions):
    """One BigGAN training run (flat and JSON-serialisable; saved as training_options.json).

    Zero / negative / None values mean "the preset's"; `resolve` (called by `validate` and the
    loop) replaces them with concrete values so a saved run states everything it used.
    """
    MODELS = ("biggan",)
    FAMILY = "BigGAN"

    model: str = "biggan"
    config: str = "demo"
    dataset: str = "shapes"            # Dataset folder (one-hot labels) or "shapes".
    iterations: int = 0                # G updates; 0 = preset (iterations or epochs).
    batch: int = 0                     # Global minibatch per D/G forward; 0 = preset.
    learning_rate: float = 0.0         # G and D learning rate; 0 = preset (their own).
    d_steps: int = 0                   # D steps per G step; 0 = preset.
    mirror: bool = False               # Random left-right flips of the reals.
    fq_layers: tuple = None            # D blocks followed by FQ; None = preset, () = BigGAN.
    fq_preset: str = "official"        # official: continuous D forward; paper: quantised.
    fq_num_embeddings: int = 0         # 0 = preset.
    fq_decay: float = 0.0              # 0 = preset.
    fq_commitment: float = -1.0        # < 0 = preset.
    fq_alpha: float = 1.0
    fq_warmup_kimg: float = 0.0        # Ramp alpha from 0 over this many kimg (paper preset).
    fq_update_cadence: str = "step"    # fq_keras.UPDATE_CADENCES.
    # Filled by resolve() from the dataset, so a run's networks can be rebuilt without it.
    resolution: int = 0
    num_classes: int = 0

    # -- derived -----------------------------------------------------------------------------

    def preset(self, name):
        return CONFIGS[self.config][name]

    @property
    def network_preset(self):
        return biggan.PRESETS[self.preset("network")]

    @property
    def minibatch(self):
        return self.batch or self.preset("batch")

    @property
    def num_d_steps(self):
        return self.d_steps or self.preset("d_steps")

    @property
    def images_per_iteration(self):
        """Real images one iteration shows D (batch x D steps x accumulations)."""
        return self.minibatch * self.num_d_steps * self.preset("accumulations")

    @property
    def kimg(self):
        """Training length in kimg (real images shown to D); setting it sets `iterations`."""
        return self.iterations * self.images_per_iteration / 1000.0

    @kimg.setter
    def kimg(self, value):
        self.iterations = max(1, int(round(float(value) * 1000.0 / self.images_per_iteration)))

    def settings(self):
        """BigGANSettings of this run (after resolve)."""
        lr = self.learning_rate
        return BigGANSettings(
            d_steps=self.num_d_steps, accumulations=self.preset("accumulations"),
            g_learning_rate=lr or self.preset("g_lr"), d_learning_rate=lr or self.preset("d_lr"),
            betas=tuple(self.preset("betas")), epsilon=self.preset("adam_epsilon"),
            ema_decay=self.preset("ema_decay"), ema_start=self.preset("ema_start"),
            fq_alpha=self.fq_alpha,
            fq_warmup_iterations=self.fq_warmup_iterations,
            fq_update_cadence=self.fq_update_cadence)

    def fq_kwargs(self):
        """FeatureQuantization arguments of the D's FQ layers (preset, then flags)."""
        defaults = dict(self.network_preset["fq"])
        defaults.update(self.preset("fq"))
        return dict(
            num_embeddings=self.fq_num_embeddings or defaults["num_embeddings"],
            commitment_cost=(self.fq_commitment if self.fq_commitment >= 0
                             else defaults["commitment_cost"]),
            decay=self.fq_decay or defaults["decay"],
            forward="quantized" if self.fq_preset == "paper" else "continuous")

    def default_fq_layers(self):
        return tuple(self.network_preset["fq"]["layers"])



Options = BigGANOptions

#----------------------------------------------------------------------------
# Flags, validation, networks.


def options_from_flags(fv):
    """BigGANOptions from run_training.py's parsed flags; app.UsageError on bad values."""
    if fv.config not in CONFIGS:
        raise app.UsageError(f"--config {fv.config!r}: biggan presets are "
                             f"{', '.join(CONFIGS)}.")
    metrics = tuple(m for m in fv.metrics if m != "none")
    if set(metrics) - set(METRICS):
        raise app.UsageError(f"--metrics: unknown {sorted(set(metrics) - set(METRICS))}; during "
                             "training only swd is available (run_metrics.py does the rest).")
    if fv.iterations < 0 or fv.batch < 0 or fv["d-steps"].value < 0 or fv.lr < 0:
        raise app.UsageError("--iterations, --batch, --d-steps and --lr must be >= 0 "
                             "(0 = the preset's).")
    if fv["tick-kimg"].value <= 0 or fv["snapshot-ticks"].value < 1:
        raise app.UsageError("--tick-kimg must be > 0 and --snapshot-ticks >= 1.")
    if fv.kimg is not None and fv.iterations:
        raise app.UsageError("--kimg and --iterations both set the training length; give one.")
    if fv.kimg is not None and not fv.kimg > 0:
        raise app.UsageError("--kimg must be > 0.")
    if fv.xla and fv.strategy != "default":
        raise app.UsageError("--xla works with --strategy default only.")
    options = BigGANOptions(
        config=fv.config, dataset=fv.dataset, iterations=fv.iterations, batch=fv.batch,
        learning_rate=fv.lr, d_steps=fv["d-steps"].value, mirror=fv.mirror,
        fq_layers=parse_index_flag("fq-layers", fv["fq-layers"].value,
                                   "D block indices like 0,1,2,3"),
        fq_preset=fv["fq-preset"].value,
        fq_num_embeddings=fv["fq-num-embeddings"].value, fq_decay=fv["fq-decay"].value,
        fq_commitment=fv["fq-commitment"].value, fq_alpha=fv["fq-alpha"].value,
        fq_warmup_kimg=fv["fq-warmup-kimg"].value,
        fq_update_cadence=fv["fq-update-cadence"].value, seed=fv.seed, strategy=fv.strategy,
        devices=tuple(fv.devices), precision=fv.precision, xla=fv.xla,
        tick_kimg=fv["tick-kimg"].value, snapshot_ticks=fv["snapshot-ticks"].value,
        metrics=metrics, resolution=fv.resolution)
    if fv.kimg is not None:
        options.kimg = fv.kimg
    return options


def open_training_data(options):
    """The run's dataset at the preset's resolution; ValueError with the fix if unusable."""
    resolution = options.network_preset["resolution"]
    if options.resolution not in (0, resolution):
        raise ValueError(f"--resolution {options.resolution}: --config {options.config} trains "
                         f"at {resolution}x{resolution} (the resolution is part of the BigGAN "
                         "architecture); drop --resolution.")
    try:
        dataset = datasets.open_dataset(options.dataset, resolution=resolution)
    except datasets.DatasetError as e:
        raise ValueError(f"--dataset: {e}") from None
    info = dataset.info
    if not info.has_labels:
        raise ValueError(
            f"--dataset {info.source} has no labels, and BigGAN is class-conditional: prepare "
            "it with labels (python -m datasets.prepare create_cifar10 / create_cifar100, or "
            "create_from_images --labels=FILE), or omit --dataset for the built-in labelled "
            "shapes.")
    if info.channels != 3:
        raise ValueError(f"--dataset {info.source} has {info.channels} channel(s); BigGAN "
                         "generates RGB images.")
    counts = class_counts(dataset.labels)
    if counts is None:
        raise ValueError(f"--dataset {info.source}: labels are not one-hot class labels; "
                         "BigGAN needs one class per image.")
    return dataset, counts


def class_counts(labels, chunk=65536):
    """Images per class (float64 (C,)) of one-hot label rows, or None if they are not one-hot.

    Chunked: ImageNet's labels are 1.28M x 1000 floats, and full-size temporaries would double
    that."""
    counts = np.zeros(labels.shape[1])
    for start in range(0, len(labels), chunk):
        rows = labels[start:start + chunk]
        if not (np.all((rows == 0) | (rows == 1)) and np.all(rows.sum(1) == 1)):
            return None
        counts += rows.sum(0)
    return counts


def resolve(options, dataset):
    """Fills every preset-dependent option with its concrete value (idempotent)."""
    info = dataset.info
    options.resolution = info.resolution
    options.num_classes = info.label_size
    options.batch = options.minibatch
    options.d_steps = options.num_d_steps
    if options.fq_layers is None:
        options.fq_layers = options.default_fq_layers()
    options.fq_layers = tuple(options.fq_layers)
    if not options.iterations:
        iterations = options.preset("iterations")
        if not iterations:
            # BigGAN-PyTorch drops the last partial batch of every epoch.
            per_epoch = max(1, info.num_images // options.images_per_iteration)
            iterations = options.preset("epochs") * per_epoch
        options.iterations = int(iterations)
    return options


def validate(options):
    """Checks everything that can be checked before TensorFlow builds anything; resolves the
    presets against the dataset. Raises app.UsageError with one clear line."""
    try:
        dataset, _ = open_training_data(options)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    num_blocks = len(biggan.D_ARCH[options.network_preset["resolution"]]["out_channels"])
    layers = options.fq_layers if options.fq_layers is not None else options.default_fq_layers()
    wrong = [i for i in layers if not 0 <= i < num_blocks]
    if wrong:
        raise app.UsageError(f"--fq-layers {','.join(map(str, wrong))}: not a D block of the "
                             f"{options.config} discriminator; valid: "
                             f"{','.join(map(str, range(num_blocks)))} (or \"\" for no FQ).")
    resolve(options, dataset)
    if options.fq_preset not in FQ_PRESETS:
        raise app.UsageError(f"--fq-preset must be one of {', '.join(FQ_PRESETS)}.")
    if options.iterations < 1:
        raise app.UsageError("the training length must be at least one iteration.")
    return options


def build_networks(options):
    """(G, D) of a resolved BigGANOptions, built; call inside `strategy.scope()`.

    The networks are named "G" and "D": checkpoint keys and optimizer slot names derive from
    variable paths, which must not depend on how many networks a process built before.
    """
    config = {k: v for k, v in options.network_preset.items() if k != "fq"}
    config.update(options.preset("network_overrides"), num_classes=options.num_classes)
    common = ("resolution", "num_classes", "ch", "attention", "init", "sn_epsilon")
    layers = tuple(options.fq_layers)
    G = biggan.BigGANGenerator(name="G", **{k: config[k] for k in common + (
        "dim_z", "shared_dim", "hier")})
    D = biggan.BigGANDiscriminator(name="D", fq_layers=layers,
                                   fq_kwargs=options.fq_kwargs() if layers else None,
                                   **{k: config[k] for k in common})
    G.build()
    D.build()
    return G, D


def load_networks(run_dir, checkpoint=None, which=("Gs",)):
    """Rebuilds a BigGAN run's networks and loads them from its checkpoint (latest by default).

    Needs only the run folder (training_options.json + checkpoints/), not the dataset.

    Args:
      run_dir: a folder written by `run_training.py --model biggan`.
      checkpoint: a checkpoint path (run_dir/checkpoints/ckpt-N); None = the latest.
      which: names among "G", "Gs" (G_ema, the generator to sample from) and "D".

    Returns:
      (options, {name: network}). Generators are called as `G(z, labels, training)` with z
      (N, G.dim_z) float32 and labels (N,) int class indices; sample G_ema with
      `training=options.preset("sample_training")` (the official sampling mode).
    """
    options = BigGANOptions.load(run_dir)
    checkpoint = checkpoint_to_load(run_dir, checkpoint)
    G, D = build_networks(options)
    networks = {"G": G, "D": D}
    if "Gs" in which:
        networks["Gs"] = type(G).from_config({**G.get_config(), "name": "Gs"})
        networks["Gs"].build()
    networks = {name: networks[name] for name in which}
    state = checkpoint_state(**networks)
    Checkpoints(state, run_dir).checkpoint.read(checkpoint).expect_partial() \
        .assert_existing_objects_matched()
    return options, networks

#----------------------------------------------------------------------------
# The loop.


def grid_inputs(options, z_dim):
    """Fixed latents, labels and columns of the sample grids (`loop.class_grid`)."""
    labels, columns = loop.class_grid(options.num_classes)
    rng = np.random.RandomState(options.seed + 123)
    return rng.randn(len(labels), z_dim).astype(np.float32), labels, columns

#----------------------------------------------------------------------------
# The family's training run (training/loop.py drives it).


class BigGANRun(IterationRun):
    """BigGAN for `training.loop.training_loop`. Position = iterations (G updates), each of
    `d_steps` D steps x `accumulations` minibatches, all in one compiled step."""

    progress_keys = ("g_loss", "d_loss", "d_fq_loss")

    def open_data(self):
        try:
            self.dataset, self.counts = open_training_data(self.options)
        except ValueError as e:
            raise TrainingConfigError(str(e)) from None
        resolve(self.options, self.dataset)

    def build_trainer(self):
        G, D = build_networks(self.options)
        return BigGANTrainer(G, D, self.options.settings(), class_probabilities=self.counts,
                             loss_scaling=self.options.loss_scaling, seed=self.options.seed)

    def start_message(self, iteration, stop):
        options = self.options
        return (f"BigGAN {options.config}: {options.iterations} iterations of {options.d_steps} "
                f"D step(s) x {options.preset('accumulations')} minibatch(es) of "
                f"{options.batch} ({options.kimg:g} kimg), {options.num_classes} classes, FQ "
                f"after D blocks {list(options.fq_layers) or 'none'}")

    def total(self):
        return self.options.iterations

    def tick_prefix(self, iteration):
        return f"it {iteration}  "

    def compile_step(self, iteration):
        options = self.options
        iterator = iter(self.dataset.distribute(
            self.strategy, options.batch, self.dataset.info.resolution,
            start_image=self.images(iteration), mirror=options.mirror, seed=options.seed))
        step = compile_step(self.strategy, self.trainer, self.accumulator, options.batch,
                            options.xla)
        return lambda: step(iterator)

    def _generate(self, z, labels):
        training = self.options.preset("sample_training")
        return np.concatenate([
            self.trainer.generate(tf.constant(z[i:i + 64]), tf.constant(labels[i:i + 64]),
                                  training=training).numpy()
            for i in range(0, len(z), 64)])

    def grid_classes(self, count):
        return loop.class_grid(self.options.num_classes, count)[0]

    def _grid(self, name):
        z, labels, columns = grid_inputs(self.options, self.trainer.z_dim)
        return [(name, "fakes", self._generate(z, labels), columns,
                 grid_upscale(self.options.resolution))]

    def initial_grids(self):
        return self._grid("fakes_init.png")

    def snapshot_grids(self, iteration):
        return self._grid(loop.snapshot_grid_name(self.images(iteration)))

    def swd_generator(self, iteration):
        def generate(rng, count):
            z = rng.randn(count, self.trainer.z_dim).astype(np.float32)
            labels = self.trainer.class_cdf.searchsorted(rng.rand(count), side="right")
            labels = np.minimum(labels, self.options.num_classes - 1).astype(np.int32)
            return self._generate(z, labels)
        return self.options.resolution, generate


def training_loop(options, run_dir, resume=False, log=print, stop_after_iterations=None,
                  **loop_options):
    """Trains per `options` (BigGANOptions) into `run_dir`; returns the run summary
    (training.loop.training_loop, which takes `loop_options`). `stop_after_iterations`: stop
    with a checkpoint there, as if killed (tests of exact resume)."""
    return loop.training_loop(BigGANRun(options, run_dir, log), resume, stop_after_iterations,
                              **loop_options)


def compile_step(strategy, trainer, accumulator, global_batch, xla):
    """tf.function(iterator) running one iteration: its minibatches on every replica, G_ema,
    the logs."""
    count = trainer.settings.batches_per_iteration
    run = replicated(strategy, lambda batches: trainer.train_step(batches, global_batch),
                     accumulator, xla)

    @tf.function(autograph=False)
    def step(iterator):
        run(tuple(next(iterator) for _ in range(count)))
        trainer.finish_step()

    return step
