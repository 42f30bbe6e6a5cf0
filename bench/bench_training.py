"""StyleGAN2 training throughput: FQ on vs off, XLA on vs off, and the input pipeline's margin.

    python bench/bench_training.py [--resolution 32] [--config demo] [--batch 8] [--repeats 24]
                                   [--steps 5] [--instances 8] [--fq-blocks 16,32] [--classes 5]
                                   [--intra-op-threads N] [--noxla]
                                   [--precision auto|float32|mixed_bfloat16|...] [--float32]
                                   [--lanes] [--other-filter-grads]

All variants are built in one process and timed interleaved (each repeat runs every variant
once, after an untimed warm-up step, and the median is reported), so the ratios compare like
with like on a shared machine; the FQ overhead is the median of the repeats' paired on / off
ratios (FQ on and off run back to back), each side the mean of --instances copies (identical
copies differ and drift by a few percent; the line adds the standard error from their spread,
`timing.between_copies_error`), and FQ's own work in one iteration timed alone
(bench/fq_work.py) follows it. A step is one full iteration of the official schedule's common case (G main + D main
with the FQ update), run by the training loop's CompiledStep on a constant batch (--steps of
them in one call, as the loop runs them between lazy R1 steps); an iteration
with every lazy phase of the preset (R1, every 16 steps; config e / f add path length, every 4,
which the demo leaves out) is timed separately.
The input pipeline (built-in shapes, full tf.data pipeline) is timed in the same run; the
project's rule is that it must deliver >= 10x what training consumes. Networks and threads are
the default run's: the demo conditions on the built-in shapes' 5 classes (--classes 0 for the
unconditional model) and runs one thread per op on a CPU (run_training.py --intra-op-threads),
under run_training.py's precision (--precision auto: mixed_bfloat16 for the demo on a CPU with
AMX, else float32); --float32 also times FQ on in float32 for the speed-up of the policy;
--lanes also times FQ on with the D step's fakes as one batch, for the speed-up of running them
in `BatchLanes` (the default with one thread per op on 2 or more cores,
`training.distribute.batch_lanes`); --other-filter-grads also times FQ on with the convolution
filter gradients this machine does not use by default (`networks.layers.filter_gradients`:
matrix products in `conv2d_same` and `conv2d_stride2[_transpose]`, or TensorFlow's own
Conv2DBackpropFilter), for the speed-up of the default.
"""

import functools
import os
import time

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import datasets  # noqa: E402
from networks.layers import (default_filter_gradients, filter_gradients,  # noqa: E402
                             other_filter_gradients)
from training.distribute import default_precision, dtype_policy, set_intra_op_threads  # noqa: E402
from training.loop import CompiledStep  # noqa: E402
from training.run_options import PRECISIONS  # noqa: E402
from training.stylegan import TrainingOptions, build_networks, build_trainer  # noqa: E402
from fq_work import time_fq_iteration  # noqa: E402
from timing import (between_copies_error, constant_batches, describe_overhead,  # noqa: E402
                    time_copies)

FLAGS = flags.FLAGS
flags.DEFINE_integer("resolution", 32, "Training resolution.")
flags.DEFINE_string("config", "demo", "Width preset (demo, e, f).")
flags.DEFINE_integer("batch", 0, "Global minibatch (0 = the preset's: demo 8, e / f 32).")
flags.DEFINE_integer("repeats", 24, "Timed repeats per variant (median reported).")
flags.DEFINE_integer("steps", 5, "Consecutive iterations per timed repeat (a single ~0.1 s step "
                     "is too short to time against the machine's noise), one call when they are "
                     "G main + D main alone, as the training loop runs them between lazy R1 "
                     "steps (the demo: 15 per call).")
flags.DEFINE_integer("instances", 8, "Copies of the FQ on and FQ off steps, each built and "
                     "timed on its own and averaged per repeat: identical copies run a few "
                     "percent apart and drift by as much, more than the ~1% FQ costs at the "
                     "demo (8 copies: about +-0.6% between copies, 16: +-0.4%). Even numbers "
                     "balance the build order.")
flags.DEFINE_boolean("xla", True, "Also time XLA-compiled steps.")
flags.DEFINE_enum("precision", "auto", ["auto", *PRECISIONS], "Keras dtype policy of every "
                  "variant, as run_training.py --precision (auto: mixed_bfloat16 for the demo on "
                  "a CPU with AMX, else float32).")
flags.DEFINE_boolean("float32", False, "Also time FQ on in float32: the speed-up of --precision "
                     "(bfloat16 is fast on CPUs with AMX, emulated and slow without).")
flags.DEFINE_boolean("lanes", False, "Also time FQ on with the D step's fakes as one batch "
                     "(lanes 1): the speed-up of BatchLanes.")
flags.DEFINE_boolean("other-filter-grads", False, "Also time FQ on with the filter gradients "
                     "this machine does not use by default: the default's speed-up.")
flags.DEFINE_list("fq-blocks", None, "FQ blocks of the 'FQ on' variants (default: the preset's, "
                  "as run_training.py: demo 8, e / f 16,32).")
flags.DEFINE_integer("classes", None, "Label size (default: 5, the built-in shapes' classes, for "
                     "the demo, which conditions on them; 0 otherwise).")
flags.DEFINE_integer("intra-op-threads", None, "Threads per op (default as run_training.py: 1 "
                     "for the demo on a CPU, else TensorFlow's default).")


def bench_options(**overrides):
    """The TrainingOptions this benchmark trains with: --config, --resolution, --batch, RGB."""
    return TrainingOptions(config=FLAGS.config, resolution=FLAGS.resolution, channels=3,
                           batch=FLAGS.batch, **overrides)


def fq_blocks():
    """The 'FQ on' blocks: --fq-blocks, else the preset's (run_training.py's default)."""
    if FLAGS["fq-blocks"].value is not None:
        return tuple(int(b) for b in FLAGS["fq-blocks"].value)
    return bench_options().fq_blocks_at()


def classes():
    if FLAGS.classes is not None:
        return FLAGS.classes
    conditional = bench_options().preset("conditional_if_labelled")
    return datasets.synthetic.NUM_CLASSES if conditional else 0


def precision():
    """--precision, with auto resolved as run_training.py resolves it."""
    if FLAGS.precision == "auto":
        return default_precision(bench_options().small_ops)
    return FLAGS.precision


def make_step(fq, xla, run_g_reg=False, run_d_reg=False, policy=None, lanes=None,
              filter_grads=None):
    """step(batches): --steps iterations with the given lazy phases, run as the training loop
    runs them (its CompiledStep; G main + D main alone in one call, other phase sets one call
    each), on the next batches of the iterator `batches`; `.phases`, `.trainer`. The networks
    are built under the Keras dtype policy `policy` (None: --precision); `lanes`: the
    trainer's D-step lanes (None: as run_training.py sets them); `filter_grads`: traced under
    `filter_gradients(filter_grads)` (None: this machine's default; it traces on its first
    call)."""
    policy = policy or precision()
    options = bench_options(fq_blocks=fq_blocks() if fq else (), precision=policy)
    with dtype_policy(policy):
        trainer = build_trainer(options, *build_networks(options, 3, classes()))
    if lanes is not None:
        trainer.lanes = lanes
    compiled = CompiledStep.standalone(trainer, FLAGS.resolution, options.minibatch, xla)
    phases = trainer.phases_of_iteration(run_g_reg, run_d_reg)
    in_one_call = compiled.in_one_call(phases)

    def step(batches):
        with filter_gradients(filter_grads):
            if in_one_call:
                compiled(batches, phases, FLAGS.steps)
            else:
                for _ in range(FLAGS.steps):
                    compiled(batches, phases)

    step.phases, step.trainer = phases, trainer
    return step


def main(argv):
    del argv
    threads = set_intra_op_threads(FLAGS["intra-op-threads"].value,
                                   small_ops=bench_options().small_ops)
    res = FLAGS.resolution
    batch = bench_options().minibatch
    rng = np.random.RandomState(0)
    reals = tf.constant(np.tanh(rng.randn(batch, res, res, 3)).astype(np.float32))
    c_dim = classes()
    labels = tf.constant(np.eye(c_dim, dtype=np.float32)[rng.randint(c_dim, size=batch)]
                         if c_dim else np.zeros((batch, 0), np.float32))
    batches = constant_batches(reals, labels)

    def built(step):
        """(run, sync) of a step for `time_copies`: run() starts --steps iterations, sync()
        waits for them (reading nimg waits for a step's updates)."""
        return functools.partial(step, batches), step.trainer.nimg.numpy

    # Every lazy phase of the preset (the demo has lazy R1 only, config e / f path length too).
    every_phase = make_step(True, False, True, True)
    singles = {"FQ on, " + " + ".join(every_phase.phases): lambda: built(every_phase)}
    if FLAGS.xla:
        singles["FQ on, XLA"] = lambda: built(make_step(True, True))
        singles["FQ off, XLA"] = lambda: built(make_step(False, True))
    if FLAGS.float32:
        singles["FQ on, float32"] = lambda: built(make_step(True, False, policy="float32"))
    if FLAGS.lanes:
        singles["FQ on, no lanes"] = lambda: built(make_step(True, False, lanes=1))
    if FLAGS['other-filter-grads'].value:
        singles["FQ on, other filter grads"] = lambda: built(
            make_step(True, False, filter_grads=other_filter_gradients()))
    # FQ on and off in `--instances` copies each, in a balanced build order (FQ on built first
    # throughout read +2..3.5% where this reads +1..2%); copy i of each are neighbours in time.
    copies, times = time_copies({"FQ on": lambda: built(make_step(True, False)),
                                 "FQ off": lambda: built(make_step(False, False))},
                                FLAGS.instances, FLAGS.repeats, singles=singles)
    copy_error = between_copies_error(copies, "FQ on", "FQ off", FLAGS.instances)
    times = {name: [t / FLAGS.steps for t in ts] for name, ts in times.items()}   # per iteration
    rate = {name: batch / float(np.median(t)) for name, t in times.items()}
    fq_work = time_fq_iteration(every_phase.trainer.D, batch, every_phase.trainer.lanes)

    dataset = datasets.open_dataset("shapes", resolution=res)
    iterator = iter(dataset.pipeline(batch, mirror=True))
    for _ in range(dataset.info.num_images // batch + 10):
        next(iterator)
    start, count = time.perf_counter(), 0
    for _ in range(300):
        count += int(next(iterator)[0].shape[0])
    loader = count / (time.perf_counter() - start)

    print(f"\nStyleGAN2 {res}x{res}, config {FLAGS.config}, batch {batch}, FQ blocks "
          f"{','.join(map(str, fq_blocks()))}, {classes()} classes, {os.cpu_count()} CPU threads "
          f"({threads or 'all'} per op), {precision()}, median of {FLAGS.repeats} x "
          f"{FLAGS.steps} steps (FQ on / off: mean of {FLAGS.instances} copies)")
    for name, value in rate.items():
        print(f"  {name:30s} {value:8.1f} img/s")
    print("  " + describe_overhead("FQ overhead (on / off step time):", times["FQ on"],
                                   times["FQ off"], copy_error))
    if fq_work is not None:
        print(f"  FQ's own work, timed alone (bench/fq_work.py): {fq_work * 1e3:.2f} ms per "
              f"iteration = {fq_work / np.median(times['FQ off']):.2%} of the FQ-off iteration "
              f"were it to overlap nothing")
    if FLAGS.xla:
        print(f"  XLA speed-up, FQ on:           {rate['FQ on, XLA'] / rate['FQ on']:.3f}x")
        print(f"  XLA speed-up, FQ off:          {rate['FQ off, XLA'] / rate['FQ off']:.3f}x")
    if FLAGS.float32:
        print(f"  {precision()} speed-up over float32, FQ on: "
              f"{rate['FQ on'] / rate['FQ on, float32']:.3f}x")
    if FLAGS.lanes:
        print(f"  D-step lanes ({every_phase.trainer.lanes}) speed-up, FQ on: "
              f"{rate['FQ on'] / rate['FQ on, no lanes']:.3f}x")
    if FLAGS['other-filter-grads'].value:
        print(f"  the default filter gradients ({default_filter_gradients()}), speed-up over "
              f"{other_filter_gradients()}, FQ on: "
              f"{rate['FQ on'] / rate['FQ on, other filter grads']:.3f}x")
    print(f"  input pipeline (built-in shapes, full tf.data): {loader:.0f} img/s = "
          f"{loader / rate['FQ on']:.0f}x what training consumes (target >= 10x)")


if __name__ == "__main__":
    app.run(main)
