"""The training loop of run_training.py: segments, compiled steps, ticks, snapshots, resume.

    training_loop(options, run_dir, resume=False)

Time is divided into schedule segments (constant resolution, minibatch and learning rate; see
training/schedule.py). For each segment the loop opens a distributed input pipeline and traces
one step function per combination of lazy-regularisation phases; steps then run with no Python
work beyond picking the function. Every `tick_kimg` it reads the accumulated losses, checks they
are finite, logs them and prints a progress line; every `snapshot_ticks` ticks it writes a
sample grid from Gs (fixed latents), optional SWD, and a checkpoint.

Exact resume: the checkpoint holds the trainer (networks, Gs, optimizers, FQ dictionaries, RNG
states, nimg, the segment's first image) and the data stream is a pure function of the seed and
the images consumed (`ImageDataset.distribute(start_image=...)`), so stop + resume equals an
uninterrupted run.
"""

import dataclasses
import hashlib
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

import datasets
from training import TrainingConfigError, distribute
from training.checkpoints import Checkpoints, resume_or_record
from training.config import build_networks
from training.logs import RunLogger, diverged_from, grid_upscale, save_image_grid
from training.trainer import GANTrainer

#----------------------------------------------------------------------------


class LogAccumulator(tf.Module):
    """Sums of logged scalars over a tick, updated inside the compiled step (no host sync)."""

    def __init__(self, keys):
        super().__init__()
        self.keys = sorted(keys)
        self.totals = {k: tf.Variable(0.0, trainable=False) for k in self.keys}
        self.counts = {k: tf.Variable(0.0, trainable=False) for k in self.keys}

    def add(self, values):
        for key, value in values.items():
            self.totals[key].assign_add(tf.cast(value, tf.float32))
            self.counts[key].assign_add(1.0)

    def read_and_reset(self):
        result = {}
        for key in self.keys:
            count = float(self.counts[key].numpy())
            if count:
                result[key] = float(self.totals[key].numpy()) / count
            self.totals[key].assign(0.0)
            self.counts[key].assign(0.0)
        return result


def log_keys(trainer):
    keys = {"g_loss", "g_fq_loss", "d_loss", "d_fq_loss", "d_real_score", "d_fake_score",
            "alpha_fq", "lod", "g_pl_penalty", "pl_mean", "d_r1_penalty", "d_gradient_penalty"}
    for layer in trainer.D.fq_layers:
        keys |= {f"fq/{layer.name}/perplexity", f"fq/{layer.name}/unused_fraction"}
    if trainer.use_sq:
        keys |= {"g_sq_loss", "d_sq_cr_loss"}
    return keys


def sq_tick_statistics(trainer):
    """Codebook usage of G's style quantization since the last tick, then a new window.

    Returns {"sq/perplexity", "sq/unused_fraction", "sq/dead_codes", "sq/uniformity"} ({}
    without SQ): perplexity of the code counts of every w seen in the Gmain steps of the tick
    (K = uniform use, 1 = collapse), fraction and number of entries never picked, and L_uf of
    the current codebook (lower = more spread out).
    """
    if not trainer.use_sq:
        return {}
    stats = trainer.G.sq.usage_statistics()
    trainer.G.sq.reset_usage()
    return {f"sq/{k}": stats[k] for k in ("perplexity", "unused_fraction", "dead_codes",
                                         "uniformity")}


def initialize_sq_codebook(options, trainer, log, num_images=None):
    """SQ-GAN codebook initialisation (CBI) from --sq-cbi-features; returns the logged values.

    Runs outside strategy.scope() on one device (fq_keras.codebook_init), then copies G into Gs
    (they are equal before the first step), so every replica and Gs start from the CBI codebook.
    Called only for a new run: a resumed run takes its codebook from the checkpoint.
    """
    from fq_keras.codebook_init import initialize_codebook, load_image_features
    features = load_image_features(options.sq_cbi_features)
    start = time.time()
    history = initialize_codebook(
        trainer.G.sq, features, steps=options.sq_cbi_steps, learning_rate=options.sq_cbi_lr,
        epsilon=options.sq_cbi_epsilon, batch_size=options.sq_cbi_batch or None,
        seed=options.seed)
    trainer.copy_to_gs()
    cost = history["transport_cost"]
    # The features are an unordered set; a count unlike the dataset's is allowed, but noted.
    note = "" if num_images in (None, features.shape[0]) else \
        f" (the training set has {num_images} images)"
    log(f"Codebook initialisation: {len(cost)} steps on {features.shape[0]} image features "
        f"({features.shape[1]}-d){note}, transport cost {cost[0]:.4f} -> {cost[-1]:.4f}, "
        f"marginal error {history['marginal_error'][-1]:.2g}, {time.time() - start:.0f} s")
    return {"sq/cbi_transport_cost_initial": float(cost[0]),
            "sq/cbi_transport_cost_final": float(cost[-1]),
            "sq/cbi_marginal_error": float(history["marginal_error"][-1])}


#----------------------------------------------------------------------------


def _resolve_options(options, dataset):
    """Fills in what the dataset decides, so the run can be rebuilt without it later."""
    info = dataset.info
    if options.conditional and not info.has_labels:
        raise TrainingConfigError(f"--conditional: dataset {info.source} has no labels; prepare "
                                  "it with --labels or drop --conditional.")
    return dataclasses.replace(options, resolution=options.resolution or info.resolution,
                               channels=info.channels,
                               label_size=info.label_size if options.conditional else 0)


def _sample_inputs(options, trainer, info, dataset, count):
    """Fixed latents (and labels) for sample grids: the same every snapshot and on resume."""
    rng = np.random.RandomState(options.seed + 123)
    z = rng.randn(count, trainer.z_dim).astype(np.float32)
    labels = None
    if trainer.c_dim:
        labels = np.eye(trainer.c_dim, dtype=np.float32)[np.arange(count) % trainer.c_dim]
    return z, labels


def training_loop(options, run_dir, resume=False, log=print, stop_after_kimg=None):
    """Trains per `options`, writing everything into `run_dir`. Returns the run summary dict.

    Args:
      options: TrainingOptions.
      run_dir: output folder (created by the caller; `training_options.json` written here).
      resume: continue from the latest checkpoint in run_dir/checkpoints.
      stop_after_kimg: stop (with a checkpoint) once this many kimg are done, as if killed
        there; the run can then be resumed (used to test exact resume).
    """
    strategy = distribute.make_strategy(options.strategy, list(options.devices) or None)
    is_chief = distribute.is_chief(strategy)
    dataset = datasets.open_dataset(options.dataset, resolution=options.resolution or None,
                                    num_images=options.num_images or None)
    options = _resolve_options(options, dataset)
    info = dataset.info
    c_dim = options.label_size
    schedule = options.schedule()
    replicas = strategy.num_replicas_in_sync

    with distribute.precision_policy(options.mixed_precision), strategy.scope():
        keras.utils.set_random_seed(options.seed)
        G, D = build_networks(options, info.channels, c_dim)
        trainer = GANTrainer(G, D, options.loss_settings(), schedule, options.fq_settings(),
                             learning_rate=options.lr, mixed_precision=options.mixed_precision,
                             seed=options.seed, sq=options.sq_settings())
        accumulator = LogAccumulator(log_keys(trainer))
    checkpoints = Checkpoints(trainer.checkpoint_state(), run_dir, options.keep_checkpoints,
                              is_chief, distribute.task_index())
    if resume_or_record(checkpoints, options, run_dir, resume, is_chief):
        log(f"Resumed from {checkpoints.latest} at kimg {trainer.nimg.numpy() / 1000:.3f}")

    logger = RunLogger(run_dir, options.kimg, is_chief)
    if trainer.use_sq and options.sq_cbi_features and not resume:
        logger.scalars(0.0, initialize_sq_codebook(options, trainer, log, info.num_images))
    grid_z, grid_labels = _sample_inputs(options, trainer, info, dataset, 32)
    swd_state = {}
    settings = trainer.loss_settings
    total_nimg = int(round(options.kimg * 1000))
    stop_nimg = total_nimg if stop_after_kimg is None else min(total_nimg, int(round(stop_after_kimg * 1000)))
    nimg = int(trainer.nimg.numpy())
    tick_start_nimg, tick = nimg, 0
    last_snapshot = None
    segment = None
    start_time = time.time()
    logger.throughput(nimg / 1000)

    def snapshot():
        kimg = nimg / 1000
        stage = segment.resolution
        if is_chief:
            images = sample(stage)
            path = os.path.join(run_dir, f"fakes{nimg // 1000:06d}.png")
            save_image_grid(path, images, columns=8, upscale=grid_upscale(stage))
            logger.images(kimg, "fakes", images)
        path = checkpoints.save(nimg)
        if "swd" in options.metrics and is_chief:
            logger.scalars(kimg, compute_swd(stage))
        return path

    def sample(stage):
        lod = tf.constant(schedule.lod(nimg / 1000), tf.float32) if trainer.progressive else None
        images = []
        for i in range(0, len(grid_z), 16):
            z = tf.constant(grid_z[i:i + 16])
            labels = None if grid_labels is None else tf.constant(grid_labels[i:i + 16])
            images.append(generate_gs(z, labels, lod, stage).numpy())
        images = np.concatenate(images)
        factor = options.resolution // stage
        return images.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else images

    def generate_gs(z, labels, lod, stage):
        kwargs = dict(lod=lod, resolution=stage) if trainer.progressive else {}
        if trainer.is_style:
            kwargs["noise_mode"] = "const"
        return trainer.Gs(z, labels, **kwargs)

    def compute_swd(stage):
        import metrics
        if stage not in swd_state:
            reals = dataset.pipeline(options.swd_images, stage, dtype=tf.uint8, shuffle=True,
                                     repeat=False, seed=options.seed)
            swd = metrics.SlicedWassersteinDistance(stage, seed=options.seed)
            swd_state[stage] = (swd, swd.descriptors(next(iter(reals))[0].numpy()))
        swd, real_desc = swd_state[stage]
        rng = np.random.RandomState(options.seed + 7)
        fakes = []
        lod = tf.constant(schedule.lod(nimg / 1000), tf.float32) if trainer.progressive else None
        for i in range(0, options.swd_images, 64):
            n = min(64, options.swd_images - i)
            labels = None
            if trainer.c_dim:
                labels = tf.constant(np.eye(trainer.c_dim, dtype=np.float32)[rng.randint(trainer.c_dim, size=n)])
            z = tf.constant(rng.randn(n, trainer.z_dim).astype(np.float32))
            # Clip as the uint8 export does: an untrained G overshoots [-1, 1] by far.
            fakes.append(np.clip(generate_gs(z, labels, lod, stage).numpy(), -1.0, 1.0))
        result = swd.distance(real_desc, swd.descriptors(np.concatenate(fakes)))
        return {f"metrics/{k}": v for k, v in result.items()}

    if nimg == 0 and is_chief:
        # The starting point, for comparison: NVlabs' fakes_init.png (and SWD at kimg 0).
        stage = schedule.segment_at(0).resolution
        save_image_grid(os.path.join(run_dir, "fakes_init.png"), sample(stage), columns=8,
                        upscale=grid_upscale(stage))
        if "swd" in options.metrics:
            logger.scalars(0.0, compute_swd(stage))

    while nimg < stop_nimg:
        current = schedule.segment_at(nimg / 1000)
        if current != segment:
            segment = current
            global_batch = segment.minibatch
            _check_batch(global_batch, replicas, options.preset("mbstd_group"))
            if int(trainer.segment_start_nimg.numpy()) < segment.start_kimg * 1000 or nimg == 0:
                # First step of this segment (not a resume inside it): NVlabs resets Adam.
                trainer.segment_start_nimg.assign(nimg)
                if trainer.progressive and nimg > 0:
                    trainer.reset_optimizers()
            trainer.set_learning_rate(segment.learning_rate)
            consumed = nimg - int(trainer.segment_start_nimg.numpy())
            data = dataset.distribute(strategy, global_batch, segment.resolution,
                                      start_image=consumed, mirror=options.mirror,
                                      seed=options.seed + int(segment.start_kimg))
            iterator = iter(data)
            step = CompiledStep(strategy, trainer, accumulator, segment.resolution,
                                global_batch, options.xla)
            log(f"Segment from kimg {segment.start_kimg:g}: resolution {segment.resolution}, "
                f"minibatch {global_batch}, lr {segment.learning_rate:g}"
                + (" (fade-in)" if segment.fading else ""))
        iteration = nimg // global_batch
        phases = trainer.phases_of_iteration(iteration % settings.pl_interval == 0,
                                             iteration % settings.r1_interval == 0)
        try:
            step(iterator, phases)
        except tf.errors.InvalidArgumentError as e:
            raise diverged_from(e, f"kimg {nimg / 1000:.3f}", checkpoints.latest) or e
        nimg += global_batch

        done = nimg >= stop_nimg
        if nimg - tick_start_nimg >= options.tick_kimg * 1000 or done:
            tick += 1
            kimg = nimg / 1000
            values = accumulator.read_and_reset()
            values.update({"progress/resolution": segment.resolution,
                           "progress/learning_rate": segment.learning_rate})
            values.update(sq_tick_statistics(trainer))
            logger.tick(kimg, values, ("g_loss", "d_loss", "d_fq_loss", "lod"),
                        last_checkpoint=checkpoints.latest)
            tick_start_nimg = nimg
            if tick % options.snapshot_ticks == 0 or done:
                last_snapshot = snapshot()

    if last_snapshot is None and segment is not None:
        last_snapshot = snapshot()
    logger.close()
    summary = {"run_dir": run_dir, "kimg": nimg / 1000, "checkpoint": last_snapshot,
               "seconds": round(time.time() - start_time, 1), "finished": nimg >= total_nimg,
               "state_fingerprint": state_fingerprint(trainer.checkpoint_state())}
    # Every worker writes its summary (into its own --out): the fingerprints show that all
    # workers ended with the same state.
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def state_fingerprint(state):
    """SHA-1 over every variable's bytes, in name order (identical state -> identical hash)."""
    digest = hashlib.sha1()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name].numpy()).tobytes())
    return digest.hexdigest()


def _check_batch(global_batch, replicas, mbstd_group):
    distribute.check_global_batch(global_batch, replicas)
    per_replica = global_batch // replicas
    group = min(mbstd_group, per_replica)
    if per_replica % group:
        raise TrainingConfigError(f"per-replica batch {per_replica} is not divisible by the "
                                  f"minibatch-stddev group size {group}; use a per-replica batch "
                                  f"that is a multiple of {mbstd_group}.")


class CompiledStep:
    """step(iterator, phases): one iteration at one stage, with its phases as data.

    The next batch, then each phase (names from `trainer.phases_of_iteration`) as its own
    tf.function around strategy.run(trainer.run_phase), then Gs and nimg (`finish_step`); each
    function adds its reduced logs to `accumulator` in-graph. A phase is traced on its first
    use only: the lazy regularisers cost one trace each, where one function per combination of
    phases traced G's and D's main phases three times (Gmain+Dmain, +Greg, +Greg+Dreg) and
    took twice as long to start a StyleGAN2 run. The steady-state step time is the same
    (bench/bench_peer.py measures this class).
    """

    def __init__(self, strategy, trainer, accumulator, resolution, global_batch, xla):
        self.strategy, self.trainer, self.accumulator = strategy, trainer, accumulator
        self.resolution, self.global_batch, self.xla = resolution, global_batch, xla
        self.functions = {}
        self.finish = tf.function(lambda: trainer.finish_step(global_batch), autograph=False)

    def phase_function(self, phase):
        """The tf.function(data) running `phase` on every replica (compiled on first use)."""
        if phase in self.functions:
            return self.functions[phase]
        strategy, trainer, accumulator = self.strategy, self.trainer, self.accumulator

        def replica_phase(data):
            return trainer.run_phase(phase, data, self.resolution, self.global_batch)

        # No autograph: the phases have no tensor-dependent Python control flow, and
        # converting every network call they reach took ~15% of a tiny StyleGAN2 run's time.
        if self.xla:
            replica_phase = tf.function(replica_phase, jit_compile=True, autograph=False)

        @tf.function(autograph=False)
        def run(data):
            sums, means = strategy.run(replica_phase, args=(data,))
            logs = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in sums.items()}
            logs.update({k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                         for k, v in means.items()})
            accumulator.add(logs)

        self.functions[phase] = run
        return run

    def __call__(self, iterator, phases):
        data = next(iterator)
        for phase in phases:
            self.phase_function(phase)(data)
        self.finish()
