"""Nearest-code machinery shared by every quantiser in this package.

A codebook is a float32 matrix `E` of shape (K, C): one row per item. Inputs are flattened to
(N, C) first. Everything here is written so that no (N, K, C) tensor is ever built: distances use
the expansion ||h - e||^2 = ||h||^2 - 2 h.e + ||e||^2, i.e. one (N, C) x (C, K) matrix product.
"""

import tensorflow as tf


def squared_distances(flat_inputs, codebook):
    """Squared Euclidean distances between every input vector and every codebook item.

    Args:
      flat_inputs: float32 (N, C).
      codebook: float32 (K, C).

    Returns:
      float32 (N, K): ||h_i||^2 - 2 h_i.e_k + ||e_k||^2 (FQ-GAN official code, item 5).
    """
    input_norms = tf.reduce_sum(tf.square(flat_inputs), axis=1, keepdims=True)  # [N, 1]
    code_norms = tf.reduce_sum(tf.square(codebook), axis=1)  # [K]
    cross = tf.matmul(flat_inputs, codebook, transpose_b=True)  # [N, K]
    return input_norms - 2.0 * cross + code_norms[tf.newaxis, :]


def nearest_code_indices(flat_inputs, codebook):
    """Index of the nearest codebook item for each row of `flat_inputs` (first index on ties).

    Args:
      flat_inputs: float32 (N, C).
      codebook: float32 (K, C).

    Returns:
      int32 (N,).

    ||h_i||^2 is the same for every item of row i, so it is left out of the arg-min: one pass
    over the (N, K) matrix less (about 25% of the look-up time at N = 8192, K = 1024, C = 256).
    The arg-min of d_ik = ||e_k||^2 - 2 h_i.e_k is taken as the arg-max of -d_ik / 2 =
    h_i.e_k - ||e_k||^2 / 2, with the halved norms added as a bias, which the graph optimizer
    fuses into the matrix product: the scores take one (N, K) pass and are exactly -d_ik / 2
    (halving and negation are exact, and rounding to nearest commutes with both), so the choice
    is the one the distances make. The arg-max is `top_k` with k = 1, which returns the first of
    equal values as `argmin` does, at about half the cost of TensorFlow's arg-min kernel on CPU
    (26 vs 48 us for (512, 128)).

    Kept as separate TensorFlow ops on purpose: the look-up with the commitment loss and its
    gradient as XLA computations (scores, arg-max, gather, per-sample mean and the gradient
    fused; jit_compile) took 1.04-1.13x the time of these ops for the reference setting's
    (32, 16, 16, 256) features into 128 items, and 1.08-1.09x with the matrix product left to
    oneDNN (AMD EPYC, 2 cores, 2026-12-06, interleaved): XLA's CPU dot runs at Eigen's speed,
    below oneDNN's, and its fused loops were no faster than the ops they replaced.
    """
    half_norms = tf.reduce_sum(tf.square(codebook), axis=1) * -0.5  # [K]: -||e_k||^2 / 2
    scores = tf.nn.bias_add(tf.matmul(flat_inputs, codebook, transpose_b=True), half_norms)
    return tf.reshape(tf.math.top_k(scores, k=1, sorted=False).indices, [-1])  # [N]


def code_counts(indices, num_codes):
    """How many inputs picked each item: float32 (K,) from int32 indices of any shape.

    One `Bincount` kernel with float32 weights of length 0 (= every weight 1), which returns
    float32 counts directly: `tf.math.bincount`'s wrapper adds five small ops to find the output
    size, and a segment sum of ones reads a weight per index."""
    return tf.raw_ops.Bincount(arr=tf.reshape(indices, [-1]), size=num_codes,
                               weights=tf.zeros([0], tf.float32))


# code_sums' XLA scatter from this many input elements (N * C) on (2 MB of float32 features):
# the reference setting's (2048, 256) and (8192, 256) features, not the demo's (128, 64).
XLA_SUMS_MIN_ELEMENTS = 2 ** 19


def code_sums(flat_inputs, indices, num_codes):
    """Sum of the inputs assigned to each item: float32 (K, C); the (N, K) one-hot is never built.

    flat_inputs: (N, C), C static; indices: int32 of N elements, any shape, each in [0, K)
    (InvalidArgumentError otherwise). The rows are added into their items one after another in
    row order, as TensorFlow's `ScatterNd` (add) and `unsorted_segment_sum` kernels do (the same
    bits), by TensorFlow's `ScatterNd`, or for N * C >= XLA_SUMS_MIN_ELEMENTS (N static) by one
    XLA computation (`_row_order_sums`).

    Why the size rule (Intel Xeon family 6 model 167, 2 cores, 2026-12-07): XLA's scatter is one
    pass over the rows, 0.25-0.39x the time of `ScatterNd` for (8192, 128) and (32768, 64) into
    128 items and 0.54-0.64x for 2048 rows, timed alone (FQ's own work per 32² reference
    iteration 15.1 -> 12.9 ms; 15.4 against 16.0 ms with ScatterNd for the (2048, 256) block),
    but each call of a compiled function costs its launch: in the StyleGAN2 demo's step ((128,
    64) into 128 items, one thread per op, bfloat16) the XLA sums made the iteration 1.4% and
    0.5% longer than `ScatterNd` in two runs (+- 0.4; 6 copies x 20 repeats interleaved each),
    while in the reference setting's step they were level with it (0.998x +- 0.2).
    """
    indices = tf.reshape(indices, [-1])
    rows, channels = flat_inputs.shape[0], flat_inputs.shape[-1]
    if rows is None or rows * channels < XLA_SUMS_MIN_ELEMENTS:
        return tf.scatter_nd(indices[:, tf.newaxis], flat_inputs, [num_codes, channels])
    # XLA drops out-of-range indices silently where ScatterNd raises: check them. A negative
    # index wraps to a large unsigned one, so one comparison checks both ends. A bare Assert:
    # tf.debugging.assert_less's summary ops cost ~12 ms more per traced function.
    in_range = tf.reduce_all(tf.less(tf.bitcast(indices, tf.uint32),
                                     tf.constant(num_codes, tf.uint32)))
    check = tf.debugging.Assert(in_range, [f"code_sums: item indices must be in [0, {num_codes})"])
    with tf.control_dependencies([check]):
        return _row_order_sums(flat_inputs, indices, num_codes)


@tf.function(jit_compile=True, autograph=False)
def _row_order_sums(flat_inputs, indices, num_codes):
    """`unsorted_segment_sum` as one XLA computation (num_codes a Python int: static)."""
    return tf.math.unsorted_segment_sum(flat_inputs, indices, num_codes)


def batch_loss(lookups, global_batch_size=None):
    """Sum over look-ups of their per-sample losses' batch mean: float32 scalar (0 for none).

    Args:
      lookups: sequence of look-up results, each a dict with "per_sample_loss", float32 (N,).
      global_batch_size: under tf.distribute, the batch size summed over replicas: each
        look-up's per-sample losses are summed and divided by it, so gradients summed over
        replicas equal one device's with the global batch. None = the mean over this batch.
    """
    total = tf.constant(0.0, tf.float32)
    for result in lookups:
        per_sample = result["per_sample_loss"]
        if global_batch_size is None:
            total += tf.reduce_mean(per_sample)
        else:
            total += tf.reduce_sum(per_sample) / tf.cast(global_batch_size, tf.float32)
    return total


def perplexity_from_counts(counts):
    """exp(-sum p log(p + 1e-10)) with p = counts / sum(counts), as the official FQ code.

    K for uniform use of K items, 1 when a single item is used. float32 scalar.
    """
    probs = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    return tf.exp(-tf.reduce_sum(probs * tf.math.log(probs + 1e-10)))


def unused_fraction_from_counts(counts):
    """Fraction of items no input picked (the dictionary's "dead" items). float32 scalar."""
    return tf.reduce_mean(tf.cast(tf.equal(counts, 0.0), tf.float32))
