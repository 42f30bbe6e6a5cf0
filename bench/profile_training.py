"""Where a StyleGAN2 training step spends its time: a per-op breakdown from the TF profiler.

    python bench/profile_training.py [--setting reference] [--resolution 32] [--fq-blocks 16,32]
                                     [--batch 32] [--steps 4] [--top 25]
    python bench/profile_training.py --setting demo      # the default run's step
    python bench/profile_training.py --setting demo --precision mixed_bfloat16   # ... with AMX
    python bench/profile_training.py --inter-op-threads 1   # one kernel at a time: each op's cost

--setting reference (default): the network and schedule of bench/bench_peer.py
(stylegan2-ada-pytorch's setting). --setting demo: the StyleGAN2 demo preset as
`python run_training.py` trains it (class-conditional on the 5 built-in classes, batch 8 unless
--batch is given, the preset's FQ block unless --fq-blocks is given, one thread per op), G and D main in
one function as the loop runs them. Both steps are the training loop's CompiledStep.

Each iteration kind of the lazy schedule is profiled on its own after a warm-up: Gmain + Dmain,
+ Greg (path length; not in the demo), + Greg + Dreg (R1). Every kernel the TensorFlow executor
ran is read from the trace (the XPlane protobuf the profiler writes) and its time attributed to
its op type and to the phase in its name (the trainer names its phases Gmain / Greg / Dmain /
Dreg). The table is per iteration of that kind, in milliseconds of kernel time summed over
threads, so parallel kernels count once per thread; each kind's heading (its phases) gives the
wall time per iteration. Below each table, FQ's share of the kernel time (the kernels in its
layers' scopes: look-ups, their gradients, dictionary updates), then the cores busy over the
profiled iterations (one column per time bin, the phase that ran most in it above): where a
serial chain of small ops keeps one core busy while the other waits, no kernel speed-up
shortens the iteration. The busy count is of executor threads with a kernel running. With one
thread per op (--setting demo) that is the cores busy. With more (--setting reference, all cores
per op) a kernel alone may keep every core busy, so the count is a lower bound, the idle time an
upper bound, and the kernel times of ops that ran side by side include time they waited for cores.

--inter-op-threads 1 runs one kernel at a time (TensorFlow's default runs one per core side by
side): each kernel then has the cores to itself, so its time is what it costs the iteration when
nothing overlaps it, and FQ's share is what its ops add to a serial iteration. In the reference
setting at 32² (Intel Xeon family 6 model 167, 2 cores, 2026-12-07, profiles minutes apart):
FQ's kernels 28 ms of a 1772 ms iteration with one kernel at a time, against 1477 ms per
iteration with the default pools, where FQ costs about 1.3% (bench_peer.py's A/B) because its
ops overlap others.
"""

import collections
import os
import tempfile
import time

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

import bench_peer  # noqa: E402  (its flags are defined on import: --batch, --fq-blocks)
from datasets.synthetic import NUM_CLASSES  # noqa: E402
from training.distribute import dtype_policy, set_intra_op_threads  # noqa: E402
from training.loop import CompiledStep  # noqa: E402
from training.run_options import PRECISIONS  # noqa: E402
from training.stylegan import TrainingOptions, build_networks, build_trainer  # noqa: E402
from training.trainer import PHASES  # noqa: E402
from timing import constant_batches  # noqa: E402
from kernel_trace import busy_cores, in_scopes, kernel_events  # noqa: E402

flags.DEFINE_enum("setting", "reference", ["reference", "demo"],
                  "reference: bench_peer.py's stylegan2-ada-pytorch setting; demo: the default "
                  "run's StyleGAN2 demo preset.")
flags.DEFINE_integer("resolution", 32, "Training resolution.")
flags.DEFINE_integer("steps", 4, "Profiled iterations per iteration kind.")
flags.DEFINE_integer("top", 25, "Rows of the op-type table.")
flags.DEFINE_integer("inter-op-threads", 0, "Kernels TensorFlow runs side by side (0: its "
                     "default, one per core); 1 runs one kernel at a time.", lower_bound=0)
flags.DEFINE_enum("precision", "float32", list(PRECISIONS), "--setting demo: Keras dtype policy of "
                  "the networks (as run_training.py --precision; the demo's on a CPU with AMX "
                  "is mixed_bfloat16).")
FLAGS = flags.FLAGS

KINDS = {"main": (False, False), "main+Greg": (True, False), "main+Greg+Dreg": (True, True)}


def print_busy_cores(events, steps, cores, threads_per_op, bins=120):
    """The profiled iterations' busy cores over time, one character per bin: a row of phase
    initials (G Gmain, g Greg, D Dmain, d Dreg) over a row of digits (9 = all `cores` busy), and
    the idle core time per iteration. threads_per_op: the intra-op threads (0 = TensorFlow's
    default, all cores); above 1 the digits count executor threads with a kernel running, a
    lower bound of the cores busy (one kernel may use them all), and the idle time is an upper
    bound."""
    width, busy, phases = busy_cores(events, bins)
    if not busy:
        return
    initials = {"Gmain": "G", "Greg": "g", "Dmain": "D", "Dreg": "d", "other": ".", None: " "}
    idle = (cores * width * len(busy) - sum(busy) * width) / steps
    span = width * len(busy) / steps
    what, bound = ("cores busy", "") if threads_per_op == 1 else (
        "executor threads running a kernel (each may use several cores)", "at most ")
    print(f"  {what} over the {steps} iterations ({cores} cores, {width * 1e3:.2f} ms per "
          f"column, 9 = all busy): idle {bound}{idle * 1e3:.1f} core-ms per iteration of "
          f"{cores * span * 1e3:.1f} ({idle / (cores * span):.0%})")
    print("    phase " + "".join(initials[p] for p in phases))
    print("    busy  " + "".join(str(min(9, round(b / cores * 9))) for b in busy))


def print_fq_share(events, total, steps, fq_layers):
    """FQ's kernels (look-ups with their gradients, dictionary updates) per iteration: their
    time and share of the kernel time `total` (seconds over `steps` iterations), their count,
    and the op types that take the most of it."""
    fq_events = in_scopes(events, [layer.name for layer in fq_layers])
    if not fq_events:
        return
    by_type = collections.Counter()
    for event in fq_events:
        by_type[event.op_type] += event.end - event.start
    seconds = sum(by_type.values())
    print(f"  FQ's kernels ({', '.join(layer.name for layer in fq_layers)}): "
          f"{seconds * 1e3 / steps:.2f} ms per iteration, {seconds / total:.2%} of the kernel "
          f"time, {len(fq_events) / steps:.0f} kernels; " + ", ".join(
              f"{op_type} {t / seconds:.0%}" for op_type, t in by_type.most_common(5)))


def demo_step(resolution, batch, fq_blocks):
    """The training loop's CompiledStep for the StyleGAN2 demo preset (`.trainer`)."""
    options = TrainingOptions(resolution=resolution, batch=batch, fq_blocks=tuple(fq_blocks),
                              precision=FLAGS.precision)
    with dtype_policy(options.precision):
        trainer = build_trainer(options, *build_networks(options, 3, NUM_CLASSES))
    return CompiledStep.standalone(trainer, resolution, batch)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        fq_blocks = tuple(int(b) for b in FLAGS['fq-blocks'].value)
    except ValueError:
        raise app.UsageError("--fq-blocks takes comma-separated integers (empty for none).")
    if FLAGS["inter-op-threads"].value:   # before the first op initialises the runtime
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS["inter-op-threads"].value)
    res, batch = FLAGS.resolution, FLAGS.batch
    rng = np.random.RandomState(0)
    if FLAGS.setting == "demo":
        threads = set_intra_op_threads(None, small_ops=True)   # as run_training.py's demo
        batch = batch if FLAGS["batch"].present else 8
        if not FLAGS["fq-blocks"].present:   # the preset's, as run_training.py
            fq_blocks = TrainingOptions(resolution=res).fq_blocks_at()
        step = demo_step(res, batch, fq_blocks)
        labels = tf.constant(np.eye(NUM_CLASSES, dtype=np.float32)[
            rng.randint(NUM_CLASSES, size=batch)])
        setting = (f"demo preset, {NUM_CLASSES} classes, {threads} thread(s) per op, "
                   f"{FLAGS.precision}")
    else:
        step = bench_peer.make_variant(res, batch, tuple(b for b in fq_blocks if b <= res))
        labels = tf.zeros((batch, 0))
        setting = "bench_peer setting"
    reals = tf.constant(np.tanh(rng.randn(batch, res, res, 3)), tf.float32)
    batches = constant_batches(reals, labels)
    print(f"StyleGAN2 {res}x{res}, {setting}, batch {batch}, FQ blocks "
          f"{fq_blocks or 'none'}; {os.cpu_count()} CPU threads, "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'} inter-op; "
          "ms per iteration")
    seen = set()
    for kind, (g_reg, d_reg) in KINDS.items():
        phases = step.trainer.phases_of_iteration(g_reg, d_reg)
        if phases in seen:   # a kind the preset does not have (the demo has no path length)
            continue
        seen.add(phases)
        for _ in range(3):   # trace and warm up
            step(batches, phases)
        step.trainer.nimg.numpy()
        with tempfile.TemporaryDirectory(prefix="profile_") as logdir:   # the trace, read once
            # The profiler probes CUDA again (a second failed-cuInit line without a driver).
            cli_common.without_startup_noise(lambda: tf.profiler.experimental.start(logdir))
            start = time.perf_counter()
            if step.in_one_call(phases):   # one call, as the training loop
                step(batches, phases, FLAGS.steps)
            else:
                for _ in range(FLAGS.steps):
                    step(batches, phases)
            step.trainer.nimg.numpy()
            wall = (time.perf_counter() - start) / FLAGS.steps
            tf.profiler.experimental.stop()
            events = kernel_events(logdir, PHASES)
        totals = collections.Counter()
        for event in events:
            totals[(event.phase, event.op_type)] += event.end - event.start
        per_phase = collections.Counter()
        per_type = collections.Counter()
        for (phase, op_type), seconds in totals.items():
            per_phase[phase] += seconds
            per_type[op_type] += seconds
        scale = 1e3 / FLAGS.steps
        print(f"\n{' + '.join(phases)}: wall {wall * 1e3:.0f} ms, kernel time "
              f"{sum(per_type.values()) * scale:.0f} ms; by phase: " + ", ".join(
                  f"{p} {per_phase[p] * scale:.0f}" for p in PHASES + ("other",)
                  if per_phase[p]))
        print(f"  {'op type':<34}{'ms':>9}{'share':>8}   by phase (ms)")
        total = sum(per_type.values())
        for op_type, seconds in per_type.most_common(FLAGS.top):
            split = ", ".join(f"{p} {totals[(p, op_type)] * scale:.1f}"
                              for p in PHASES + ("other",) if totals[(p, op_type)] > 0)
            print(f"  {op_type:<34}{seconds * scale:>9.1f}{seconds / total:>8.1%}   {split}")
        print_fq_share(events, total, FLAGS.steps, step.trainer.D.fq_layers)
        print_busy_cores(events, FLAGS.steps, os.cpu_count(),
                         tf.config.threading.get_intra_op_parallelism_threads())


if __name__ == "__main__":
    app.run(main)
