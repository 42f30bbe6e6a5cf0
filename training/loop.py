"""The training loop of run_training.py, one for every model family.

    summary = training_loop(run, resume=False)      # run: a family's TrainingRun

The loop owns what every family shares: the strategy and the precision policy (set here and
restored when the loop returns), seeding, building the trainer inside `strategy.scope()`,
checkpoints and resume, the start record (devices, replicas, precision, data, parameter counts;
printed and in log.jsonl), fakes_init.png and reals.png, the in-graph log accumulator, ticks
(divergence check, TensorBoard, log.jsonl, the progress line), snapshots (sample grids, SWD, a
checkpoint), the divergence stop and `summary.json` with the state fingerprint on every worker.
A family supplies the rest as a `TrainingRun` subclass (training/stylegan.py: ProGAN / StyleGAN /
StyleGAN2, training/biggan.py, training/ugatit.py): its data, its trainer, how far one step
goes, and its images.

Progress is counted in the family's `position` (images shown for the StyleGAN family, whose
minibatch changes between stages; iterations for BigGAN and U-GAT-IT); `images(position)`
converts it into real images shown, which ticks, logs and --kimg count. Checkpoints are numbered
by position.

Exact resume: the checkpoint holds the trainer's whole state (networks, EMA generator,
optimizers, FQ dictionaries, RNG states, counters) and each family's data stream is a pure
function of the seed and the images consumed (`distribute(start_image=...)`), so stop + resume
equals an uninterrupted run.
"""

import abc
import hashlib
import json
import os
import signal
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from metrics.sliced_wasserstein import MIN_RESOLUTION, SlicedWassersteinDistance
from training import TrainingConfigError, distribute
from training.checkpoints import Checkpoints, init_from, resume_or_record
from training.logs import RunLogger, diverged_from, grid_upscale, save_image_grid

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


def state_fingerprint(state):
    """SHA-1 over every variable's bytes, in name order (identical state -> identical hash)."""
    digest = hashlib.sha1()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name].numpy()).tobytes())
    return digest.hexdigest()


def replicated(strategy, replica_fn, accumulator, xla=False):
    """run(*args): replica_fn(*args) on every replica, its logs reduced into `accumulator`.

    `replica_fn` returns (sums, means): dicts of per-replica scalars, summed resp. averaged over
    the replicas. Call `run` inside a tf.function. With `xla`, replica_fn is compiled by XLA.
    No autograph anywhere: the steps have no tensor-dependent Python control flow, and
    converting every network call they reach costs up to a third of the tracing time.
    """
    if xla:
        replica_fn = tf.function(replica_fn, jit_compile=True, autograph=False)

    def run(*args):
        sums, means = strategy.run(replica_fn, args=args)
        logs = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                for k, v in sums.items()}
        logs.update({k: strategy.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                     for k, v in means.items()})
        accumulator.add(logs)

    return run


class CompiledStep:
    """step(iterator, phases, iterations=1): one iteration at one stage, with its phases as
    data (or several G main + D main iterations in one call, `loop_function`).

    The next batch (taken inside the first group's function), then the phases (names from
    `trainer.phases_of_iteration`) in groups, each group one tf.function around
    strategy.run(trainer.run_phases), then Gs and nimg (`finish_step`, or inside the last
    function when G main and D main are fused, below); each function adds its reduced logs to
    `accumulator` in-graph. The fused group runs in `loop_function` only, also in an
    iteration with the lazy R1, which then runs on the batch the loop kept.

    A group is traced on its first use only. Every phase is its own group, except that G main
    and D main share one function when no path-length phase ever runs between them (a trainer
    without lazy path length, e.g. the StyleGAN2 demo): one graph lets D's pass on the reals
    start while G's update finishes and saves a function call: the demo's iteration is 3-6%
    shorter with the same bits (Intel Xeon 2 cores, 2026-12-04, medians of 8 x 40-48
    iterations, interleaved: 56.3 vs 59.8 and 58.7 vs 60.5 ms on a constant batch, 63.0 vs
    65.2 ms on the shapes pipeline with lazy R1). With path length between them in some
    iterations, fusing would trace G and D main twice (fused and alone); one function per
    combination of phases traced them three times and took twice as long to start a run.

    The fused function also ends with the Gs EMA (`trainer.update_gs`; no later phase changes
    G: D main's pass through G is the last to update G's w average, which Gs copies), and the
    iteration's last function counts its images, so such an iteration calls no `finish`. Same
    bits, but the EMA no longer waits for the iteration's end: it runs beside D main's pass on
    the fakes, which leaves a core idle (the demo's iteration ~1% shorter, Intel Xeon 2 cores,
    2026-12-05, 4 copies each interleaved: 44.3 vs 44.9 ms).
    """

    FUSED = ("Gmain", "Dmain")

    def __init__(self, strategy, trainer, accumulator, resolution, global_batch, xla):
        self.strategy, self.trainer, self.accumulator = strategy, trainer, accumulator
        self.resolution, self.global_batch, self.xla = resolution, global_batch, xla
        self.fuse_main = not trainer.loss_settings.lazy_pl
        self.functions = {}
        self.finish = tf.function(lambda: trainer.finish_step(global_batch), autograph=False)
        # The images a group's function counts when it ends (a tensor argument, so one trace
        # serves both): the iteration's if it is the last function of an iteration that runs
        # the fused group (which also holds the Gs EMA), else none.
        self.images = {last: tf.constant(global_batch if last else 0, tf.int64)
                       for last in (True, False)}

    @classmethod
    def standalone(cls, trainer, resolution, global_batch, xla=False):
        """The step outside a training run (benchmarks, tests): the current strategy and a
        LogAccumulator of its own (`.accumulator`)."""
        return cls(tf.distribute.get_strategy(), trainer, LogAccumulator(trainer.log_keys()),
                   resolution, global_batch, xla)

    def groups(self, phases):
        """The phase groups (tuples of names, in order) that run `phases`, one function each."""
        groups = []
        for phase in phases:
            if self.fuse_main and phase == "Dmain" and groups and groups[-1] == ("Gmain",):
                groups[-1] = self.FUSED
            else:
                groups.append((phase,))
        return groups

    def in_one_call(self, phases):
        """True when several iterations of `phases` can run in one call (`loop_function`): G
        main + D main alone, in one fused group."""
        return self.groups(phases) == [self.FUSED]

    def _run_group(self, group, store=None, stored=None):
        """run_group(data, images): the phases `group` on every replica, then (the fused group)
        the Gs EMA, then nimg += images (int64 scalar, after every read of nimg). With `store`
        (a BatchBuffer) each replica also keeps its share of `data` there; with `stored` the
        phases run on the share kept there and `data` is ignored (pass None)."""
        def replica_phases(data):
            if stored is not None:
                data = stored.read()
            if store is not None:
                store.write(data)
            return self.trainer.run_phases(group, data, self.resolution, self.global_batch)

        run = replicated(self.strategy, replica_phases, self.accumulator, self.xla)

        def run_group(data, images):
            run(data)
            if group == self.FUSED:
                self.trainer.update_gs(self.global_batch)   # cross-replica, after D main
            self.trainer.count_images(images)

        return run_group

    def stored_function(self, group):
        """The tf.function f(images) running the phases `group` on the batch that the last
        iteration of `loop_function` took (each replica's share, kept in `self.last_batch`),
        then counting `images`: the lazy R1 after an iteration's G main + D main, so that the
        fused group is traced once, in the loop (with its own first function as well, the
        start of a demo run traced it twice, ~5 s more on an Intel Xeon). Compiled on first
        use, after `loop_function`."""
        key = (tuple(group), "stored")
        if key not in self.functions:
            run_group = self._run_group(key[0], stored=self.last_batch)
            self.functions[key] = tf.function(lambda images: run_group(None, images),
                                              autograph=False)
        return self.functions[key]

    def function(self, group, first=False):
        """The tf.function running the phases `group` (a tuple of names) in order on every
        replica (compiled on first use): f(data, images), or for the iteration's first group
        (`first`) f(iterator, images) -> the batch it took, which the later groups get. Taking
        the batch inside the graph saves an eager get-next and the batch's copy into the call:
        the demo's iteration ~1.5% shorter, same bits (Intel Xeon 2 cores, 2026-12-05, 6
        copies each interleaved: 41.57 vs 42.16 ms, +- 0.7% between copies).

        Each function ends by counting `images` (int64 scalar) into the trainer's nimg, after
        its phases have read it (the step passes 0: `finish` counts; the fused group's
        functions, `loop_function` and `stored_function`, end an iteration this way, which
        saves the call of a function that only counts)."""
        key = (tuple(group), first)
        if key not in self.functions:
            run_group = self._run_group(key[0])

            def take_batch_and_run_group(iterator, images):
                data = next(iterator)
                run_group(data, images)
                return data

            self.functions[key] = tf.function(take_batch_and_run_group if first else run_group,
                                              autograph=False)
        return self.functions[key]

    def loop_function(self, iterator):
        """f(iterator, iterations, images_last): `iterations` (int32 scalar >= 1) iterations of
        the fused group, one after another in one call (a while loop in the graph), each taking
        its batch, running G main + D main and the Gs EMA and counting its images, the last
        one `images_last` (int64 scalar: the global batch, or 0 when more phases of its
        iteration follow, `stored_function`, which count them after reading nimg). Each
        iteration keeps its batch in `self.last_batch` for those phases. The loop's
        iterations run in order, each after every variable update of the one before, so the
        numbers are those of one call per iteration; what goes is the host's work between
        calls, during which no kernel runs: the demo's iteration ~7% shorter with 8 per call
        (Intel Xeon 2 cores, 2026-12-05, 3 copies each interleaved: 44.3 vs 47.2 ms), same
        bits. Compiled on first use, for batches like those of `iterator`."""
        key = ("loop",)
        if key not in self.functions:
            self.last_batch = BatchBuffer(self.strategy, iterator.element_spec,
                                          self.global_batch // self.strategy.num_replicas_in_sync)
            run_group = self._run_group(self.FUSED, store=self.last_batch)
            images = self.images[True]

            def run_iterations(iterator, iterations, images_last):
                def body(i):
                    last = tf.equal(i, iterations - 1)
                    run_group(next(iterator), tf.where(last, images_last, images))
                    return [i + 1]

                tf.while_loop(lambda i: i < iterations, body, [tf.constant(0)])

            self.functions[key] = tf.function(run_iterations, autograph=False)
        return self.functions[key]

    def __call__(self, iterator, phases, iterations=1):
        """Runs `iterations` iterations of `phases`; more than one only when they are the fused
        group alone (`in_one_call`). An iteration that starts with the fused group runs it in
        `loop_function`, and its later phases (the lazy R1) on the batch kept there."""
        if iterations != 1 and not self.in_one_call(phases):
            raise ValueError(f"CompiledStep: {iterations} iterations per call need phases that "
                             f"are G main + D main alone, got {phases}.")
        groups = self.groups(phases)
        if groups[0] == self.FUSED:
            later = groups[1:]   # then the last of them counts the iteration's images
            self.loop_function(iterator)(iterator, tf.constant(iterations, tf.int32),
                                         self.images[not later])
            for i, group in enumerate(later):
                self.stored_function(group)(self.images[i == len(later) - 1])
            return
        # No fused group (it can only come first): the groups count nothing, finish does.
        data = self.function(groups[0], first=True)(iterator, self.images[False])
        for group in groups[1:]:
            self.function(group)(data, self.images[False])
        self.finish()   # Gs EMA after every G update, then the count


class BatchBuffer:
    """Each replica's share of one batch, kept between tf.functions: `write(data)` and
    `read()` inside a replica function (strategy.run), `data` a nest of tensors with the
    structure and dtypes of `element_spec` (an iterator's) and `replica_batch` rows. One
    non-trainable variable per tensor; under a tf.distribute strategy, synchronised on read
    with no aggregation, i.e. a plain per-replica copy, never reduced."""

    def __init__(self, strategy, element_spec, replica_batch):
        def variable(spec):
            if hasattr(spec, "_value_specs"):
                spec = spec._value_specs[0]   # a PerReplicaSpec: the replicas' are alike
            shape = [replica_batch] + spec.shape.as_list()[1:]
            return tf.Variable(tf.zeros(shape, spec.dtype), trainable=False,
                               synchronization=tf.VariableSynchronization.ON_READ,
                               aggregation=tf.VariableAggregation.NONE)

        with strategy.scope():
            self.variables = tf.nest.map_structure(variable, element_spec)

    def write(self, data):
        tf.nest.map_structure(lambda variable, value: variable.assign(value),
                              self.variables, data)

    def read(self):
        return tf.nest.map_structure(lambda variable: variable.read_value(), self.variables)

#----------------------------------------------------------------------------


class TrainingRun(abc.ABC):
    """What one model family supplies to `training_loop`: data, trainer, steps and images.

    The loop sets `strategy`, `is_chief`, `trainer` and `accumulator` on the instance before
    it calls anything but `open_data` and `build_trainer`. Positions are the family's progress
    counter (see the module docstring), read from the trainer so that a resumed run continues
    where its checkpoint was written.

    Args:
      options: the family's Options (a RunOptions dataclass with `kimg`, `seed`, `strategy`,
        `devices`, `precision`, `keep_checkpoints`, `snapshot_ticks`, `xla`).
      run_dir: the run folder (created by the caller).
      log: where one-line messages go.
    """

    # Keys of the tick's values printed on the progress line (when present).
    progress_keys = ()
    # The trainer's networks (attributes) a new run takes from --init-from.
    network_names = ("G", "Gs", "D")

    def __init__(self, options, run_dir, log=print):
        self.options, self.run_dir, self.log = options, run_dir, log
        self.strategy = self.is_chief = self.trainer = self.accumulator = None

    # -- set-up --------------------------------------------------------------------------------

    @abc.abstractmethod
    def open_data(self):
        """Opens the dataset and fills in the options it decides (before anything is built).
        Raises TrainingConfigError for a dataset the options cannot use."""

    @abc.abstractmethod
    def build_trainer(self):
        """The trainer (networks, optimizers, counters): called seeded, inside strategy.scope()
        and the precision policy. It has `checkpoint_state()` and `log_keys()`."""

    def check_replicas(self, replicas):
        """Raises TrainingConfigError if the run cannot be split over `replicas` replicas."""
        distribute.check_global_batch(self.options.minibatch, replicas)

    def start_new_run(self, logger):
        """Called once when a run starts from scratch (not on resume), before the first step."""

    def start_message(self, position, stop):
        """A line describing the run before its first step, or None."""
        return None

    # -- progress ------------------------------------------------------------------------------

    @abc.abstractmethod
    def position(self):
        """The trainer's progress counter (int)."""

    def images(self, position):
        """Real images shown by D up to `position` (RunOptions.images_at)."""
        return self.options.images_at(position)

    @abc.abstractmethod
    def total(self):
        """The position at which the run is finished."""

    def tick_images(self):
        """Images between ticks."""
        return self.options.tick_kimg * 1000

    def where(self, position):
        """The position in words, for messages ("kimg 1.234", "iteration 12")."""
        return f"kimg {self.images(position) / 1000:.3f}"

    def tick_values(self, position):
        """Extra scalars for the tick's log entry."""
        return {}

    def tick_prefix(self, position):
        """Text that starts the progress line's details."""
        return ""

    def summary_values(self, position):
        """Extra fields of summary.json."""
        return {}

    # -- steps ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def step(self, position, max_images):
        """Runs the iteration that starts at `position`, or several in one call while the
        images they show stay within `max_images` (the loop's next tick or stop); returns the
        position after them."""

    # -- images --------------------------------------------------------------------------------

    @abc.abstractmethod
    def snapshot_grids(self, position):
        """[(file name, TensorBoard tag, images NHWC in [-1, 1], columns, upscale)] of a
        snapshot (called on the chief only)."""

    def initial_grids(self):
        """Grids of the untrained networks (NVlabs' fakes_init.png), written by a new run."""
        return []

    def grid_classes(self, count):
        """The class of each cell of a `count`-image sample grid (int (count,)), or None when
        the grids are not class-conditional (this default)."""
        return None

    def real_images(self, count):
        """reals.png: up to `count` training images, uint8 NHWC at the training resolution,
        shuffled with the run's seed and flipped as the data stream flips them (--mirror). With
        `grid_classes`, cell i holds the next image of class grid_classes(count)[i] in that
        stream (black if the class has too few), so reals and fakes share the layout."""
        classes = self.grid_classes(count)
        if classes is None:
            return next(iter(self.real_stream(count)))[0].numpy()
        wanted = np.bincount(classes, minlength=max(classes) + 1)
        found = [[] for _ in wanted]
        for images, labels in self.real_stream(256):
            for image, label in zip(images.numpy(), np.argmax(labels.numpy(), axis=1)):
                if label < len(wanted) and len(found[label]) < wanted[label]:
                    found[label].append(image)
            if all(len(f) == w for f, w in zip(found, wanted)):
                break
        blank = np.zeros_like(images[0].numpy())
        return np.stack([found[label].pop(0) if found[label] else blank for label in classes])

    def real_stream(self, batch_size):
        """One epoch of `self.dataset` (an ImageDataset) at `options.resolution` as reals.png
        shows it: (uint8 images, labels) batches, shuffled with the run's seed, flipped as the
        training stream flips them."""
        options = self.options
        return self.dataset.pipeline(batch_size, options.resolution, dtype=tf.uint8,
                                     mirror=options.mirror, repeat=False, drop_remainder=False,
                                     seed=options.seed, cache=False)

    def networks(self):
        """{"G": [networks], "D": [networks]}: what the start record counts parameters of."""
        return {"G": [self.trainer.G], "D": [self.trainer.D]}

    def data_summary(self):
        """{"source", "images", "resolution"} of the training data, for the start record."""
        info = self.dataset.info
        return {"source": info.source, "images": info.num_images,
                "resolution": self.options.resolution}

    def swd_generator(self, position):
        """(resolution, generate(rng, n) -> n images in [-1, 1]) for SWD, or None."""
        return None



class IterationRun(TrainingRun):
    """A TrainingRun counted in iterations (`trainer.iteration`), all of them one compiled
    step over one data stream (BigGAN, U-GAT-IT); its options have `images_per_iteration`."""

    _step = None

    @abc.abstractmethod
    def compile_step(self, iteration):
        """step() -> None running one iteration, with the data stream from `iteration` on."""

    def position(self):
        return int(self.trainer.iteration.numpy())

    def where(self, iteration):
        return f"iteration {iteration}"

    def tick_values(self, iteration):
        return {"progress/iteration": iteration}

    def summary_values(self, iteration):
        return {"iterations": iteration}

    def step(self, iteration, max_images):
        if self._step is None:
            self._step = self.compile_step(iteration)
        self._step()
        return iteration + 1

#----------------------------------------------------------------------------


def training_loop(run, resume=False, stop_at=None, strategy=None, checkpoint_minutes=10.0):
    """Trains `run` (a TrainingRun) into its run folder. Returns the run summary dict.

    Args:
      run: a family's TrainingRun.
      resume: continue from the latest checkpoint in run_dir/checkpoints.
      stop_at: stop (with a checkpoint) at this position, as if killed there; the run can then
        be resumed (used to test exact resume).
      strategy: a tf.distribute strategy to use instead of the options' one (tests).
      checkpoint_minutes: also write a checkpoint (no images) when this much wall-clock time
        has passed since the last one; 0 = only at snapshots.
    Returns:
      dict run_dir, kimg, checkpoint, seconds, finished, state_fingerprint, and the family's
      `summary_values`; also written to run_dir/summary.json by every worker (its own --out),
      so the fingerprints show that all workers ended with the same state. After SIGINT or
      SIGTERM (`StopSignals`) the loop writes a checkpoint after the current step and returns
      early with "interrupted": the signal's name.
    """
    options = run.options
    run.strategy = strategy or distribute.make_strategy(options.strategy,
                                                        list(options.devices) or None)
    run.is_chief = distribute.is_chief(run.strategy)
    if options.precision == "auto":   # saved concrete, so a resume trains as the run began
        options.precision = distribute.default_precision(options.small_ops)
    with distribute.dtype_policy(options.precision), StopSignals() as signals:
        return _train(run, resume, stop_at, checkpoint_minutes * 60.0, signals)


def _train(run, resume, stop_at, checkpoint_seconds, signals):
    run.open_data()   # may fill in options (what the dataset decides): read them after it
    options, run_dir, strategy, is_chief = run.options, run.run_dir, run.strategy, run.is_chief
    run.check_replicas(strategy.num_replicas_in_sync)
    distribute.check_own_run_folders(strategy, run_dir)
    with strategy.scope():
        keras.utils.set_random_seed(options.seed)
        run.trainer = run.build_trainer()
        run.accumulator = LogAccumulator(run.trainer.log_keys())
    checkpoints = Checkpoints(run.trainer.checkpoint_state(), run_dir, options.keep_checkpoints,
                              is_chief)
    position = run.position()
    if options.init_from and not resume:
        init_from(options.init_from, {n: getattr(run.trainer, n) for n in run.network_names},
                  options.model, run.log)
    resumed = resume_or_record(checkpoints, options, run_dir, resume)
    # Each worker restores its own copy: copies of different steps would train on silently.
    if not distribute.same_on_every_worker(strategy, run.position()):
        raise TrainingConfigError(
            f"the workers start from different points (this one: "
            f"{os.path.basename(resumed) if resumed else 'a new run'}); resume every worker "
            "from the same run, each --out holding that run's newest checkpoint.")
    # Printed once nothing can stop the run any more (a bad dataset or --init-from is one line
    # of error and leaves no folder behind, so naming the folder before it would mislead).
    run.log(f"Run folder: {run_dir}")
    if resumed:
        position = run.position()
        run.log(f"Resumed from {checkpoints.latest} at {run.where(position)}")
    total = run.total()
    stop = total if stop_at is None else min(total, int(stop_at))
    logger = RunLogger(run_dir, options.kimg, is_chief)
    swd = SWDState(run, options)
    # Workers stop and write checkpoints together (each save is a collective).
    any_worker = distribute.any_worker(strategy)

    def kimg(at):
        return run.images(at) / 1000

    def write_grids(grids, at, tensorboard):
        for name, tag, images, columns, upscale in grids:
            save_image_grid(os.path.join(run_dir, name), images, columns=columns,
                            upscale=upscale)
            if tensorboard:
                logger.images(kimg(at), tag, images)

    def log_swd(at):
        scores = swd(at)
        if scores:
            logger.scalars(kimg(at), scores)

    def snapshot(at):
        if is_chief:
            write_grids(run.snapshot_grids(at), at, tensorboard=True)
        path = checkpoints.save(at)
        if is_chief:
            log_swd(at)
        return path

    record, lines = start_record(strategy, run.networks(), run.data_summary())
    for line in lines + [distribute.gpu_support_warning()]:
        if line:
            run.log(line)
    logger.record(kimg(position), {"start": record})
    if not resume:
        run.start_new_run(logger)
        if is_chief:
            fakes = run.initial_grids()
            write_grids(fakes + [reals_grid(run, fakes)], position, tensorboard=False)
            log_swd(position)
    message = run.start_message(position, stop)
    if message:
        run.log(message)
    start_time = time.time()
    logger.throughput(kimg(position))
    tick_start, tick, last_snapshot, interrupted = position, 0, None, None
    saved_at, saved_time = position, time.monotonic()
    while position < stop:
        # The images a step may show before the loop must look again (a tick's end, the stop).
        max_images = min(run.images(tick_start) + run.tick_images(), run.images(stop)) \
            - run.images(position)
        try:
            position = run.step(position, max_images)
        except tf.errors.InvalidArgumentError as e:
            raise diverged_from(e, run.where(position), checkpoints.latest) or e
        done = position >= stop
        stop_now, save_now = any_worker(
            signals.received is not None,
            0 < checkpoint_seconds <= time.monotonic() - saved_time)
        if run.images(position) - run.images(tick_start) >= run.tick_images() or done \
                or stop_now:
            tick += 1
            values = run.accumulator.read_and_reset()
            values.update(run.tick_values(position))
            logger.tick(kimg(position), values, run.progress_keys,
                        prefix=run.tick_prefix(position), last_checkpoint=checkpoints.latest,
                        position=run.where(position))
            tick_start = position
            if tick % options.snapshot_ticks == 0 or done:
                last_snapshot = snapshot(position)
                saved_at, saved_time = position, time.monotonic()
        if (stop_now or save_now) and saved_at != position:
            checkpoints.save(position)
            saved_at, saved_time = position, time.monotonic()
        if stop_now and not done:
            interrupted = signals.received or "a signal to another worker"
            last_snapshot = checkpoints.latest
            break
    if last_snapshot is None:   # nothing left to train: the run's latest checkpoint stands
        last_snapshot = checkpoints.latest or snapshot(position)
    logger.close()
    summary = {"run_dir": run_dir, "kimg": kimg(position), **run.summary_values(position),
               "checkpoint": last_snapshot, "seconds": round(time.time() - start_time, 1),
               "finished": position >= total,
               "state_fingerprint": state_fingerprint(run.trainer.checkpoint_state())}
    if interrupted:
        summary["interrupted"] = interrupted
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def start_record(strategy, networks, data):
    """What a run prints and logs (log.jsonl "start") before its first step: where it runs
    (devices, replicas, threads per op), its precision, its data and its networks' sizes.

    Args:
      strategy: the run's tf.distribute strategy.
      networks: {"G": [networks], "D": [networks]} (TrainingRun.networks).
      data: {"source", "images", "resolution"[, "classes"]} (TrainingRun.data_summary; "classes":
        a conditional run's label count).
    Returns:
      (record, lines): the JSON record and the lines to print.
    """
    parameters = {role: sum(int(np.prod(w.shape)) for net in nets for w in net.trainable_weights)
                  for role, nets in networks.items()}
    record = {"devices": distribute.device_names(strategy), "gpus": distribute.gpu_names(),
              "replicas": int(strategy.num_replicas_in_sync),
              "precision": keras.mixed_precision.global_policy().name, "data": data,
              "parameters": parameters,
              "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
    images = data["images"]
    if isinstance(images, dict):   # several image sets (U-GAT-IT's domains)
        images = " + ".join(f"{count} {name}" for name, count in images.items())
    gpus = f" ({', '.join(record['gpus'])})" if record["gpus"] else ""
    threads = record["intra_op_threads"]   # 0 = TensorFlow's default (every core)
    lines = [f"Devices: {', '.join(record['devices'])}{gpus}, {record['replicas']} replica(s), "
             f"precision {record['precision']}"
             + (f", {threads} thread(s) per op" if threads else ""),
             f"Data: {data['source']}, {images} images, {data['resolution']}x{data['resolution']}"
             + (f", {data['classes']} classes (conditional)" if data.get("classes") else ""),
             "Parameters: " + ", ".join(f"{role} {count:,}" for role, count in parameters.items())]
    return record, lines


def snapshot_grid_name(nimg):
    """The sample grid's file name of a snapshot at `nimg` images: the whole kimg in 6 digits,
    as NVlabs name theirs (fakes000040.png); between whole kimg also "_" and the images past
    the last one in 3 digits (fakes000000_048.png: 48 images). So snapshots less than 1 kimg
    apart (a short --tick-kimg) keep a file each, and the names still sort in training order
    ("." sorts before "_", so fakes000001.png before fakes000001_500.png)."""
    whole, part = divmod(int(nimg), 1000)
    return f"fakes{whole:06d}{f'_{part:03d}' if part else ''}.png"


def class_grid(num_classes, count=None):
    """The cells of a class-conditional sample grid: one class per column (at most 10 columns),
    8 rows unless `count` cells are asked for. Returns (classes int32 (cells,), columns)."""
    columns = min(num_classes, 10)
    rows = max(1, (count or 8 * columns) // columns)
    return np.tile(np.arange(columns), rows).astype(np.int32), columns


def reals_grid(run, fakes):
    """NVlabs' reals.png: training images in the layout of the first initial grid (its image
    count, columns and upscale), or 32 images in 8 columns if the family has none."""
    _, _, images, columns, upscale = fakes[0] if fakes else ("", "", range(32), 8, None)
    reals = run.real_images(len(images))
    return ("reals.png", "reals", reals, columns, upscale or grid_upscale(reals.shape[1]))


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (`kill`, a preempted cloud machine) as a stop request.

    Inside the `with` block the first of these signals only sets `received` (its name); the
    training loop then finishes the current step, writes a checkpoint and returns. A second
    SIGINT raises KeyboardInterrupt at once (the user insists). Handlers are installed only in
    the main thread (Python allows no other) and restored on exit.
    """

    def __init__(self):
        self.received = None
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        if self.received is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(number).name

    def __exit__(self, *exc_info):
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        return False


class SWDState:
    """swd(position) -> {"metrics/swd_256/SWDx1e3_avg": value, ...} at a snapshot ({} unless
    --metrics swd).

    The real descriptors are computed once per resolution from `options.swd_images` training
    images (shuffled with the run's seed); the fakes come from the family's generator with a
    fixed RNG, and every evaluation at a resolution takes its patches and directions from the
    same random state (the one after the reals' patches): the values of two snapshots differ
    by what G learnt, not by a new draw of patches and directions, and a resumed run logs the
    value the uninterrupted run logs. The image count is part of the key: this quick SWD is not
    the 16,384-image SWD of run_metrics.py. Stages (or runs) below 16x16 have no SWD pyramid
    level: nothing is logged there (a progressive run's first SWD is at its 16x16 stage).
    """

    def __init__(self, run, options):
        self.run, self.options, self.reals = run, options, {}
        self.enabled = "swd" in getattr(options, "metrics", ())

    def __call__(self, position):
        source = self.run.swd_generator(position) if self.enabled else None
        if source is None:
            return {}
        resolution, generate = source
        if resolution < MIN_RESOLUTION:
            return {}
        count, seed = self.options.swd_images, self.options.seed
        if resolution not in self.reals:
            reals = self.run.dataset.pipeline(count, resolution, dtype=tf.uint8, shuffle=True,
                                              repeat=False, seed=seed)
            swd = SlicedWassersteinDistance(resolution, seed=seed)
            real = swd.descriptors(next(iter(reals))[0].numpy())
            self.reals[resolution] = (swd, real, swd.rng.get_state())
        swd, real, fake_state = self.reals[resolution]
        swd.rng.set_state(fake_state)
        # Clipped as the uint8 export does: an untrained G overshoots [-1, 1] by far.
        fakes = np.clip(generate(np.random.RandomState(seed + 7), count), -1.0, 1.0)
        result = swd.distance(real, swd.descriptors(fakes))
        return {f"metrics/swd_{count}/{k}": v for k, v in result.items()}
