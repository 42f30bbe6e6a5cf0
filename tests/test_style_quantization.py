"""StyleQuantization (SQ-GAN) against numpy transcriptions of ../shared/reference/sqgan.md."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from fq_keras.style_quantization import (
    StyleQuantization, perturb_latents, sq_consistency_loss, sq_generator_loss, uniformity_loss)

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7

# Codebook (K=3, d=2) with rows of different norms, and w (N=2, w_dim=4): two sub-vectors each.
HAND_C = np.array([[2.0, 0.0], [0.0, 0.5], [-3.0, -3.0]], np.float32)
HAND_W = np.array([[1.9, 0.1, 0.4, 0.3],
                   [-2.5, -3.5, 0.1, 0.6]], np.float32)


def layer_with(codebook, hyperspherical, **kwargs):
    codebook = np.asarray(codebook, np.float32)
    return StyleQuantization(
        codebook.shape[0], codebook.shape[1], hyperspherical=hyperspherical,
        codebook_initializer=keras.initializers.Constant(codebook), **kwargs)


def numpy_sq(w, codebook, hyperspherical, beta=0.25):
    """Brute-force transcription in float64: (K, d) differences, explicit unit vectors."""
    w = np.asarray(w, np.float64)
    d = codebook.shape[1]
    z = w.reshape(-1, d)
    c = codebook.astype(np.float64)
    if hyperspherical:
        z = z / np.linalg.norm(z, axis=1, keepdims=True)
        c = c / np.linalg.norm(c, axis=1, keepdims=True)
    distances = ((z[:, None, :] - c[None]) ** 2).sum(-1)
    indices = distances.argmin(1)
    chosen = c[indices]
    squared = ((z - chosen) ** 2).reshape(w.shape[0], -1)
    return {
        "indices": indices.reshape(w.shape[:-1] + (w.shape[-1] // d,)),
        "quantized": chosen.reshape(w.shape),
        "codebook_loss": squared.mean(),
        "loss": (1 + beta) * squared.mean(),
        "per_sample_loss": (1 + beta) * squared.mean(1),
    }


def numpy_uniformity(codebook, t):
    c = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
    d2 = ((c[:, None, :] - c[None]) ** 2).sum(-1)
    K = len(c)
    values = -t * d2[~np.eye(K, dtype=bool)]
    m = values.max()
    return m + np.log(np.exp(values - m).sum()) - np.log(K * (K - 1))


# ---------------------------------------------------------------------------------------------
# Nearest-code assignment and VQ losses, hand-made inputs.

def test_hand_lookup_plain():
    sq = layer_with(HAND_C, hyperspherical=False, commitment_cost=0.25)
    out = sq.lookup(HAND_W)
    # (1.9, 0.1)->(2, 0); (0.4, 0.3)->(0, 0.5); (-2.5, -3.5)->(-3, -3); (0.1, 0.6)->(0, 0.5).
    np.testing.assert_array_equal(out["indices"].numpy(), [[0, 1], [2, 1]])
    np.testing.assert_array_equal(out["quantized"].numpy(), [[2, 0, 0, 0.5], [-3, -3, 0, 0.5]])
    # Squared errors: (.01 .01 .16 .04) and (.25 .25 .01 .01); means .055 and .13.
    np.testing.assert_allclose(out["per_sample_loss"].numpy(), [1.25 * 0.055, 1.25 * 0.13],
                               rtol=1e-5)
    np.testing.assert_allclose(out["codebook_loss"].numpy(), 0.0925, rtol=1e-5)
    np.testing.assert_allclose(out["commitment_loss"].numpy(), 0.0925, rtol=1e-5)
    np.testing.assert_allclose(out["loss"].numpy(), 1.25 * 0.0925, rtol=1e-5)
    # Entry usage 1, 2, 1 of 4: perplexity exp(-(2 * .25 log .25 + .5 log .5)) = 2 sqrt(2).
    np.testing.assert_allclose(out["perplexity"].numpy(), 2 * np.sqrt(2), rtol=1e-5)
    assert out["unused_fraction"].numpy() == 0.0


def test_hand_lookup_hyperspherical():
    sq = layer_with(HAND_C, hyperspherical=True, commitment_cost=0.25)
    out = sq.lookup(HAND_W)
    # (0.4, 0.3) is nearest to (0, 0.5) in the plain metric but its direction (0.8, 0.6) is
    # nearest to (1, 0): the cosine decides.
    np.testing.assert_array_equal(out["indices"].numpy(), [[0, 0], [2, 1]])
    s = np.sqrt(0.5)
    # Float32 unit vectors c / ||c||: ~4 roundings (squares, sum, sqrt, divide) of |.| <= 1: 2.4e-7.
    np.testing.assert_allclose(out["quantized"].numpy(), [[1, 0, 1, 0], [-s, -s, 0, 1]],
                               atol=1e-6)
    ref = numpy_sq(HAND_W, HAND_C, hyperspherical=True)
    for key in ("per_sample_loss", "loss", "codebook_loss"):
        np.testing.assert_allclose(out[key].numpy(), ref[key], rtol=1e-5, atol=1e-7)
    # (0.8, 0.6) vs (1, 0): squared error 0.04 + 0.36 = 0.4 in one of the four sub-vectors.
    z = np.array([1.9, 0.1]) / np.linalg.norm([1.9, 0.1])
    by_hand = ((z - [1, 0]) ** 2).sum() + 0.4
    np.testing.assert_allclose(out["per_sample_loss"].numpy()[0], 1.25 * by_hand / 4, rtol=1e-5)


@pytest.mark.parametrize("hyperspherical", [False, True])
@pytest.mark.parametrize("shape", [(5, 16), (3, 6, 16)])
def test_lookup_matches_numpy_brute_force(hyperspherical, shape):
    rng = np.random.RandomState(0)
    codebook = rng.randn(32, 4).astype(np.float32)
    sq = layer_with(codebook, hyperspherical, commitment_cost=0.4)
    w = rng.randn(*shape).astype(np.float32)
    out = sq.lookup(w)
    ref = numpy_sq(w, codebook, hyperspherical, beta=0.4)
    np.testing.assert_array_equal(out["indices"].numpy(), ref["indices"])
    # Plain: exact gathers; hyperspherical: float32 unit vectors, ~4 roundings of |.| <= 1: 2.4e-7.
    np.testing.assert_allclose(out["quantized"].numpy(), ref["quantized"], atol=1e-6)
    np.testing.assert_allclose(out["loss"].numpy(), ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(out["per_sample_loss"].numpy(), ref["per_sample_loss"], rtol=1e-5)
    np.testing.assert_array_equal(sq(w).numpy(), out["quantized"].numpy())


def test_rows_are_quantised_independently():
    """Quantising w then broadcasting / style-mixing equals quantising the dlatents."""
    rng = np.random.RandomState(1)
    sq = layer_with(rng.randn(64, 4), hyperspherical=True)
    w1, w2 = rng.randn(4, 16).astype(np.float32), rng.randn(4, 16).astype(np.float32)
    num_ws, cutoff = 6, 2
    mixed = np.concatenate([np.repeat(w1[:, None], cutoff, 1),
                            np.repeat(w2[:, None], num_ws - cutoff, 1)], axis=1)
    q1, q2 = sq(w1).numpy(), sq(w2).numpy()
    expected = np.concatenate([np.repeat(q1[:, None], cutoff, 1),
                               np.repeat(q2[:, None], num_ws - cutoff, 1)], axis=1)
    np.testing.assert_array_equal(sq(mixed).numpy(), expected)
    # Same per-sample loss for w and for its broadcast (means over identical rows).
    np.testing.assert_allclose(sq.lookup(np.repeat(w1[:, None], num_ws, 1))["per_sample_loss"],
                               sq.lookup(w1)["per_sample_loss"], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Gradients.

def test_straight_through_gradient_plain():
    rng = np.random.RandomState(2)
    sq = layer_with(rng.randn(8, 4), hyperspherical=False)
    w = tf.Variable(rng.randn(3, 8).astype(np.float32))
    weights = rng.randn(3, 8).astype(np.float32)
    with tf.GradientTape(persistent=True) as tape:
        objective = tf.reduce_sum(sq(w) * weights)
    # w + sg(c - w) passes the upstream gradient through unchanged: exact.
    np.testing.assert_array_equal(tape.gradient(objective, w).numpy(), weights)
    # The output gives the codebook no gradient: only its own losses train it.
    assert tape.gradient(objective, sq.codebook) is None


def test_straight_through_gradient_hyperspherical():
    """Backward = the Jacobian of z -> z / ||z||: (I - z^ z^T) / ||z||, per sub-vector."""
    rng = np.random.RandomState(3)
    sq = layer_with(rng.randn(8, 4), hyperspherical=True)
    w = tf.Variable(rng.randn(3, 8).astype(np.float32))
    weights = rng.randn(3, 8).astype(np.float32)
    with tf.GradientTape() as tape:
        objective = tf.reduce_sum(sq(w) * weights)
    z = w.numpy().reshape(-1, 4).astype(np.float64)
    g = weights.reshape(-1, 4)
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    unit = z / norm
    expected = (g - unit * (unit * g).sum(1, keepdims=True)) / norm
    np.testing.assert_allclose(tape.gradient(objective, w).numpy(), expected.reshape(3, 8),
                               rtol=1e-4, atol=1e-6)


def test_vq_loss_gradients_plain():
    """d/dc_k mean((sg(z) - c)^2) = -2 sum_{k(i)=k} (z_i - c_k) / (M d); commitment to w only."""
    rng = np.random.RandomState(4)
    codebook = rng.randn(6, 4).astype(np.float32)
    sq = layer_with(codebook, hyperspherical=False, commitment_cost=0.25)
    w = tf.Variable(rng.randn(5, 8).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        out = sq.lookup(w)
    z = w.numpy().reshape(-1, 4)
    idx = out["indices"].numpy().reshape(-1)
    n = z.size
    expected_codebook = np.zeros_like(codebook)
    np.add.at(expected_codebook, idx, -2.0 * (z - codebook[idx]) / n)
    grad_codebook = tape.gradient(out["codebook_loss"], sq.codebook)
    np.testing.assert_allclose(tf.convert_to_tensor(grad_codebook).numpy(), expected_codebook,
                               rtol=1e-5, atol=1e-7)
    assert tape.gradient(out["codebook_loss"], w) is None
    assert tape.gradient(out["commitment_loss"], sq.codebook) is None
    np.testing.assert_allclose(tape.gradient(out["loss"], w).numpy(),
                               (0.25 * 2.0 * (z - codebook[idx]) / n).reshape(5, 8),
                               rtol=1e-5, atol=1e-7)


def test_vq_loss_gradients_hyperspherical_finite_differences():
    rng = np.random.RandomState(5)
    codebook = rng.randn(6, 4)
    w = rng.randn(4, 8)
    sq = layer_with(codebook, hyperspherical=True, commitment_cost=0.25)
    with tf.GradientTape() as tape:
        loss = sq.lookup(w.astype(np.float32))["codebook_loss"]
    grad = tf.convert_to_tensor(tape.gradient(loss, sq.codebook)).numpy()
    step = 1e-5
    numeric = np.zeros_like(codebook)
    for k in range(6):
        for j in range(4):
            plus, minus = codebook.copy(), codebook.copy()
            plus[k, j] += step
            minus[k, j] -= step
            numeric[k, j] = (numpy_sq(w, plus, True)["codebook_loss"]
                             - numpy_sq(w, minus, True)["codebook_loss"]) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Uniformity.

def test_uniformity_hand_value():
    # Directions (1,0), (0,1), (-1,0) at different norms: squared distances 2, 4, 2.
    codebook = np.array([[3.0, 0.0], [0.0, 0.5], [-1.0, 0.0]], np.float32)
    t = 2.0
    expected = np.log((4 * np.exp(-2 * t) + 2 * np.exp(-4 * t)) / 6)
    np.testing.assert_allclose(uniformity_loss(codebook, t).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(layer_with(codebook, True).uniformity_loss().numpy(), expected,
                               rtol=1e-5)
    # Collapse: every entry the same direction gives log 1 = 0: logsumexp of six 0s minus log 6,
    # two float32 roundings of values ~1.8: <= 2 * ulp(1.8) / 2 = 2.4e-7 < 1e-6.
    np.testing.assert_allclose(uniformity_loss(np.array([[1, 1], [2, 2], [3, 3]]), t).numpy(),
                               0.0, atol=1e-6)


@pytest.mark.parametrize("t", [0.5, 2.0, 200.0])
def test_uniformity_matches_numpy(t):
    codebook = np.random.RandomState(6).randn(50, 4)
    np.testing.assert_allclose(uniformity_loss(codebook.astype(np.float32), t).numpy(),
                               numpy_uniformity(codebook, t), rtol=1e-4, atol=1e-4)


def test_uniformity_gradient_spreads_codes():
    """A gradient step on L_uf lowers it, and matches numpy finite differences."""
    codebook = np.random.RandomState(7).randn(5, 3)
    variable = tf.Variable(codebook.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = uniformity_loss(variable, 2.0)
    grad = tape.gradient(loss, variable).numpy()
    step = 1e-5
    numeric = np.zeros_like(codebook)
    for k in range(5):
        for j in range(3):
            plus, minus = codebook.copy(), codebook.copy()
            plus[k, j] += step
            minus[k, j] -= step
            numeric[k, j] = (numpy_uniformity(plus, 2.0)
                             - numpy_uniformity(minus, 2.0)) / (2 * step)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-6)
    assert numpy_uniformity(codebook - 0.1 * grad, 2.0) < loss.numpy()


def test_uniformity_uses_no_k_by_k_by_d_tensor():
    K, d = 512, 4
    graph = tf.function(lambda c: uniformity_loss(c, 2.0)).get_concrete_function(
        tf.TensorSpec((K, d), tf.float32)).graph
    largest = max(np.prod(t.shape.as_list()) for op in graph.get_operations() for t in op.outputs
                  if t.shape.rank and t.shape.is_fully_defined())
    assert largest == K * K


# ---------------------------------------------------------------------------------------------
# Loss wiring in a trainer.

def test_sq_generator_loss_value():
    rng = np.random.RandomState(8)
    codebook = rng.randn(16, 4)
    sq = layer_with(codebook, True)
    w, w2 = rng.randn(6, 8).astype(np.float32), rng.randn(6, 8).astype(np.float32)
    lookups = [sq.lookup(w), sq.lookup(w2)]
    uniformity = numpy_uniformity(codebook, 2.0)
    expected = 0.01 * (numpy_sq(w, codebook, True)["loss"] + numpy_sq(w2, codebook, True)["loss"]
                       + uniformity)
    np.testing.assert_allclose(sq_generator_loss(sq, lookups).numpy(), expected, rtol=1e-5)
    # Summed over a global batch of 12 (this replica holds 6 of them), one replica in sync.
    expected_global = 0.01 * (6 / 12 * (numpy_sq(w, codebook, True)["loss"]
                                        + numpy_sq(w2, codebook, True)["loss"]) + uniformity)
    np.testing.assert_allclose(sq_generator_loss(sq, lookups, global_batch_size=12).numpy(),
                               expected_global, rtol=1e-5)
    np.testing.assert_allclose(
        sq_generator_loss(sq, lookups, global_batch_size=12, uniformity=False).numpy(),
        expected_global - 0.01 * uniformity, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Usage statistics.

def test_usage_statistics_accumulate_and_reset():
    K = 4
    sq = layer_with(np.eye(K, 4) * 2, hyperspherical=False)
    uniform = np.tile(np.eye(K, dtype=np.float32).reshape(1, 16) * 2, (3, 1))  # each entry 3x
    out = sq.lookup(uniform)
    np.testing.assert_allclose(out["perplexity"].numpy(), K, rtol=1e-5)
    sq.update_usage(out["indices"])
    stats = sq.usage_statistics()
    assert stats["num_vectors"] == 12 and stats["dead_codes"] == 0
    np.testing.assert_allclose(stats["perplexity"], K, rtol=1e-5)
    np.testing.assert_allclose(stats["uniformity"], numpy_uniformity(np.eye(K), 2.0), rtol=1e-5)

    sq.reset_usage()
    single = np.tile(np.array([[2, 0, 0, 0]], np.float32), (5, 1))
    sq.update_usage(sq.lookup(single)["indices"])
    sq.update_usage(sq.lookup(single)["indices"])
    stats = sq.usage_statistics()
    assert stats["num_vectors"] == 10 and stats["dead_codes"] == 3
    assert stats["unused_fraction"] == pytest.approx(0.75)
    np.testing.assert_allclose(stats["perplexity"], 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Consistency regularisation on D.

def test_perturb_latents_statistics_and_seed():
    z = tf.zeros((200, 100))
    delta = perturb_latents(z, 0.1, seed=keras.random.SeedGenerator(3)).numpy()
    assert abs(delta.std() - 0.1) < 0.002 and abs(delta.mean()) < 0.002
    again = perturb_latents(z, 0.1, seed=keras.random.SeedGenerator(3)).numpy()
    np.testing.assert_array_equal(delta, again)
    np.testing.assert_array_equal(perturb_latents(z + 1.0, 0.0).numpy(), np.ones((200, 100)))


def test_consistency_loss_value():
    d = np.array([[0.5], [-1.0], [2.0]], np.float32)
    d_p = np.array([[0.25], [1.0], [2.0]], np.float32)
    np.testing.assert_allclose(sq_consistency_loss(d, d_p).numpy(),
                               0.01 * np.array([0.0625, 4.0, 0.0]), rtol=1e-6)
    np.testing.assert_allclose(sq_consistency_loss(d, d_p, weight=1.0).numpy(),
                               [0.0625, 4.0, 0.0], rtol=1e-6)
    multi = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    np.testing.assert_allclose(sq_consistency_loss(multi, multi + 0.5, weight=2.0).numpy(),
                               [2.0, 2.0, 2.0], rtol=1e-6)


def _tiny_gan(seed=0):
    init = keras.initializers.RandomNormal(stddev=0.5, seed=seed)
    mapping = keras.layers.Dense(8, kernel_initializer=init, name="mapping")
    synthesis = keras.layers.Dense(12, kernel_initializer=init, name="synthesis")
    discriminator = keras.layers.Dense(1, kernel_initializer=init, name="discriminator")
    sq = layer_with(np.random.RandomState(seed).randn(16, 4), True)
    for layer, shape in ((mapping, (None, 6)), (synthesis, (None, 8)), (discriminator, (None, 12))):
        layer.build(shape)
    sq.build((None, 8))
    return mapping, sq, synthesis, discriminator


def _consistency_d_loss(mapping, sq, synthesis, discriminator, z, sigma, seed, global_batch):
    """How a trainer uses the term: both images without gradient to G, loss on D."""
    w_q = sq(mapping(z))
    w_q_perturbed = sq(mapping(perturb_latents(z, sigma, seed=seed)))
    images = tf.stop_gradient(synthesis(w_q))
    images_perturbed = tf.stop_gradient(synthesis(w_q_perturbed))
    per_sample = sq_consistency_loss(discriminator(images), discriminator(images_perturbed))
    return tf.reduce_sum(per_sample) / global_batch, images, images_perturbed


def test_consistency_zero_without_perturbation():
    mapping, sq, synthesis, discriminator = _tiny_gan()
    z = tf.constant(np.random.RandomState(9).randn(4, 6).astype(np.float32))
    with tf.GradientTape() as tape:
        loss, _, _ = _consistency_d_loss(mapping, sq, synthesis, discriminator, z, 0.0, None, 4)
    assert loss.numpy() == 0.0
    for grad in tape.gradient(loss, discriminator.trainable_variables):
        np.testing.assert_array_equal(grad.numpy(), 0.0)


def test_consistency_gradient_reaches_discriminator_only():
    mapping, sq, synthesis, discriminator = _tiny_gan()
    z = tf.constant(np.random.RandomState(10).randn(4, 6).astype(np.float32))
    # sigma 1 so that most sub-vectors change code and the images differ.
    with tf.GradientTape(persistent=True) as tape:
        loss, x, x_p = _consistency_d_loss(mapping, sq, synthesis, discriminator, z, 1.0,
                                           keras.random.SeedGenerator(0), 4)
    generator_vars = mapping.trainable_variables + synthesis.trainable_variables + [sq.codebook]
    assert all(g is None for g in tape.gradient(loss, generator_vars))
    grad_kernel, grad_bias = tape.gradient(loss, discriminator.trainable_variables)
    # D(x) = x A + b: dL/dA = 0.01 * 2 sum_i (D(x_i) - D(x'_i)) (x_i - x'_i) / N, dL/db = 0.
    x, x_p = x.numpy(), x_p.numpy()
    kernel = discriminator.kernel.numpy()
    diff = (x - x_p) @ kernel  # [N, 1]
    assert np.abs(diff).max() > 1e-3
    expected = 0.01 * 2 * (x - x_p).T @ diff / 4
    np.testing.assert_allclose(grad_kernel.numpy(), expected, rtol=1e-4, atol=1e-8)
    # The D branches add +sum(g_i) and -sum(g_i), 4 terms |g_i| = 0.005 |D(x) - D(x')| < 0.016:
    # 0, or if summed in other orders <= 2 * 3 eps32 * 0.064 ~ 5e-8 < 1e-7.
    np.testing.assert_allclose(grad_bias.numpy(), 0.0, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Mixed precision, XLA, tf.distribute.

def test_mixed_precision(mixed_precision):
    half = mixed_precision
    rng = np.random.RandomState(11)
    codebook = rng.randn(16, 4).astype(np.float32)
    inputs = keras.Input((6,))
    w = keras.layers.Dense(8)(inputs)
    sq = layer_with(codebook, True)
    model = keras.Model(inputs, keras.layers.Dense(1)(sq(w)))
    z = rng.randn(4, 6).astype(np.float32)
    w16 = model.layers[1](z)
    assert w16.dtype == half.dtype
    out = sq.lookup(w16)
    assert out["quantized"].dtype == half.dtype
    assert out["loss"].dtype == tf.float32 and out["per_sample_loss"].dtype == tf.float32
    assert sq.codebook.dtype == "float32"
    ref = numpy_sq(w16.numpy().astype(np.float32), codebook, True)
    np.testing.assert_array_equal(out["indices"].numpy(), ref["indices"])
    # Unit vectors rounded to the half type: <= ulp(1) / 2 = the unit roundoff.
    np.testing.assert_allclose(out["quantized"].numpy(), ref["quantized"], atol=2 * half.unit_roundoff)

    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01))
    # Dynamic loss scaling skips a step whose scaled gradients overflow the half type and halves
    # the scale (2^15 at first; about 1 initialisation in 130 overflows it here): step until one
    # is applied, at most 16 halvings.
    for _ in range(17):
        with tf.GradientTape() as tape:
            result = sq.lookup(model.layers[1](z))
            loss = (tf.reduce_mean(tf.cast(model(z), tf.float32) ** 2)
                    + sq_generator_loss(sq, result))
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        assert np.isfinite(sq.codebook.numpy()).all()
        if not np.array_equal(sq.codebook.numpy(), codebook):
            break
    assert not np.array_equal(sq.codebook.numpy(), codebook)


def test_xla_lookup_matches_eager():
    rng = np.random.RandomState(12)
    sq = layer_with(rng.randn(64, 4), True)
    w = rng.randn(4, 3, 16).astype(np.float32)
    eager = sq.lookup(w)
    compiled = tf.function(sq.lookup, jit_compile=True)(w)
    np.testing.assert_array_equal(compiled["indices"].numpy(), eager["indices"].numpy())
    # Unit vectors, ~4 roundings of |.| <= 1 each, rounded differently by XLA: <= 4.8e-7 < 1e-6.
    np.testing.assert_allclose(compiled["quantized"].numpy(), eager["quantized"].numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(compiled["loss"].numpy(), eager["loss"].numpy(), rtol=1e-5)


def _sq_model(codebook, hyperspherical):
    """z (6) -> mapping Dense(8) -> SQ -> Dense(1): mapping, codebook and head all train."""
    init = keras.initializers.RandomNormal(stddev=0.5, seed=1)
    inputs = keras.Input((6,))
    w = keras.layers.Dense(8, kernel_initializer=init)(inputs)
    sq = layer_with(codebook, hyperspherical)
    head = keras.layers.Dense(1, kernel_initializer=init)
    model = keras.Model(inputs, head(sq(w)))
    return model, model.layers[1], sq, head


def _train_step(model, mapping, sq, head, optimizer, z, global_batch):
    """Loss summed over this replica's samples / global batch; SQ terms by sq_generator_loss."""
    with tf.GradientTape() as tape:
        w_q, result = sq(mapping(z), return_lookup=True)
        objective = tf.reduce_sum(tf.square(head(w_q) - 1.0)) / global_batch
        loss = objective + sq_generator_loss(sq, result, global_batch, weight=0.5)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    sq.update_usage(result["indices"])


@pytest.mark.parametrize("hyperspherical", [True, False])
def test_two_replicas_equal_one_device(two_replica_strategy, hyperspherical):
    """Codebook (trainable) after 2 optimizer steps: 2 replicas x 4 samples == 1 device x 8.

    SGD, not Adam: Adam's first steps are nearly lr * sign(grad), which would hide a gradient
    scaled by the wrong replica count.
    """
    rng = np.random.RandomState(13)
    codebook = rng.randn(8, 4).astype(np.float32)
    batches = [rng.randn(8, 6).astype(np.float32) for _ in range(2)]

    model, mapping, sq, head = _sq_model(codebook, hyperspherical)
    optimizer = keras.optimizers.SGD(0.5)
    optimizer.build(model.trainable_variables)
    step = tf.function(lambda z: _train_step(model, mapping, sq, head, optimizer, z, 8))
    for z in batches:
        step(z)

    strategy = two_replica_strategy
    with strategy.scope():
        m_model, m_mapping, m_sq, m_head = _sq_model(codebook, hyperspherical)
        m_optimizer = keras.optimizers.SGD(0.5)
        m_optimizer.build(m_model.trainable_variables)

    @tf.function
    def distributed_step(z):
        strategy.run(lambda x: _train_step(m_model, m_mapping, m_sq, m_head, m_optimizer, x, 8),
                     args=(z,))

    for z in batches:
        halves = strategy.experimental_distribute_values_from_function(
            lambda ctx, z=z: z[4 * ctx.replica_id_in_sync_group:][:4])
        distributed_step(halves)

    assert not np.allclose(sq.codebook.numpy(), codebook)
    # Gradients are sums of 8 per-sample terms (4 + 4 all-reduced vs 8) with sum|terms| <= 4
    # here: <= 8 eps32 * 4 each; SGD is linear: 2 steps of lr 0.5 give <= 8 * eps32 * 4 ~ 3.8e-6.
    atol = 2 * 0.5 * 8 * EPS32 * 4
    replicas = {}
    for name in ("codebook", "usage_counts"):
        replicas[name] = strategy.experimental_local_results(getattr(m_sq, name).value)
        assert len(replicas[name]) == 2
        np.testing.assert_array_equal(replicas[name][0].numpy(), replicas[name][1].numpy())
    np.testing.assert_allclose(replicas["codebook"][0].numpy(), sq.codebook.numpy(), atol=atol)
    # Usage counts are sums of ones: exact.
    np.testing.assert_array_equal(replicas["usage_counts"][0].numpy(), sq.usage_counts.numpy())
    np.testing.assert_allclose(m_model.get_weights()[0], model.get_weights()[0], atol=atol)


# ---------------------------------------------------------------------------------------------
# State round trips.

def test_checkpoint_round_trip(tmp_path):
    rng = np.random.RandomState(14)
    sq = layer_with(rng.randn(16, 4), True)
    w = rng.randn(3, 8).astype(np.float32)
    sq.update_usage(sq.lookup(w)["indices"])
    sq.codebook.assign(sq.codebook * 1.5)
    path = tf.train.Checkpoint(sq=sq).write(str(tmp_path / "ckpt"))

    restored = layer_with(rng.randn(16, 4), True)
    restored.build()
    tf.train.Checkpoint(sq=restored).read(path).assert_consumed()
    np.testing.assert_array_equal(restored.codebook.numpy(), sq.codebook.numpy())
    np.testing.assert_array_equal(restored.usage_counts.numpy(), sq.usage_counts.numpy())
    np.testing.assert_array_equal(restored(w).numpy(), sq(w).numpy())


def test_keras_serialization_round_trip(tmp_path):
    inputs = keras.Input((3, 8))
    sq = StyleQuantization(16, code_dim=2, hyperspherical=False, commitment_cost=0.5,
                           uniformity_temperature=3.0)
    model = keras.Model(inputs, sq(inputs))
    sq.codebook.assign(np.random.RandomState(15).randn(16, 2).astype(np.float32))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    sq2 = loaded.layers[-1]
    assert isinstance(sq2, StyleQuantization)
    for key in ("num_codes", "code_dim", "hyperspherical", "commitment_cost",
                "uniformity_temperature"):
        assert getattr(sq2, key) == getattr(sq, key)
    np.testing.assert_array_equal(sq2.codebook.numpy(), sq.codebook.numpy())
    w = np.random.RandomState(16).randn(2, 3, 8).astype(np.float32)
    np.testing.assert_array_equal(loaded(w).numpy(), model(w).numpy())


def test_saved_model_quantises_like_the_layer(tmp_path):
    """An exported function carries the codebook; plain tf.saved_model.load reproduces w^q."""
    rng = np.random.RandomState(17)
    sq = layer_with(rng.randn(32, 4), True)
    module = tf.Module()
    module.sq = sq
    module.quantize = tf.function(
        lambda w: sq(w), input_signature=[tf.TensorSpec((None, 5, 16), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sq"))
    loaded = tf.saved_model.load(str(tmp_path / "sq"))
    w = rng.randn(3, 5, 16).astype(np.float32)
    np.testing.assert_array_equal(loaded.quantize(w).numpy(), sq(w).numpy())


# ---------------------------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize("kwargs, match", [
    (dict(num_codes=1), "num_codes"),
    (dict(num_codes=16.0), "num_codes"),
    (dict(num_codes=True), "num_codes"),
    (dict(code_dim=0), "code_dim"),
    (dict(commitment_cost=-0.1), "commitment_cost"),
    (dict(uniformity_temperature=0.0), "uniformity_temperature"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StyleQuantization(**kwargs)


@pytest.mark.parametrize("shape", [(2, 10), (2, 3, 4, 8), (8,)])
def test_bad_input_shapes(shape):
    sq = StyleQuantization(16, code_dim=4)
    with pytest.raises(ValueError, match="multiple of code_dim=4"):
        sq.lookup(np.zeros(shape, np.float32))
