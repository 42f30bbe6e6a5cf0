"""StyleGAN2 training throughput with SQ-GAN style quantization on vs off, side by side.

    python bench/bench_sq_training.py [--resolution 32] [--config demo] [--batch 16]
        [--sq-codebook 1024] [--repeats 8] [--xla]

Variants, built in one process from run_training.py's options and timed interleaved (each
repeat runs every variant once; medians), so the ratios compare like with like on a shared
machine:
  SQ off           FQ-StyleGAN2 as without --sq (the reference);
  SQ on            --sq: quantised w and w2, VQ + uniformity loss, usage counts, and the
                   consistency term (one more mapping, synthesis and D pass per D step);
  SQ on, no CR     --sq --sq-cr-weight 0: what the quantiser itself costs;
each one full iteration of the common case (G main + D main; lazy R1 / path length excluded).
"""

import functools

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from training.stylegan import TrainingOptions, build_networks, build_trainer  # noqa: E402
from timing import interleaved_times  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("resolution", 32, "Training resolution.")
flags.DEFINE_string("config", "demo", "Width preset (demo, e, f).")
flags.DEFINE_integer("batch", 16, "Global minibatch.")
flags.DEFINE_integer("sq-codebook", 1024, "Codebook entries K.")
flags.DEFINE_integer("repeats", 8, "Timed repeats per variant (median reported).")
flags.DEFINE_boolean("xla", False, "Compile the steps with XLA.")


def make_step(**sq_options):
    options = TrainingOptions(resolution=FLAGS.resolution, config=FLAGS.config, channels=3,
                              sq_codebook=FLAGS['sq-codebook'].value, **sq_options)
    G, D = build_networks(options, 3, 0)
    trainer = build_trainer(options, G, D)
    batch = FLAGS.batch

    @tf.function(jit_compile=FLAGS.xla)
    def step(reals, labels):
        trainer.train_step((reals, labels), FLAGS.resolution, batch)
        trainer.finish_step(batch)

    return step


def main(argv):
    del argv
    res, batch = FLAGS.resolution, FLAGS.batch
    rng = np.random.RandomState(0)
    reals = tf.constant(np.tanh(rng.randn(batch, res, res, 3)).astype(np.float32))
    labels = tf.zeros((batch, 0))
    variants = {"SQ off": make_step(sq=False), "SQ on": make_step(sq=True),
                "SQ on, no CR": make_step(sq=True, sq_cr_weight=0.0)}
    for step in variants.values():  # trace and warm up
        step(reals, labels)
        step(reals, labels)
    # An eager call of a tf.function returns when the step is done: nothing to wait for.
    times = interleaved_times({name: (functools.partial(step, reals, labels), lambda: None)
                               for name, step in variants.items()}, FLAGS.repeats)
    w_dim = TrainingOptions(config=FLAGS.config).preset("latent_dim")
    print(f"StyleGAN2 --config {FLAGS.config} at {res}x{res}, batch {batch}, w_dim {w_dim}, "
          f"K {FLAGS['sq-codebook'].value}, code_dim 4, XLA {'on' if FLAGS.xla else 'off'}, "
          f"{FLAGS.repeats} repeats")
    reference = float(np.median(times["SQ off"]))
    for name, values in times.items():
        seconds = float(np.median(values))
        print(f"{name:>14}: {seconds * 1e3:8.1f} ms/step  {batch / seconds:7.1f} img/s  "
              f"time ratio to SQ off: {seconds / reference:.3f}")


if __name__ == "__main__":
    app.run(main)
