"""U-GAT-IT training iterations per second, light mode, FQ on vs off, side by side.

    python bench/bench_ugatit_training.py [--sizes 64,128] [--width 64] [--n-blocks 4]
                                          [--iterations 3] [--repeats 5] [--instances 2]

One timed iteration is the full `UGATITTrainer.train_step` of the training loop (both
directions: six generator passes, the two translations shared by the D and G steps; D step on
all four discriminators with the FQ dictionary updates, G step, two PyTorch-Adam updates, rho
clipping), compiled as the loop compiles
it (one tf.function call per iteration), on fixed input tensors (no tf.data pipeline). FQ on =
the official preset in the global discriminators (convs 1, 2, 3; K 64 / 128 / 128); off = the
same networks without FQ.
Below 96x96 the official global discriminator (7 layers) does not fit, so at 64x64 it has 6
layers (`Options.discriminator_layers`). Each variant is built in --instances copies in a
balanced order and compiled, then all are timed interleaved, `--iterations` steps per repeat
after an untimed warm-up step (bench/timing.time_copies). Printed: iterations/s per variant from
the median and the fastest repeat (each repeat's mean over the copies; the fastest is less
sensitive to other processes on a shared machine), and FQ's cost as the median of the repeats'
paired on / off ratios, with the errors over the repeats and between copies.
"""

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from networks import ugatit  # noqa: E402
from training.ugatit_trainer import UGATITTrainer  # noqa: E402
from timing import describe_copies, function_runner, of_copies, time_copies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("sizes", ["64", "128"], "Image sizes (light mode).")
flags.DEFINE_integer("width", 64, "ngf = ndf (official: 64).")
flags.DEFINE_integer("n-blocks", 4, "Residual blocks per side (official: 4).")
flags.DEFINE_integer("batch", 1, "Batch size (official: 1).")
flags.DEFINE_integer("iterations", 3, "Training iterations per timed repeat.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (median and best reported).")
flags.DEFINE_integer("instances", 2, "Copies of FQ off and FQ on, built in a balanced order and "
                     "averaged per repeat (identical copies run a few percent apart).")
flags.DEFINE_boolean("xla", False, "Compile the step with XLA (jit_compile=True).")


def training_step(size, fq):
    layers = ugatit.max_discriminator_layers(size)
    nets = ugatit.make_ugatit(light=True, img_size=size, ngf=FLAGS.width, ndf=FLAGS.width,
                              n_blocks=FLAGS['n-blocks'].value, fq="official" if fq else None,
                              global_layers=min(7, layers), local_layers=min(5, layers))
    trainer = UGATITTrainer(nets, (size, size, 3), iterations=1_000_000)
    batch = FLAGS.batch

    def one(a, b):
        sums, _ = trainer.train_step((a, b), batch)
        trainer.finish_step()
        return sums["g_loss"]

    step = tf.function(one, autograph=False, jit_compile=FLAGS.xla)

    rng = np.random.RandomState(0)
    args = tuple(tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
                 for _ in "AB")
    return step, args


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    sizes = [int(s) for s in FLAGS.sizes]
    if any(s % 4 or s < ugatit.min_discriminator_size(5) for s in sizes):
        raise app.UsageError(f"--sizes must be divisible by 4 and >= "
                             f"{ugatit.min_discriminator_size(5)} (the local discriminator).")
    print(f"U-GAT-IT light training iterations/s (batch {FLAGS.batch}, width {FLAGS.width}, "
          f"{FLAGS['n-blocks'].value} blocks, {FLAGS.iterations} iterations x {FLAGS.repeats} repeats, "
          f"XLA = {FLAGS.xla}, {len(tf.config.list_logical_devices('CPU'))} CPU device(s), "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU(s))", flush=True)

    def builder(size, fq):
        def build():
            step, args = training_step(size, fq)
            return function_runner(step, *args)   # sync reads the last iteration's loss: all done
        return build

    copies = FLAGS.instances
    rows = []
    for size in sizes:
        print(f"{size}x{size}:", flush=True)
        rows.append((size, time_copies({"FQ off": builder(size, False),
                                        "FQ on": builder(size, True)},
                                       copies, FLAGS.repeats, FLAGS.iterations)))
    print(f"{'':<22} {'median':-^17}   {'best':-^17}   ({of_copies(copies)})")
    print(f"{'size':<22} {'FQ off':>8} {'FQ on':>8}   {'FQ off':>8} {'FQ on':>8}")
    for size, (times, pooled) in rows:
        off, on = pooled["FQ off"], pooled["FQ on"]
        print(f"{f'{size}x{size} gD{min(7, ugatit.max_discriminator_layers(size))}':<22} "
              f"{1 / np.median(off):8.3f} {1 / np.median(on):8.3f}   "
              f"{1 / np.min(off):8.3f} {1 / np.min(on):8.3f}", flush=True)
    for size, (times, _) in rows:
        print(describe_copies(f"{size}x{size} FQ cost (on / off iteration time):", times,
                              "FQ on", "FQ off", copies))


if __name__ == "__main__":
    app.run(main)
