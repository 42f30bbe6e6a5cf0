"""StyleGAN2 training speed in stylegan2-ada-pytorch's setting, against this CPU's FLOP limit.

    python bench/bench_peer.py [--resolutions 32,64] [--batch 32] [--repeats 8] [--instances 2]
                               [--other-filter-grads] [--reference-cmd "PYTHON peer_sg2ada.py SRC"]

The setting of `../shared/bench/peer_sg2ada.py` (the reference side, run separately in its own
venv): z/w 512, 8 mapping layers, channel_base 4096 (our fmap_base 2048), channel_max 256,
batch 32, minibatch-stddev groups of 4, float32, R1 gamma 10 every 16 iterations, path length
(weight 2, batch / 2) every 4, Adam (0, 0.99, 1e-8) with the lazy ratios, lr 0.0025. One
"cycle" is 16 iterations of that schedule (12 main-only, 3 with path length, 1 with both
regularisers); FQ off and FQ on (blocks 16, 32) run interleaved iteration by iteration: each
iteration of the cycle runs on every copy back to back, in alternating order
(bench/timing.interleaved_cycles), --instances copies of each built in a balanced order and
averaged per cycle. The median cycle gives img/s (real images consumed per second), the median
of the repeats' paired on / off ratios the FQ overhead. Beside it, FQ's own work in one
iteration timed alone (bench/fq_work.py), as a share of the FQ-off iteration.
--other-filter-grads adds one copy of FQ off traced with the convolution filter gradients this
machine does not use by default (`networks.layers.filter_gradients`: TensorFlow's own where the
matrix products of `conv2d_same` and `conv2d_stride2[_transpose]` are the default, the products
where TensorFlow's own are) to the interleaved cycles: the default's speed-up in this setting.

--reference-cmd runs the reference side in the same run, interleaved with ours: every repeat
runs the command (RES BATCH 16 appended: 16 iterations, its own img/s on its last line, as
`../shared/bench/peer_sg2ada.py` prints it) once, before our cycles in even repeats and after
them in odd ones, and ours / reference is the median of the repeats' paired ratios. Ours and
the reference one after the other in separate runs carry the machine's drift between the two
runs (a 2-core AMD EPYC instance ran the reference at 3.9 and then 3.0 img/s, 64^2, minutes
apart); paired repeats a few minutes long see nearly the same machine.

In the same run it measures the machine's 3x3 convolution (256 -> 256 channels, 32x32,
batch 32, forward + both gradients) in GFLOP/s, and counts the training step's FLOPs
analytically: every Conv2D / Conv2DBackpropInput / Conv2DBackpropFilter / depthwise conv /
MatMul / BatchMatMul op of the traced step graphs, 2 FLOPs per multiply-add, from their static
shapes (a filter gradient taken by matrix products as the convolution's, without the zero rows
they also multiply). The FLOP-limited rate is conv GFLOP/s / GFLOP per image; the
fraction printed is our img/s over that rate.
"""

import os
import re
import shlex
import shutil
import subprocess
import time

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from networks import stylegan2  # noqa: E402
from networks.layers import (conv2d_same, default_filter_gradients, filter_gradients,  # noqa: E402
                             other_filter_gradients)
from training.schedule import ProgressiveSchedule  # noqa: E402
from training.loop import CompiledStep  # noqa: E402
from training.trainer import PHASES, GANTrainer, LossSettings  # noqa: E402
from fq_work import time_fq_iteration  # noqa: E402
from timing import (balanced_copies, between_copies_error, constant_batches,  # noqa: E402
                    describe_overhead, interleaved_cycles, pooled_times, quiet_retracing)

flags.DEFINE_list("resolutions", ["32", "64"], "Training resolutions to measure.")
flags.DEFINE_integer("batch", 32, "Global minibatch (reference: 32).")
flags.DEFINE_integer("repeats", 8, "Interleaved repeats (median cycle reported).")
flags.DEFINE_list("fq-blocks", ["16", "32"], "FQ blocks of the 'FQ on' variant.")
flags.DEFINE_boolean("other-filter-grads", False, "Also time FQ off (one copy) with the filter "
                     "gradients this machine does not use by default (products or TensorFlow's "
                     "own): the default's speed-up.")
flags.DEFINE_integer("instances", 2, "Copies of FQ off and FQ on, built off, on, on, off, ... "
                     "and averaged per cycle (bench/timing.balanced_copies: identical copies run "
                     "apart by up to a few percent, an earlier-built one slower).")
flags.DEFINE_string("reference-cmd", None, "Command of the reference side, RES BATCH 16 appended "
                    "(e.g. 'peer-venv/bin/python ../shared/bench/peer_sg2ada.py sg2ada-src'), run "
                    "once per repeat beside our cycles: ours / reference as paired ratios.")
FLAGS = flags.FLAGS

REFERENCE = dict(z_dim=512, w_dim=512, mapping_layers=8, fmap_base=2048, fmap_max=256)
LOSS = LossSettings("logistic", r1_gamma=10.0, r1_interval=16, pl_weight=2.0, pl_interval=4,
                    style_mixing_prob=0.9)
CYCLE = [(i % 4 == 0, i % 16 == 0) for i in range(16)]  # (run_g_reg, run_d_reg) per iteration
OTHER = "FQ off, other filter grads"   # --other-filter-grads' variant

#----------------------------------------------------------------------------
# FLOP count of a traced graph.


def _dims(tensor):
    shape = tensor.shape
    if shape.rank is None or any(d is None for d in shape):
        raise ValueError(f"FLOP count needs static shapes, got {tensor.name} {shape}")
    return [int(d) for d in shape]


def _op_flops(op):
    """2 x multiply-adds of one convolution / matrix product op (0 for other ops)."""
    kind = op.type
    if kind in ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"):
        # All three cost the forward convolution: out elements x kh x kw x in-per-group.
        if kind == "Conv2D":
            w, y = op.inputs[1], op.outputs[0]
        elif kind == "Conv2DBackpropInput":
            w, y = op.inputs[1], op.inputs[2]
        else:
            y, w = op.inputs[2], op.outputs[0]
        kh, kw, cin, _ = _dims(w)
        return 2 * int(np.prod(_dims(y))) * kh * kw * cin
    if kind.startswith("DepthwiseConv2dNative"):
        if kind == "DepthwiseConv2dNative":
            w, y = op.inputs[1], op.outputs[0]
        elif kind.endswith("BackpropInput"):
            w, y = op.inputs[1], op.inputs[2]
        else:
            w, y = op.outputs[0], op.inputs[2]
        kh, kw = _dims(w)[:2]
        return 2 * int(np.prod(_dims(y))) * kh * kw
    if kind == "MatMul" and op.name.split("/")[-2].startswith("conv_filter_grad"):
        # A product of networks.layers' conv2d_same_filter_grad (one, (k I, k O)) or
        # conv2d_stride2_filter_grad (k, (k I, O) each), counted as the filter gradient it
        # computes, not with the zero rows it also multiplies: 2 |dy| (k I) times the output's
        # columns per dy channel. dy is where the second operand's chain (reshapes, pads,
        # shifts, slices) leaves the scope.
        scope, dy = op.name.rsplit("/", 1)[0], op.inputs[1]
        while dy.op.name.rsplit("/", 1)[0] == scope:
            dy = dy.op.inputs[0]
        per_channel = _dims(op.outputs[0])[-1] // _dims(dy)[-1]
        return 2 * int(np.prod(_dims(dy))) * _dims(op.inputs[0])[-1] * per_channel
    if kind in ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "BatchMatMul"):
        a, y = op.inputs[0], op.outputs[0]
        transpose = op.get_attr("transpose_a") if kind == "MatMul" else op.get_attr("adj_x")
        k = _dims(a)[-2] if transpose else _dims(a)[-1]
        return 2 * int(np.prod(_dims(y))) * k
    return 0


def graph_flops(graph, seen=None):
    """FLOPs of every conv / matmul in `graph` and the function graphs it calls."""
    seen = set() if seen is None else seen
    total = sum(_op_flops(op) for op in graph.get_operations())
    for name, function in getattr(graph, "_functions", {}).items():
        inner = getattr(function, "graph", None)
        if inner is not None and name not in seen:
            seen.add(name)
            total += graph_flops(inner, seen)
    return total

#----------------------------------------------------------------------------
# The two sides of the FLOP-limited rate.


def make_variant(resolution, batch, fq_blocks):
    """The training loop's CompiledStep for one trainer (its `.trainer`), default strategy."""
    G = stylegan2.Generator(resolution=resolution, **REFERENCE)
    D = stylegan2.Discriminator(resolution=resolution, fmap_base=REFERENCE["fmap_base"],
                                fmap_max=REFERENCE["fmap_max"], mbstd_group_size=4,
                                fq_blocks=fq_blocks)
    trainer = GANTrainer(G, D, LOSS, ProgressiveSchedule(resolution, resolution),
                         learning_rate=0.0025)
    return CompiledStep.standalone(trainer, resolution, batch)


def cycle_phases(trainer):
    """The phase names of each iteration of CYCLE."""
    return [trainer.phases_of_iteration(g_reg, d_reg) for g_reg, d_reg in CYCLE]


def cycle_flops(step, cycle, batches, data):
    """(FLOP of G main + D main, mean FLOP per iteration of `cycle`) of a built step, counted
    in its phases' traced graphs (`graph_flops`)."""
    # G main starts every iteration (path length keeps it unfused): its function is the one
    # that takes the batch, the same one the timed cycles run.
    per_phase = {phase: graph_flops(
        step.function((phase,), first=phase == "Gmain").get_concrete_function(
            batches if phase == "Gmain" else data, step.images[False]).graph)
        for phase in PHASES}
    return (per_phase["Gmain"] + per_phase["Dmain"],
            sum(per_phase[p] for phases in cycle for p in phases) / len(cycle))


def reference_img_per_s(command, resolution, batch, iterations=len(CYCLE)):
    """Images per second the reference side reports: `command` (a shell-style string) with
    RES BATCH ITERATIONS appended, run to its end; the last "<number> img/s" of its output.
    app.UsageError (one line) if it cannot start, fails or prints no such figure."""
    argv = shlex.split(command) + [str(resolution), str(batch), str(iterations)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except OSError as e:
        raise app.UsageError(f"--reference-cmd: cannot run {argv[0]}: {e.strerror}") from None
    found = re.findall(r"([0-9]+(?:\.[0-9]+)?) img/s", done.stdout)
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise app.UsageError(f"--reference-cmd exited with {done.returncode} without an img/s "
                             f"figure: {tail[0]}")
    # peer_sg2ada.py rounds img/s to 0.1 (2% at 4.7) but also prints "(16 iters, 109.7 s".
    timed = re.findall(r"\(([0-9]+) iters, ([0-9]+(?:\.[0-9]+)?) s", done.stdout)
    if timed and float(timed[-1][1]) > 0:
        return batch * int(timed[-1][0]) / float(timed[-1][1])
    return float(found[-1])


def conv_benchmark():
    """(step, input, FLOPs) of a 3x3 conv 256 -> 256 at 32x32, batch 32, forward + input and
    filter gradients, as the networks run it (`conv2d_same`: on CPUs in float32 the filter
    gradient by one matrix product; the three at 1.83x the GFLOP/s they reach with TensorFlow's
    Conv2DBackpropFilter, 202 against 110, AMD EPYC 2026-12-06)."""
    x = tf.random.normal([32, 32, 32, 256])
    w = tf.Variable(tf.random.normal([3, 3, 256, 256]) * 0.02)

    @tf.function
    def conv_step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = conv2d_same(x, w)
        return tape.gradient(y, [x, w])

    flops = 3 * 2 * 32 * 32 * 32 * 256 * 256 * 9
    return conv_step, x, flops


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        fq_blocks = tuple(int(b) for b in FLAGS['fq-blocks'].value)
        resolutions = [int(r) for r in FLAGS.resolutions]
    except ValueError:
        raise app.UsageError("--resolutions and --fq-blocks take comma-separated integers.")
    batch = FLAGS.batch
    if batch % 4 or batch < 4:
        raise app.UsageError("--batch must be a positive multiple of 4 (minibatch-stddev groups).")
    reference = FLAGS["reference-cmd"].value
    program = shlex.split(reference)[:1] if reference is not None else None
    if program is not None and (not program or shutil.which(program[0]) is None):
        raise app.UsageError("--reference-cmd must start with a program that exists (e.g. "
                             "'peer-venv/bin/python ../shared/bench/peer_sg2ada.py sg2ada-src').")
    conv_step, conv_x, conv_flops = conv_benchmark()
    conv_step(conv_x)
    rng = np.random.RandomState(0)
    print(f"StyleGAN2, stylegan2-ada-pytorch's setting (z/w 512, mapping 8, fmap_base 2048, "
          f"fmap_max 256, batch {batch}, fp32, lazy R1 16 / path length 4); "
          f"{os.cpu_count()} CPU threads; median of {FLAGS.repeats} cycles")
    for res in resolutions:
        reals = tf.constant(np.tanh(rng.randn(batch, res, res, 3)).astype(np.float32))
        labels = tf.zeros((batch, 0))
        blocks = {"FQ off": (), "FQ on": tuple(b for b in fq_blocks if b <= res)}
        variants = {(name, copy): make_variant(res, batch, blocks[name])
                    for name, copy in balanced_copies(blocks, FLAGS.instances)}
        if FLAGS['other-filter-grads'].value:
            variants[OTHER] = make_variant(res, batch, ())
        batches = constant_batches(reals, labels)
        data = next(batches)
        flops = {}
        with quiet_retracing():   # the copies trace one function each, on purpose
            for key, step in variants.items():
                name, copy = key if key != OTHER else (key, 0)
                start = time.perf_counter()
                cycle = cycle_phases(step.trainer)
                if name not in flops and name in blocks:   # the copies have the same graphs
                    flops[name] = cycle_flops(step, cycle, batches, data)
                with filter_gradients(other_filter_gradients() if key == OTHER else None):
                    for phases in set(cycle):
                        step(batches, phases)
                print(f"  {res}x{res} {name} #{copy + 1}: traced in "
                      f"{time.perf_counter() - start:.1f} s")
        runners = {key: (lambda phases, step=step: step(batches, phases),
                         lambda step=step: step.trainer.nimg.numpy())   # waits for the updates
                   for key, step in variants.items()}
        cycle = cycle_phases(variants[("FQ off", 0)].trainer)   # the same names in every copy
        times = {name: [] for name in variants}
        conv_times, reference_rates = [], []
        for repeat in range(FLAGS.repeats):
            if reference is not None and repeat % 2 == 0:   # before our cycles, then after
                reference_rates.append(reference_img_per_s(reference, res, batch))
            start = time.perf_counter()
            for _ in range(5):
                conv_step(conv_x)[0].numpy()
            conv_times.append((time.perf_counter() - start) / 5)
            for name, seconds in interleaved_cycles(runners, cycle, 1).items():
                times[name] += seconds
            if reference is not None and repeat % 2 == 1:
                reference_rates.append(reference_img_per_s(reference, res, batch))
        copy_error = between_copies_error(times, "FQ on", "FQ off", FLAGS.instances)

        def img_per_s(cycle_times):   # real images per second of the median cycle
            return len(CYCLE) * batch / float(np.median(cycle_times))

        each_copy = "; ".join(
            f"{name} " + ", ".join(f"#{copy + 1} {img_per_s(times[(name, copy)]):.2f}"
                                   for copy in range(FLAGS.instances)) for name in blocks)
        times = pooled_times(times, FLAGS.instances)   # each cycle's mean over the copies
        gflops_s = conv_flops / float(np.median(conv_times)) / 1e9
        print(f"\n{res}x{res}: 3x3 conv fwd+bwd {gflops_s:.1f} GFLOP/s")
        print(f"  {'variant':<8}{'img/s':>8}{'GFLOP/img main':>16}{'GFLOP/img sched':>17}"
              f"{'FLOP-limited img/s':>20}{'fraction':>10}")
        for name in blocks:
            rate = img_per_s(times[name])
            main_gf, sched_gf = flops[name][0] / batch / 1e9, flops[name][1] / batch / 1e9
            limit = gflops_s / sched_gf
            print(f"  {name:<8}{rate:>8.2f}{main_gf:>16.2f}{sched_gf:>17.2f}{limit:>20.2f}"
                  f"{rate / limit:>10.2f}")
        print("  " + describe_overhead("FQ on / off cycle time:", times["FQ on"], times["FQ off"],
                                       copy_error))
        if reference_rates:
            # Ratios of rates are the inverse ratios of times: reference seconds per image over
            # ours, repeat by repeat.
            reference_times = [len(CYCLE) * batch / rate for rate in reference_rates]
            print(f"  reference ({reference}): img/s per repeat "
                  + ", ".join(f"{rate:.2f}" for rate in reference_rates)
                  + f"; median {np.median(reference_rates):.2f}")
            for name in blocks:
                print("  " + describe_overhead(f"ours {name} / reference, img/s:",
                                               reference_times, times[name]))
        if OTHER in times:
            print(f"  FQ off with the {other_filter_gradients()} filter gradients: "
                  f"{img_per_s(times[OTHER]):.2f} img/s; "
                  + describe_overhead(f"their cycle time / the default's "
                                      f"({default_filter_gradients()}):", times[OTHER],
                                      times["FQ off"]))
        print(f"  each copy's img/s (median cycle, in build order off, on, on, off, ...): "
              f"{each_copy}")
        fq_on = variants[("FQ on", 0)].trainer
        fq_work = time_fq_iteration(fq_on.D, batch, fq_on.lanes)
        if fq_work is not None:
            iteration = float(np.median(times["FQ off"])) / len(CYCLE)
            print(f"  FQ's own work, timed alone (bench/fq_work.py): {fq_work * 1e3:.1f} ms per "
                  f"iteration = {fq_work / iteration:.2%} of the FQ-off iteration (the cycle's "
                  f"mean, {iteration * 1e3:.0f} ms) were it to overlap nothing")


if __name__ == "__main__":
    app.run(main)
