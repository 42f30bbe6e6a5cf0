"""Cost of one FeatureQuantization step (lookup + EMA update) against one 3x3 convolution.

    python bench/bench_fq.py [--batch 2] [--resolution 64] [--channels 256] [--num-embeddings 1024]
                             [--repeats 15] [--instances 2]

Both are measured side by side in one run, on the same (batch, R, R, C) feature map, each as a
compiled tf.function built in --instances copies in a balanced order; repeats are interleaved,
each after an untimed warm-up call (bench/timing.time_copies), and the median of each repeat's
mean over the copies is reported in ms, each FQ step's ratio to the conv as the median of the
repeats' paired ratios, with the errors over the repeats and between copies. It also inspects
the traced graph of the FQ step and prints its largest intermediate tensor, to show that
distances are matrix products: nothing of size N*K*C is ever built.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from fq_keras import FeatureQuantization  # noqa: E402
from timing import describe_copies, function_runner, time_copies  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 2, "Feature maps per step.")
flags.DEFINE_integer("resolution", 64, "Feature map height and width.")
flags.DEFINE_integer("channels", 256, "Feature channels C (conv in = out = C).")
flags.DEFINE_integer("num-embeddings", 1024, "Dictionary size K.")
flags.DEFINE_integer("repeats", 15, "Timed repeats of each function (median reported).")
flags.DEFINE_integer("instances", 2, "Copies of each function (each with its own layer), built "
                     "in a balanced order and averaged per repeat (identical copies run a few "
                     "percent apart).")
flags.DEFINE_boolean("xla", False, "Compile both functions with XLA (jit_compile=True).")


def largest_tensor_elements(concrete_function):
    graph = concrete_function.graph
    return max(int(np.prod(t.shape.as_list())) for op in graph.get_operations()
               for t in op.outputs if t.shape.rank and t.shape.is_fully_defined())


def conv_step(channels, shape):
    """A compiled 3x3 convolution, channels -> channels, 'same' padding, of a fresh layer."""
    conv = keras.layers.Conv2D(channels, 3, padding="same")
    conv.build(shape)

    @tf.function(jit_compile=FLAGS.xla)
    def step(x):
        return conv(x)
    return step


def fq_step(num_embeddings, shape, update):
    """A compiled look-up of a fresh FeatureQuantization (K = num_embeddings), returning the FQ
    loss; with the dictionary's EMA update after it if `update`."""
    fq = FeatureQuantization(num_embeddings)
    fq.build(shape)

    @tf.function(jit_compile=FLAGS.xla)
    def step(x):
        result = fq.lookup(x)
        if update:
            fq.update_dictionary(x, result["indices"])
        return result["loss"]
    return step


def main(argv):
    del argv
    B, R, C, K = FLAGS.batch, FLAGS.resolution, FLAGS.channels, FLAGS['num-embeddings'].value
    h = tf.random.normal((B, R, R, C))
    N = B * R * R
    largest = largest_tensor_elements(
        fq_step(K, h.shape, True).get_concrete_function(tf.TensorSpec(h.shape)))
    print(f"Feature map {B}x{R}x{R}x{C} (N = {N} vectors), K = {K}, XLA = {FLAGS.xla}")
    print(f"Largest tensor in the FQ step graph: {largest:,} elements "
          f"({largest * 4 / 2**20:.1f} MiB float32) = N*K = {N * K:,}; an (N, K, C) tensor would "
          f"be {N * K * C:,} elements ({N * K * C * 4 / 2**30:.1f} GiB).")

    copies = FLAGS.instances
    builders = {"conv3x3": lambda: function_runner(conv_step(C, h.shape), h),
                "fq_lookup": lambda: function_runner(fq_step(K, h.shape, False), h),
                "fq_lookup+update": lambda: function_runner(fq_step(K, h.shape, True), h)}
    times, pooled = time_copies(builders, copies, FLAGS.repeats)
    for name, seconds in pooled.items():
        line = f"{name:>18}: {np.median(seconds) * 1e3:8.2f} ms"
        if name != "conv3x3":
            line = describe_copies(line + "   ratio to conv3x3:", times, name, "conv3x3", copies)
        print(line)

if __name__ == "__main__":
    app.run(main)
