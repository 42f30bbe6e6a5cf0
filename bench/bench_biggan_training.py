"""FQ-BigGAN training speed: full CIFAR-size iterations per second with FQ on and off.

    python bench/bench_biggan_training.py                       # CIFAR size: ch 64, batch 64
    python bench/bench_biggan_training.py --ch 16 --batch 16    # a quicker look on a CPU

One iteration is exactly what `run_training.py --model biggan` runs (training/biggan.py's
compiled step): d_steps x (G forward, D on concat([fake, real]), hinge + FQ losses, Adam update,
one dictionary EMA update) + one G step + the G_ema update, fed by the shapes input pipeline.
Variants: BigGAN (no FQ), FQ-BigGAN with the CIFAR-10 dictionaries (D blocks 0-3, K = 1024) and
with the CIFAR-100 ones (K = 64). All are compiled first, then timed interleaved, round by round,
so load changes on a shared machine hit every variant alike. Printed: iterations/s from the
median and from the fastest round per variant, and FQ's overhead against the baseline (the
paper reports +1.2% to +3.1% training time for FQ-BigGAN on GPUs).
"""

import os
import time

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from timing import interleaved_times  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("ch", 64, "Channel multiplier (official CIFAR: 64).")
flags.DEFINE_integer("batch", 64, "Minibatch (official CIFAR: 64).")
flags.DEFINE_integer("d-steps", 4, "D steps per G step (official: 4).")
flags.DEFINE_integer("iterations", 2, "Iterations per timed round.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per variant (interleaved).")
flags.DEFINE_boolean("xla", False, "Compile the replica step with XLA.")

VARIANTS = (("BigGAN (no FQ)", None), ("FQ-BigGAN K=1024 (C10)", "cifar10"),
            ("FQ-BigGAN K=64 (C100)", "cifar100"))


def make_step(fq_preset, dataset):
    import keras
    from networks import biggan
    from training.biggan import compile_step
    from training.biggan_trainer import BigGANSettings, BigGANTrainer
    from training.loop import LogAccumulator
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    fq = biggan.PRESETS[fq_preset or "cifar10"]["fq"]
    layers = fq["layers"] if fq_preset else ()
    fq_kwargs = {k: v for k, v in fq.items() if k != "layers"}
    G = biggan.BigGANGenerator(ch=FLAGS.ch, num_classes=5, name="G")
    D = biggan.BigGANDiscriminator(ch=FLAGS.ch, num_classes=5, fq_layers=layers,
                                   fq_kwargs=fq_kwargs if layers else None, name="D")
    trainer = BigGANTrainer(G, D, BigGANSettings(d_steps=FLAGS['d-steps'].value))
    accumulator = LogAccumulator(trainer.log_keys())
    strategy = tf.distribute.get_strategy()
    step = compile_step(strategy, trainer, accumulator, FLAGS.batch, FLAGS.xla)
    iterator = iter(dataset.distribute(strategy, FLAGS.batch, 32, seed=0))
    return lambda: step(iterator), accumulator


def main(argv):
    del argv
    import datasets
    import tensorflow as tf
    dataset = datasets.open_dataset("shapes", resolution=32)
    print(f"BigGAN training iteration: ch {FLAGS.ch}, batch {FLAGS.batch}, {FLAGS['d-steps'].value} D "
          f"steps, XLA {'on' if FLAGS.xla else 'off'}, {len(tf.config.list_logical_devices())} "
          f"device(s), {os.cpu_count()} CPU(s)")
    steps = {}
    for name, preset in VARIANTS:
        run, accumulator = make_step(preset, dataset)
        start = time.perf_counter()
        run()
        accumulator.read_and_reset()  # waits for the step
        print(f"  compiled {name:24s} in {time.perf_counter() - start:6.1f} s", flush=True)
        steps[name] = (run, accumulator)
    times = interleaved_times({name: (run, accumulator.read_and_reset)
                               for name, (run, accumulator) in steps.items()},
                              FLAGS.rounds, FLAGS.iterations)
    base = VARIANTS[0][0]
    print(f"\n{'variant':26s} {'it/s median':>12s} {'it/s best':>10s} {'overhead median':>16s} "
          f"{'overhead best':>14s}")
    for name, _ in VARIANTS:
        median, best = np.median(times[name]), np.min(times[name])
        row = f"{name:26s} {1 / median:12.3f} {1 / best:10.3f}"
        if name != base:
            row += (f" {median / np.median(times[base]) - 1:+15.1%}"
                    f" {best / np.min(times[base]) - 1:+14.1%}")
        print(row)
    print("Paper (FQ-BigGAN, GPUs): +1.2% to +3.1% training time.")


if __name__ == "__main__":
    app.run(main)
