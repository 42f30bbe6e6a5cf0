"""Cost of style quantization per StyleGAN2 generator forward, for a few codebook sizes.

    python bench/bench_style_quantization.py [--batch 8] [--resolution 32] [--fmap-base 16384]
        [--num-codes 256,1024,4096] [--code-dim 4]

Measured side by side in one run, each a compiled tf.function, repeats interleaved, medians:
  G forward        mapping + synthesis (noise "const"), the reference cost;
  sq(w)            look-up of w (N, w_dim) before the broadcast to num_ws layers (the proposed
                   wiring), with its VQ losses;
  sq(dlatents)     the same on the broadcast dlatents (N, num_ws, w_dim): num_ws times the work;
  sq(w)+L_uf+grad  look-up, VQ losses and the uniformity loss (the (K, K) Gram matrix) with their
                   gradients: what the G step adds;
and prints each as a ratio to G forward.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from fq_keras import StyleQuantization, sq_generator_loss  # noqa: E402
from networks.stylegan2 import Generator  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Latents per forward.")
flags.DEFINE_integer("resolution", 32, "Generator output resolution.")
flags.DEFINE_integer("fmap-base", 16384, "Generator channel formula base (config-f: 16384).")
flags.DEFINE_integer("w-dim", 512, "Intermediate latent size.")
flags.DEFINE_integer("code-dim", 4, "Sub-vector length.")
flags.DEFINE_list("num-codes", ["256", "1024", "4096"], "Codebook sizes K to measure.")
flags.DEFINE_integer("repeats", 11, "Timed repeats of each function (median reported).")


def median_seconds(functions, argument, repeats):
    """Interleaved timing so every function sees the same machine load."""
    times = {name: [] for name in functions}
    for fn in functions.values():
        fn(argument)  # trace
        fn(argument)
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            tf.nest.map_structure(lambda t: t.numpy(), fn(argument))
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv):
    del argv
    G = Generator(z_dim=FLAGS['w-dim'].value, w_dim=FLAGS['w-dim'].value, resolution=FLAGS.resolution,
                  fmap_base=FLAGS['fmap-base'].value, seed=0)
    z = tf.random.normal((FLAGS.batch, FLAGS['w-dim'].value), seed=1)

    @tf.function
    def g_forward(latents):
        return G.synthesis(G.mapping(latents), noise_mode="const")

    functions = {"G forward": g_forward}
    for k in (int(value) for value in FLAGS['num-codes'].value):
        sq = StyleQuantization(k, FLAGS['code-dim'].value)
        sq.build((None, FLAGS['w-dim'].value))

        def on_w(latents, sq=sq):
            return sq.lookup(G.mapping(latents)[:, 0])["loss"]

        def on_dlatents(latents, sq=sq):
            return sq.lookup(G.mapping(latents))["loss"]

        def with_gradients(latents, sq=sq):
            with tf.GradientTape() as tape:
                w = G.mapping(latents)[:, 0]
                loss = sq_generator_loss(sq, sq.lookup(w))
            return tape.gradient(loss, sq.codebook)

        functions[f"sq(w) K={k}"] = tf.function(on_w)
        functions[f"sq(dlatents) K={k}"] = tf.function(on_dlatents)
        functions[f"sq(w)+L_uf+grad K={k}"] = tf.function(with_gradients)
    # The mapping network alone, so that the look-up's own share can be read off.
    functions["mapping only"] = tf.function(lambda latents: G.mapping(latents)[:, 0])

    print(f"StyleGAN2 G at {FLAGS.resolution}x{FLAGS.resolution}, fmap_base {FLAGS['fmap-base'].value}, "
          f"batch {FLAGS.batch}, w_dim {FLAGS['w-dim'].value}, num_ws {G.num_ws}, code_dim "
          f"{FLAGS['code-dim'].value} ({FLAGS['w-dim'].value // FLAGS['code-dim'].value} sub-vectors per w)")
    times = median_seconds(functions, z, FLAGS.repeats)
    for name, seconds in times.items():
        print(f"{name:>26}: {seconds * 1e3:8.2f} ms   ratio to G forward: "
              f"{seconds / times['G forward']:.3f}")


if __name__ == "__main__":
    app.run(main)
