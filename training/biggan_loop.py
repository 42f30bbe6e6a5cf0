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
import json
import math
import os
import time

import numpy as np
from absl import app

from networks import biggan
from training.run_options import RunOptions

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
    seed: int = 0
    strategy: str = "default"
    devices: tuple = ()
    mixed_precision: bool = False
    xla: bool = False
    tick_kimg: float = 4.0
    snapshot_ticks: int = 10
    keep_checkpoints: int = 3
    metrics: tuple = ()                # ("swd",) computes SWD at each snapshot.
    swd_images: int = 256
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
        from training.biggan_trainer import BigGANSettings
        lr = self.learning_rate
        warmup = self.fq_warmup_kimg
        if self.fq_preset == "paper" and warmup <= 0:
            warmup = self.kimg / 4
        return BigGANSettings(
            d_steps=self.num_d_steps, accumulations=self.preset("accumulations"),
            g_learning_rate=lr or self.preset("g_lr"), d_learning_rate=lr or self.preset("d_lr"),
            betas=tuple(self.preset("betas")), epsilon=self.preset("adam_epsilon"),
            ema_decay=self.preset("ema_decay"), ema_start=self.preset("ema_start"),
            fq_alpha=self.fq_alpha,
            fq_warmup_iterations=int(math.ceil(warmup * 1000.0 / self.images_per_iteration)))

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

    # -- persistence -------------------------------------------------------------------------


Options = BigGANOptions

#----------------------------------------------------------------------------
# Flags, validation, networks.


def _parse_fq_layers(text):
    if text is None:
        return None
    try:
        layers = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise app.UsageError(f"--fq-layers must be comma-separated D block indices like 0,1,2,3 "
                             f"(\"\" for BigGAN without FQ), got {text!r}.") from None
    if len(set(layers)) != len(layers):
        raise app.UsageError(f"--fq-layers {text!r} names a block twice.")
    return layers


def options_from_flags(fv):
    """BigGANOptions from run_training.py's parsed flags; app.UsageError on bad values.

    With --resume the run's saved options are returned: a resumed run keeps its preset,
    dataset and batch, and its length unless --iterations or --kimg is given.
    """
    saved_path = os.path.join(fv.out or "", "training_options.json")
    if fv.resume and fv.out and os.path.isfile(saved_path):
        try:
            saved = BigGANOptions.load(fv.out)
        except ValueError as e:
            raise app.UsageError(f"--resume: {e}") from None
        if fv.iterations < 0 or (fv.kimg is not None and not fv.kimg > 0):
            raise app.UsageError("--iterations and --kimg must be > 0.")
        if fv.iterations:
            saved.iterations = fv.iterations
        elif fv.kimg is not None:
            saved.kimg = fv.kimg
        saved.strategy, saved.devices = fv.strategy, tuple(fv.devices)
        if saved.xla and saved.strategy != "default":
            raise app.UsageError("this run trains with --xla, which works with --strategy "
                                 "default only.")
        return saved
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
        fq_layers=_parse_fq_layers(fv["fq-layers"].value), fq_preset=fv["fq-preset"].value,
        fq_num_embeddings=fv["fq-num-embeddings"].value, fq_decay=fv["fq-decay"].value,
        fq_commitment=fv["fq-commitment"].value, fq_alpha=fv["fq-alpha"].value,
        fq_warmup_kimg=fv["fq-warmup-kimg"].value, seed=fv.seed, strategy=fv.strategy,
        devices=tuple(fv.devices), mixed_precision=fv["mixed-precision"].value, xla=fv.xla,
        tick_kimg=fv["tick-kimg"].value, snapshot_ticks=fv["snapshot-ticks"].value,
        metrics=metrics, resolution=fv.resolution)
    if fv.kimg is not None:
        options.kimg = fv.kimg
    return options


def open_training_data(options):
    """The run's dataset at the preset's resolution; ValueError with the fix if unusable."""
    import datasets
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
    from training.checkpoints import Checkpoints, checkpoint_state, latest_checkpoint
    options = BigGANOptions.load(run_dir)
    checkpoint = checkpoint or latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in "
                                f"{os.path.join(run_dir, 'checkpoints')}.")
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


def log_keys(trainer):
    keys = {"g_loss", "g_fq_loss", "d_loss", "d_loss_real", "d_loss_fake", "d_fq_loss",
            "d_real_score", "d_fake_score", "alpha_fq"}
    for layer in trainer.D.fq_layers:
        keys |= {f"fq/{layer.name}/perplexity", f"fq/{layer.name}/unused_fraction"}
    return keys


def grid_inputs(options, z_dim, count=None):
    """Fixed latents and labels of the sample grids: one class per column (at most 10)."""
    columns = min(options.num_classes, 10)
    rows = max(1, (count or 8 * columns) // columns)
    rng = np.random.RandomState(options.seed + 123)
    z = rng.randn(rows * columns, z_dim).astype(np.float32)
    labels = np.tile(np.arange(columns), rows).astype(np.int32)
    return z, labels, columns


def training_loop(options, run_dir, resume=False, log=print, stop_after_iterations=None):
    """Trains per `options`, writing everything into `run_dir`. Returns the run summary dict.

    Args:
      options: BigGANOptions (validated or not; resolved here).
      run_dir: output folder (created by the caller; training_options.json is written here).
      resume: continue from the latest checkpoint in run_dir/checkpoints.
      log: where one-line messages go.
      stop_after_iterations: stop (with a checkpoint) after this many iterations in total, as
        if killed there; the run can then be resumed (used to test exact resume).
    """
    import keras
    import tensorflow as tf

    from training import distribute
    from training.biggan_trainer import BigGANTrainer
    from training.checkpoints import Checkpoints, resume_or_record
    from training.logs import RunLogger, diverged_from, grid_upscale, save_image_grid
    from training.loop import LogAccumulator, state_fingerprint

    dataset, counts = open_training_data(options)
    resolve(options, dataset)
    info = dataset.info
    strategy = distribute.make_strategy(options.strategy, list(options.devices) or None)
    is_chief = distribute.is_chief(strategy)
    replicas = strategy.num_replicas_in_sync
    global_batch = options.batch
    distribute.check_global_batch(global_batch, replicas)
    with distribute.precision_policy(options.mixed_precision), strategy.scope():
        keras.utils.set_random_seed(options.seed)
        G, D = build_networks(options)
        trainer = BigGANTrainer(G, D, options.settings(),
                                class_probabilities=counts,
                                mixed_precision=options.mixed_precision, seed=options.seed)
        accumulator = LogAccumulator(log_keys(trainer))
    checkpoints = Checkpoints(trainer.checkpoint_state(), run_dir, options.keep_checkpoints,
                              is_chief, distribute.task_index())
    if resume_or_record(checkpoints, options, run_dir, resume, is_chief):
        log(f"Resumed from {checkpoints.latest} at iteration {int(trainer.iteration.numpy())}")

    per_iteration = options.images_per_iteration
    iteration = int(trainer.iteration.numpy())
    stop = options.iterations if stop_after_iterations is None else \
        min(options.iterations, int(stop_after_iterations))
    data = dataset.distribute(strategy, global_batch, info.resolution,
                              start_image=iteration * per_iteration, mirror=options.mirror,
                              seed=options.seed)
    iterator = iter(data)
    step = _compile_step(strategy, trainer, accumulator, global_batch, options.xla)
    logger = RunLogger(run_dir, options.kimg, is_chief)
    grid_z, grid_labels, grid_columns = grid_inputs(options, trainer.z_dim)
    sample_training = options.preset("sample_training")
    swd_state = {}

    def generate(z, labels):
        images = [trainer.generate(tf.constant(z[i:i + 64]), tf.constant(labels[i:i + 64]),
                                   training=sample_training).numpy()
                  for i in range(0, len(z), 64)]
        return np.concatenate(images)

    def compute_swd():
        import metrics
        if not swd_state:
            reals = dataset.pipeline(options.swd_images, info.resolution, dtype=tf.uint8,
                                     shuffle=True, repeat=False, seed=options.seed)
            swd = metrics.SlicedWassersteinDistance(info.resolution, seed=options.seed)
            swd_state["swd"] = swd
            swd_state["real"] = swd.descriptors(next(iter(reals))[0].numpy())
        rng = np.random.RandomState(options.seed + 7)
        z = rng.randn(options.swd_images, trainer.z_dim).astype(np.float32)
        labels = trainer.class_cdf.searchsorted(rng.rand(options.swd_images), side="right")
        labels = np.minimum(labels, options.num_classes - 1).astype(np.int32)
        fakes = np.clip(generate(z, labels), -1.0, 1.0)
        swd = swd_state["swd"]
        result = swd.distance(swd_state["real"], swd.descriptors(fakes))
        return {f"metrics/{k}": v for k, v in result.items()}

    def snapshot():
        kimg = iteration * per_iteration / 1000
        if is_chief:
            images = generate(grid_z, grid_labels)
            path = os.path.join(run_dir, f"fakes{int(kimg):06d}.png")
            save_image_grid(path, images, columns=grid_columns,
                            upscale=grid_upscale(info.resolution))
            logger.images(kimg, "fakes", images)
        path = checkpoints.save(iteration)
        if "swd" in options.metrics and is_chief:
            logger.scalars(kimg, compute_swd())
        return path

    log(f"BigGAN {options.config}: {options.iterations} iterations of {options.d_steps} D "
        f"step(s) x {options.preset('accumulations')} minibatch(es) of {global_batch} "
        f"({options.kimg:g} kimg), {options.num_classes} classes, FQ after D blocks "
        f"{list(options.fq_layers) or 'none'}")
    if iteration == 0 and is_chief:
        # The starting point, for comparison (NVlabs' fakes_init.png).
        save_image_grid(os.path.join(run_dir, "fakes_init.png"), generate(grid_z, grid_labels),
                        columns=grid_columns, upscale=grid_upscale(info.resolution))
    start_time = time.time()
    logger.throughput(iteration * per_iteration / 1000)
    tick_start, tick, last_snapshot = iteration, 0, None
    while iteration < stop:
        try:
            step(iterator)
        except tf.errors.InvalidArgumentError as e:
            raise diverged_from(e, f"iteration {iteration + 1}", checkpoints.latest) or e
        iteration += 1
        done = iteration >= stop
        if (iteration - tick_start) * per_iteration >= options.tick_kimg * 1000 or done:
            tick += 1
            kimg = iteration * per_iteration / 1000
            values = accumulator.read_and_reset()
            values["progress/iteration"] = iteration
            logger.tick(kimg, values, ("g_loss", "d_loss", "d_fq_loss"), prefix=f"it {iteration}  ",
                        last_checkpoint=checkpoints.latest, position=f"iteration {iteration}")
            tick_start = iteration
            if tick % options.snapshot_ticks == 0 or done:
                last_snapshot = snapshot()
    if last_snapshot is None:
        last_snapshot = snapshot()
    logger.close()
    summary = {"run_dir": run_dir, "kimg": iteration * per_iteration / 1000,
               "iterations": iteration, "checkpoint": last_snapshot,
               "seconds": round(time.time() - start_time, 1),
               "finished": iteration >= options.iterations,
               "state_fingerprint": state_fingerprint(trainer.checkpoint_state())}
    # Every worker writes its summary (into its own --out): the fingerprints show that all
    # workers ended with the same state.
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _compile_step(strategy, trainer, accumulator, global_batch, xla):
    """tf.function running one iteration: its minibatches, strategy.run, G_ema, logs.

    Traced without AutoGraph: the step has no data-dependent Python control flow, and
    converting every network call costs about a third of the tracing time.
    """
    import tensorflow as tf
    count = trainer.settings.batches_per_iteration

    def replica_step(batches):
        return trainer.train_step(batches, global_batch)

    if xla:
        replica_step = tf.function(replica_step, jit_compile=True, autograph=False)

    @tf.function(autograph=False)
    def step(iterator):
        batches = tuple(next(iterator) for _ in range(count))
        sums, means = strategy.run(replica_step, args=(batches,))
        logs = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in sums.items()}
        logs.update({k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                     for k, v in means.items()})
        trainer.finish_step()
        accumulator.add(logs)

    return step
