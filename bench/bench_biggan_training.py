"""FQ-BigGAN training speed: full CIFAR-size iterations per second with FQ on and off.

    python bench/bench_biggan_training.py                       # CIFAR size: ch 64, batch 64
    python bench/bench_biggan_training.py --ch 16 --batch 16    # a quicker look on a CPU

One iteration is exactly what `run_training.py --model biggan` runs (training/biggan.py's
compiled step): d_steps x (G forward, D on concat([fake, real]), hinge + FQ losses, Adam update,
one dictionary EMA update) + one G step + the G_ema update, fed by the shapes input pipeline.
Variants: BigGAN (no FQ), FQ-BigGAN with the CIFAR-10 dictionaries (D blocks 0-3, K = 1024) and
with the CIFAR-100 ones (K = 64). Each variant is built in --instances copies in a balanced order
and compiled (bench/timing.time_copies), then all are timed interleaved, round by round (each
after an untimed warm-up iteration), so load changes on a shared machine hit every variant
alike. Printed: iterations/s per variant from the median and from the fastest round (each
round's mean over the copies), and FQ's overhead against the baseline as the median of the
rounds' paired ratios, with the errors over the rounds and between copies (the paper reports
+1.2% to +3.1% training time for FQ-BigGAN on GPUs).
"""

import os

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from timing import describe_copies, of_copies, time_copies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("ch", 64, "Channel multiplier (official CIFAR: 64).")
flags.DEFINE_integer("batch", 64, "Minibatch (official CIFAR: 64).")
flags.DEFINE_integer("d-steps", 4, "D steps per G step (official: 4).")
flags.DEFINE_integer("iterations", 2, "Iterations per timed round.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per variant (interleaved).")
flags.DEFINE_integer("instances", 2, "Copies of each variant, built in a balanced order and "
                     "averaged per round (identical copies run a few percent apart).")
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

    def builder(preset):
        def build():
            run, accumulator = make_step(preset, dataset)
            return run, accumulator.read_and_reset   # reading the logs waits for the step
        return build

    copies = FLAGS.instances
    times, pooled = time_copies({name: builder(preset) for name, preset in VARIANTS}, copies,
                                FLAGS.rounds, FLAGS.iterations)
    base = VARIANTS[0][0]
    print(f"\n{'variant':26s} {'it/s median':>12s} {'it/s best':>10s}   "
          f"({FLAGS.rounds} rounds x {FLAGS.iterations} iterations, {of_copies(copies)})")
    for name, _ in VARIANTS:
        print(f"{name:26s} {1 / np.median(pooled[name]):12.3f} {1 / np.min(pooled[name]):10.3f}")
    for name, _ in VARIANTS[1:]:
        print(describe_copies(f"{name} / no FQ iteration time:", times, name, base, copies))
    print("Paper (FQ-BigGAN, GPUs): +1.2% to +3.1% training time.")


if __name__ == "__main__":
    app.run(main)
