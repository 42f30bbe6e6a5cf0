"""Cost of one FeatureQuantization step (lookup + EMA update) against one 3x3 convolution.

    python bench/bench_fq.py [--batch 2] [--resolution 64] [--channels 256] [--num-embeddings 1024]

Both are measured side by side in one run, on the same (batch, R, R, C) feature map, each as a
compiled tf.function; repeats are interleaved and the median is reported. It also inspects the
traced graph of the FQ step and prints its largest intermediate tensor, to show that distances are
matrix products: nothing of size N*K*C is ever built.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from fq_keras import FeatureQuantization  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 2, "Feature maps per step.")
flags.DEFINE_integer("resolution", 64, "Feature map height and width.")
flags.DEFINE_integer("channels", 256, "Feature channels C (conv in = out = C).")
flags.DEFINE_integer("num-embeddings", 1024, "Dictionary size K.")
flags.DEFINE_integer("repeats", 15, "Timed repeats of each function (median reported).")
flags.DEFINE_boolean("xla", False, "Compile both functions with XLA (jit_compile=True).")


def largest_tensor_elements(concrete_function):
    graph = concrete_function.graph
    return max(int(np.prod(t.shape.as_list())) for op in graph.get_operations()
               for t in op.outputs if t.shape.rank and t.shape.is_fully_defined())


def median_seconds(functions, argument, repeats):
    """Interleaved timing so both functions see the same machine load."""
    times = {name: [] for name in functions}
    for fn in functions.values():
        fn(argument)  # trace / compile
        fn(argument)
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            result = fn(argument)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv):
    del argv
    B, R, C, K = FLAGS.batch, FLAGS.resolution, FLAGS.channels, FLAGS['num-embeddings'].value
    h = tf.random.normal((B, R, R, C))
    conv = keras.layers.Conv2D(C, 3, padding="same")
    conv.build(h.shape)
    fq = FeatureQuantization(K)
    fq.build(h.shape)

    @tf.function(jit_compile=FLAGS.xla)
    def conv_step(x):
        return conv(x)

    @tf.function(jit_compile=FLAGS.xla)
    def fq_step(x):
        result = fq.lookup(x)
        fq.update_dictionary(x, result["indices"])
        return result["loss"]

    @tf.function(jit_compile=FLAGS.xla)
    def fq_lookup_only(x):
        return fq.lookup(x)["loss"]

    N = B * R * R
    largest = largest_tensor_elements(fq_step.get_concrete_function(tf.TensorSpec(h.shape)))
    print(f"Feature map {B}x{R}x{R}x{C} (N = {N} vectors), K = {K}, XLA = {FLAGS.xla}")
    print(f"Largest tensor in the FQ step graph: {largest:,} elements "
          f"({largest * 4 / 2**20:.1f} MiB float32) = N*K = {N * K:,}; an (N, K, C) tensor would "
          f"be {N * K * C:,} elements ({N * K * C * 4 / 2**30:.1f} GiB).")

    times = median_seconds({"conv3x3": conv_step, "fq_lookup": fq_lookup_only,
                            "fq_lookup+update": fq_step}, h, FLAGS.repeats)
    for name, seconds in times.items():
        print(f"{name:>18}: {seconds * 1e3:8.2f} ms   ratio to conv3x3: "
              f"{seconds / times['conv3x3']:.3f}")


if __name__ == "__main__":
    app.run(main)
