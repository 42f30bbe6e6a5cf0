"""StyleGAN2 training throughput with SQ-GAN style quantization on vs off, side by side.

    python bench/bench_sq_training.py [--resolution 32] [--config demo] [--batch 16]
        [--sq-codebook 1024] [--repeats 8] [--instances 2] [--xla]

Variants, built in one process from run_training.py's options, --instances copies of each in a
balanced order, and timed interleaved (each repeat runs every copy once, after an untimed
warm-up step; bench/timing.time_copies), so the ratios compare like with like on a shared
machine:
  SQ off           FQ-StyleGAN2 as without --sq (the reference);
  SQ on            --sq: quantised w and w2, VQ + uniformity loss, usage counts, and the
                   consistency term (one more mapping, synthesis and D pass per D step);
  SQ on, no CR     --sq --sq-cr-weight 0: what the quantiser itself costs;
each one full iteration of the common case (G main + D main; lazy R1 / path length excluded).
Printed: ms/step and img/s per variant (median of the repeats, each repeat's mean over the
copies), and each SQ variant's step time over SQ off as the median of the repeats' paired
ratios, with the errors over the repeats and between copies.
"""

import functools

import bench_env  # the repository root on sys.path

bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from training.stylegan import TrainingOptions, build_networks, build_trainer  # noqa: E402
from timing import describe_copies, of_copies, time_copies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("resolution", 32, "Training resolution.")
flags.DEFINE_string("config", "demo", "Width preset (demo, e, f).")
flags.DEFINE_integer("batch", 16, "Global minibatch.")
flags.DEFINE_integer("sq-codebook", 1024, "Codebook entries K.")
flags.DEFINE_integer("repeats", 8, "Timed repeats per variant (median reported).")
flags.DEFINE_integer("instances", 2, "Copies of each variant, built in a balanced order and "
                     "averaged per repeat (identical copies run a few percent apart).")
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
    options = {"SQ off": dict(sq=False), "SQ on": dict(sq=True),
               "SQ on, no CR": dict(sq=True, sq_cr_weight=0.0)}

    def builder(sq_options):
        def build():
            step = make_step(**sq_options)
            # An eager call of a tf.function returns when the step is done: nothing to wait for.
            return functools.partial(step, reals, labels), lambda: None
        return build

    copies = FLAGS.instances
    times, pooled = time_copies({name: builder(o) for name, o in options.items()}, copies,
                                FLAGS.repeats)
    w_dim = TrainingOptions(config=FLAGS.config).preset("latent_dim")
    print(f"StyleGAN2 --config {FLAGS.config} at {res}x{res}, batch {batch}, w_dim {w_dim}, "
          f"K {FLAGS['sq-codebook'].value}, code_dim 4, XLA {'on' if FLAGS.xla else 'off'}, "
          f"{FLAGS.repeats} repeats, {of_copies(copies)}")
    for name, values in pooled.items():
        seconds = float(np.median(values))
        print(f"{name:>14}: {seconds * 1e3:8.1f} ms/step  {batch / seconds:7.1f} img/s")
    for name in ("SQ on", "SQ on, no CR"):
        print(describe_copies(f"{name:>14} / SQ off step time:", times, name, "SQ off", copies))


if __name__ == "__main__":
    app.run(main)
