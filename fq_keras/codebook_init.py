"""Knowledge-enhanced codebook initialisation (CBI) for style quantization, by optimal transport.

SQ-GAN pre-trains its codebook before GAN training so that the codes describe the training set:
it minimises an entropic optimal-transport (Sinkhorn) distance between foundation-model (CLIP)
image features of the training images and features of the codes (`../shared/reference/sqgan.md`).

Deviation from the paper (documented in the README): the paper maps the codes through an MLP into
CLIP's *text* encoder. CLIP weights cannot be downloaded here, so the image features are a
user-supplied array (one row per training image, computed elsewhere, e.g. CLIP image embeddings
saved with `np.save`) and a small MLP maps each code *directly* into that feature space.

The step, repeated `steps` times with Adam on the codebook and the MLP:

    f_i = feature of image i, l2-normalised           (B, F)  B images (all, or a random batch)
    g_k = MLP(c_k), l2-normalised (c^_k if hyperspherical)   (K, F)
    C_ik = ||f_i - g_k||^2  (in [0, 4] after normalisation; = 2 - 2 cos)
    P = argmin_{P in U(1/B, 1/K)} <P, C> - epsilon H(P)         log-domain Sinkhorn
    loss = <P, sg-free C>  with P held fixed

Holding P fixed gives the exact gradient of the entropic OT objective with respect to the cost
(envelope theorem), without back-propagating through the Sinkhorn iterations.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from fq_keras import codebook as codebook_ops
from fq_keras.style_quantization import normalize_codes


def validate_image_features(features, source="features"):
    """Checks an image-feature array and returns it as float32 (N, F).

    Raises ValueError naming `source` and the fix when the array is not 2-D, has fewer than two
    rows or no columns, is not numeric, or holds NaN / inf values.
    """
    array = np.asarray(features)
    if array.dtype.kind not in "fiu":
        raise ValueError(
            f"CBI: {source} must hold numbers (float feature vectors), got dtype {array.dtype}.")
    if array.ndim != 2:
        raise ValueError(
            f"CBI: {source} must be a 2-D array (num_images, feature_dim), got shape "
            f"{array.shape}. Save one feature vector per training image, e.g. "
            "np.save(path, features.reshape(len(features), -1)).")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(
            f"CBI: {source} needs at least 2 images and 1 feature, got shape {array.shape}.")
    finite = np.isfinite(array).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"CBI: {source} has non-finite values (NaN or inf) in {bad.size} of {array.shape[0]} "
            f"rows (first: row {bad[0]}). Recompute those features or drop the rows.")
    return array.astype(np.float32)


def load_image_features(path):
    """Reads a `.npy` array of image features (N, F) and validates it (float32 result).

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a plain
    `.npy` array or fails `validate_image_features`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CBI: image-feature file '{path}' does not exist. Pass a .npy array of shape "
            "(num_images, feature_dim) computed from the training images (e.g. CLIP image "
            "embeddings), or skip codebook initialisation to start from a random codebook.")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(
            f"CBI: '{path}' is not a readable .npy array ({error}). Save the features with "
            "np.save(path, features) as a numeric (num_images, feature_dim) array.") from None
    if isinstance(array, np.lib.npyio.NpzFile):
        array.close()
        raise ValueError(f"CBI: '{path}' is an .npz archive; save one array with np.save.")
    return validate_image_features(array, source=f"'{path}'")


#----------------------------------------------------------------------------
# Entropic optimal transport.


def _row_update(target_potential, cost, epsilon, log_source):
    """f_i = eps log a_i - eps LSE_j((g_j - C_ij) / eps)."""
    return epsilon * (log_source - tf.reduce_logsumexp(
        (target_potential[tf.newaxis, :] - cost) / epsilon, axis=1))


def _column_update(source_potential, cost, epsilon, log_target):
    """g_j = eps log b_j - eps LSE_i((f_i - C_ij) / eps)."""
    return epsilon * (log_target - tf.reduce_logsumexp(
        (source_potential[:, tf.newaxis] - cost) / epsilon, axis=0))


def sinkhorn(cost, epsilon=0.05, max_iterations=1000, tolerance=1e-5,
             initial_target_potential=None):
    """Entropic OT between uniform marginals, log-domain Sinkhorn iterations.

    Solves min_P <P, C> - epsilon H(P) over plans P >= 0 with row sums 1/N and column sums 1/K.
    The iterations update the dual potentials f (N,), g (K,) with log-sum-exps, so small
    epsilon never underflows (the plain kernel exp(-C / epsilon) does for C / epsilon > ~87 in
    float32). P_ij = exp((f_i + g_j - C_ij) / epsilon).

    Args:
      cost: (N, K) cost matrix (float32 math; no gradient is taken through the iterations).
      epsilon: entropic regularisation, > 0, in the units of the cost.
      max_iterations: upper bound on the iterations (each updates f then g).
      tolerance: stop when every row sum is within `tolerance` of 1/N relative (the column sums
        are exact after each g update).
      initial_target_potential: optional (K,) g to start from (warm start across CBI steps).

    Returns:
      dict: plan (N, K) float32; transport_cost <P, C> (float32 scalar); source_potential f,
      target_potential g; iterations (int32, the number of f-and-g updates that produced the
      returned potentials); marginal_error, the largest relative deviation
      of any row or column sum of the returned plan from its uniform marginal.
    """
    if not float(epsilon) > 0.0:
        raise ValueError(f"sinkhorn: epsilon must be > 0, got {epsilon!r}.")
    if int(max_iterations) < 1:
        raise ValueError(f"sinkhorn: max_iterations must be >= 1, got {max_iterations!r}.")
    cost = tf.stop_gradient(tf.cast(cost, tf.float32))
    num_rows, num_cols = tf.shape(cost)[0], tf.shape(cost)[1]
    log_source = -tf.math.log(tf.cast(num_rows, tf.float32))
    log_target = -tf.math.log(tf.cast(num_cols, tf.float32))
    eps = tf.constant(float(epsilon), tf.float32)
    if initial_target_potential is None:
        g = tf.zeros([num_cols], tf.float32)
    else:
        g = tf.cast(tf.convert_to_tensor(initial_target_potential), tf.float32)
    # One half-step first, so every (f, g) pair in the loop has exact column sums.
    f = _row_update(g, cost, eps, log_source)
    g = _column_update(f, cost, eps, log_target)

    def keep_going(i, f, g, error, f_out, g_out):
        return tf.logical_and(i < max_iterations, error > tolerance)

    def step(i, f, g, error, f_out, g_out):
        f_new = _row_update(g, cost, eps, log_source)
        # Row sums of the plan (f, g) are a_i exp((f_i - f_new_i) / eps): its error comes free.
        error = tf.reduce_max(tf.abs(tf.math.expm1((f - f_new) / eps)))
        g_new = _column_update(f_new, cost, eps, log_target)
        return i + 1, f_new, g_new, error, f, g

    iterations, _, _, _, f, g = tf.while_loop(
        keep_going, step,
        (tf.constant(0), f, g, tf.constant(np.inf, tf.float32), f, g))
    plan = tf.exp((f[:, tf.newaxis] + g[tf.newaxis, :] - cost) / eps)
    row_sums = tf.reduce_sum(plan, axis=1) * tf.cast(num_rows, tf.float32)  # 1 when exact
    col_sums = tf.reduce_sum(plan, axis=0) * tf.cast(num_cols, tf.float32)
    row_error = tf.reduce_max(tf.abs(row_sums - 1.0))
    col_error = tf.reduce_max(tf.abs(col_sums - 1.0))
    return {
        "plan": plan,
        "transport_cost": tf.reduce_sum(plan * cost),
        "source_potential": f,
        "target_potential": g,
        "iterations": iterations,
        "marginal_error": tf.maximum(row_error, col_error),
    }


#----------------------------------------------------------------------------
# Codebook initialisation.


def make_code_mapper(code_dim, feature_dim, hidden_units=256, num_hidden_layers=2, seed=None):
    """The MLP code (d,) -> feature (F,): `num_hidden_layers` Dense + LeakyReLU(0.2), then Dense.

    Always float32 (it never runs under the mixed-precision policy's float16).
    """
    inputs = keras.Input((code_dim,), dtype="float32")
    x = inputs
    for i in range(num_hidden_layers):
        init = keras.initializers.HeNormal(seed=None if seed is None else seed + i)
        x = keras.layers.Dense(hidden_units, kernel_initializer=init, dtype="float32")(x)
        x = keras.layers.LeakyReLU(negative_slope=0.2, dtype="float32")(x)
    init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + num_hidden_layers)
    outputs = keras.layers.Dense(feature_dim, kernel_initializer=init, dtype="float32")(x)
    return keras.Model(inputs, outputs, name="cbi_code_mapper")


def initialize_codebook(layer, features, steps=500, learning_rate=1e-3, epsilon=0.05,
                        batch_size=None, mapper=None, hidden_units=256, seed=0,
                        max_sinkhorn_iterations=100, tolerance=1e-4):
    """Runs CBI: `steps` Adam steps on the codebook (and the MLP) minimising the Sinkhorn cost.

    Args:
      layer: a StyleQuantization layer (built or not), possibly created under a
        MirroredStrategy; CBI runs on a one-device copy and assigns the result to the layer's
        codebook. The MLP sees the codes the synthesis would see: unit-norm entries when
        hyperspherical.
      features: (N, F) image features, an array or the path of a `.npy` file.
      steps: number of CBI steps (>= 1).
      learning_rate: Adam's learning rate for the codebook and the MLP.
      epsilon: Sinkhorn's entropic regularisation on the cost ||f^ - g^||^2 in [0, 4].
      batch_size: images per step, drawn at random without replacement (None or >= N: all).
      mapper: the code -> feature model (default: `make_code_mapper(d, F, hidden_units)`).
        Pass your own to keep it after CBI.
      seed: seeds the default MLP's initialisation and the image batches.
      max_sinkhorn_iterations, tolerance: per step, see `sinkhorn`. Each step starts from the
        previous step's potentials, so the plans converge over the steps even when a step stops
        at the cap: as the codes cluster, the cost spreads to many times epsilon and an exact
        plan can need thousands of iterations, while the capped plans, within ~1% of the
        marginals, give the same cost curve (measured: N = 1000, K = 1024, F = 512).

    Returns:
      dict of float64 numpy arrays (steps,), each step's values before its update:
      transport_cost (<P, C>, the CBI loss history), marginal_error (largest relative deviation
      of the plan's row/column sums from uniform) and sinkhorn_iterations.

    Raises:
      ValueError / FileNotFoundError for bad features, RuntimeError inside a strategy scope,
      FloatingPointError if the cost or the codebook becomes non-finite; in every case the
      layer's codebook is left unchanged (it is only written after the last step).
    """
    if isinstance(features, (str, os.PathLike)):
        features = load_image_features(features)
    else:
        features = validate_image_features(features)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"initialize_codebook: steps must be an integer >= 1, got {steps!r}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 2):
        raise ValueError(
            f"initialize_codebook: batch_size must be None or an integer >= 2, got {batch_size!r}.")
    if tf.distribute.has_strategy():
        raise RuntimeError(
            "initialize_codebook: call it outside `strategy.scope()` (CBI runs on one device; "
            "the result is then assigned to every replica's codebook).")
    if not layer.built:
        layer.build()
    num_images, feature_dim = features.shape
    batch = num_images if batch_size is None else min(batch_size, num_images)
    if mapper is None:
        mapper = make_code_mapper(layer.code_dim, feature_dim, hidden_units, seed=seed)
    mapped_dim = mapper.compute_output_shape((None, layer.code_dim))[-1]
    if mapped_dim != feature_dim:
        raise ValueError(f"initialize_codebook: the mapper outputs {mapped_dim} features but the "
                         f"image features have {feature_dim}.")

    unit_features = tf.constant(features / np.maximum(
        np.linalg.norm(features, axis=1, keepdims=True), 1e-6), tf.float32)
    # A one-device copy: under MirroredStrategy the layer's codebook is a mirrored variable that
    # an optimizer can only update inside strategy.run; the result is assigned back at the end.
    codebook = tf.Variable(tf.convert_to_tensor(layer.codebook), name="cbi_codebook")
    variables = [codebook] + list(mapper.trainable_variables)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(variables)
    target_potential = tf.Variable(tf.zeros([layer.num_codes]), trainable=False)
    rng = tf.random.Generator.from_seed(seed)

    @tf.function
    def cbi_step():
        if batch < num_images:
            picked = tf.argsort(rng.uniform([num_images]))[:batch]
            image_features = tf.gather(unit_features, picked)
        else:
            image_features = unit_features
        with tf.GradientTape() as tape:
            codes = tf.convert_to_tensor(codebook)
            if layer.hyperspherical:
                codes = normalize_codes(codes)
            code_features = normalize_codes(mapper(codes))  # [K, F]
            cost = codebook_ops.squared_distances(image_features, code_features)  # [B, K]
            transport = sinkhorn(cost, epsilon, max_sinkhorn_iterations, tolerance,
                                 initial_target_potential=target_potential)
            loss = tf.reduce_sum(tf.stop_gradient(transport["plan"]) * cost)
        optimizer.apply(tape.gradient(loss, variables), variables)
        target_potential.assign(transport["target_potential"])
        return tf.stack([loss, transport["marginal_error"],
                         tf.cast(transport["iterations"], tf.float32)])

    history = tf.stack([cbi_step() for _ in range(steps)]).numpy().astype(np.float64)
    if not (np.isfinite(history).all() and np.isfinite(codebook.numpy()).all()):
        raise FloatingPointError(
            "initialize_codebook: the transport cost or the codebook became non-finite; the "
            "layer's codebook was left unchanged. Lower learning_rate or raise epsilon.")
    layer.codebook.assign(codebook)
    return {"transport_cost": history[:, 0], "marginal_error": history[:, 1],
            "sinkhorn_iterations": history[:, 2]}
