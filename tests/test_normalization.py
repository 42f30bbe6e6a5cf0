"""networks/normalization.py against numpy transcriptions of PyTorch / BigGAN-PyTorch formulas."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from networks import normalization as nz

# Against float64 numpy: SN's u, v, sigma come from <= 36-term float32 products and norms,
# <= 36 eps32/2 ~ 2e-6 relative worst case (unit vectors: ~2e-6 absolute), inside RTOL / ATOL.
RTOL = 1e-5
ATOL = 1e-6


def np_normalize(x, eps):
    return x / max(np.linalg.norm(x), eps)


def np_sn_pytorch(w_mat, u, v, eps, iterations, training):
    """torch.nn.utils.spectral_norm: (sigma, u, v) after one forward."""
    if training:
        for _ in range(iterations):
            v = np_normalize(w_mat.T @ u, eps)
            u = np_normalize(w_mat @ v, eps)
    return float(u @ w_mat @ v), u, v


def np_sn_biggan(w_mat, u, eps, iterations, training):
    """BigGAN-PyTorch layers.SN.W_ with power_iteration: (sigma, stored u, v, u used)."""
    stored = u
    for _ in range(iterations):
        v = np_normalize(stored @ w_mat, eps)
        u_new = np_normalize(v @ w_mat.T, eps)
        if training:
            stored = u_new
    return float(v @ w_mat.T @ u_new), stored, v, u_new


def np_sn_gradient(w_mat, upstream, sigma, u, v):
    """d/dW sum(upstream * W / sigma) with sigma = u^T W v, u and v constant."""
    return upstream / sigma - np.sum(upstream * w_mat) / sigma ** 2 * np.outer(u, v)


def np_conv_valid(x, weight, bias, stride):
    """NHWC input, PyTorch (O, I, k, k) weight: explicit patches in PyTorch (I, kh, kw) order."""
    n, h, w, _ = x.shape
    o, _, k, _ = weight.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    out = np.zeros((n, ho, wo, o))
    w_mat = weight.reshape(o, -1)
    for i in range(ho):
        for j in range(wo):
            patch = x[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[:, i, j, :] = patch.transpose(0, 3, 1, 2).reshape(n, -1) @ w_mat.T
    return out + (0 if bias is None else bias)


def conv_layer(mode, filters=5, k=3, channels=4, strides=1, seed=0, **kwargs):
    layer = nz.SNConv2D(filters, k, strides=strides, sn_mode=mode, **kwargs)
    layer.build((None, 9, 9, channels))
    rng = np.random.RandomState(seed)
    layer.kernel.assign(rng.randn(k, k, channels, filters).astype(np.float32) * 0.3)
    layer.bias.assign(rng.randn(filters).astype(np.float32))
    return layer


def torch_weight(kernel):
    return np.transpose(kernel, (3, 2, 0, 1))  # (k, k, I, O) -> (O, I, k, k)


# ---------------------------------------------------------------------------------------------
# Spectral norm, PyTorch semantics (U-GAT-IT).

def test_pytorch_initial_vectors_are_unit():
    layer = conv_layer("pytorch")
    assert layer.sn_u.shape == (5,) and layer.sn_v.shape == (4 * 3 * 3,)
    np.testing.assert_allclose(np.linalg.norm(layer.sn_u.numpy()), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(layer.sn_v.numpy()), 1.0, rtol=1e-6)
    assert not any(w.trainable for w in (layer.sn_u, layer.sn_v))


def test_pytorch_conv_training_forward_matches_numpy():
    layer = conv_layer("pytorch", strides=2)
    x = np.random.RandomState(1).randn(2, 9, 9, 4).astype(np.float32)
    weight = torch_weight(layer.kernel.numpy()).astype(np.float64)
    w_mat = weight.reshape(5, -1)
    u0, v0 = layer.sn_u.numpy().astype(np.float64), layer.sn_v.numpy().astype(np.float64)
    sigma, u1, v1 = np_sn_pytorch(w_mat, u0, v0, 1e-12, 1, training=True)

    out = layer(x, training=True).numpy()
    expected = np_conv_valid(x, weight / sigma, layer.bias.numpy(), stride=2)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(layer.sn_u.numpy(), u1, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.sn_v.numpy(), v1, rtol=RTOL, atol=ATOL)


def test_pytorch_eval_uses_stored_vectors_unchanged():
    layer = conv_layer("pytorch")
    x = np.random.RandomState(2).randn(1, 9, 9, 4).astype(np.float32)
    layer(x, training=True)  # one training forward first, as after some training
    u, v = layer.sn_u.numpy().copy(), layer.sn_v.numpy().copy()
    w_mat = torch_weight(layer.kernel.numpy()).reshape(5, -1).astype(np.float64)
    sigma = float(u @ w_mat @ v)
    np.testing.assert_allclose(layer.spectral_norm(training=False).numpy(), sigma, rtol=RTOL)
    layer(x, training=False)
    layer(x)  # training=None is eval
    np.testing.assert_array_equal(layer.sn_u.numpy(), u)
    np.testing.assert_array_equal(layer.sn_v.numpy(), v)


@pytest.mark.parametrize("mode", ["pytorch", "biggan"])
@pytest.mark.parametrize("training", [True, False])
def test_gradient_flows_through_sigma(mode, training):
    layer = nz.SNDense(3, sn_mode=mode)
    layer.build((None, 6))
    rng = np.random.RandomState(3)
    layer.kernel.assign(rng.randn(6, 3).astype(np.float32))
    upstream = rng.randn(6, 3).astype(np.float32)
    w_mat = layer.kernel.numpy().T.astype(np.float64)
    u0 = layer.sn_u.numpy().astype(np.float64)
    if mode == "pytorch":
        sigma, u, v = np_sn_pytorch(w_mat, u0, layer.sn_v.numpy().astype(np.float64), 1e-12, 1,
                                    training)
    else:
        sigma, _, v, u = np_sn_biggan(w_mat, u0, 1e-8, 1, training)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(upstream * layer.normalized_kernel(training))
    grad = tape.gradient(loss, layer.kernel).numpy()
    expected = np_sn_gradient(w_mat, upstream.T.astype(np.float64), sigma, u, v).T
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
    # The sigma term is not negligible here: without it the gradient would be upstream / sigma.
    assert np.abs(grad - upstream / sigma).max() > 1e-2


def test_keras_spectral_normalization_differs():
    """Why we need our own layer: Keras' wrapper blocks the gradient through sigma."""
    layer = nz.SNDense(3, sn_mode="pytorch", use_bias=False)
    layer.build((None, 6))
    rng = np.random.RandomState(4)
    kernel = rng.randn(6, 3).astype(np.float32)
    layer.kernel.assign(kernel)
    x = rng.randn(4, 6).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer(x, training=True)))
    ours = tape.gradient(loss, layer.kernel).numpy()
    wrapped = keras.layers.SpectralNormalization(keras.layers.Dense(3, use_bias=False))
    wrapped.build((None, 6))
    wrapped.layer.kernel.assign(kernel)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(wrapped(x, training=True)))
    theirs = tape.gradient(loss, wrapped.trainable_variables[0]).numpy()
    assert np.abs(ours - theirs).max() / np.abs(ours).max() > 0.05


@pytest.mark.parametrize("iterations", [1, 3])
def test_pytorch_power_iterations_and_convergence(iterations):
    layer = nz.SNDense(4, sn_mode="pytorch", power_iterations=iterations)
    layer.build((None, 7))
    # A kernel with a known spectral gap (sigma_2 / sigma_1 = 0.5), so 30 steps converge whatever
    # the random u; a random kernel's gap can be too small to converge to 1e-4 in 30 steps.
    rng = np.random.RandomState(5)
    left, _ = np.linalg.qr(rng.randn(4, 4))
    right, _ = np.linalg.qr(rng.randn(7, 4))
    layer.kernel.assign((left @ np.diag([0.7, 0.35, 0.2, 0.1]) @ right.T).T.astype(np.float32))
    w_mat = layer.kernel.numpy().T.astype(np.float64)
    u, v = layer.sn_u.numpy().astype(np.float64), layer.sn_v.numpy().astype(np.float64)
    step = tf.function(lambda: layer.spectral_norm(training=True))
    for _ in range(30):
        sigma, u, v = np_sn_pytorch(w_mat, u, v, 1e-12, iterations, True)
        got = step().numpy()
        np.testing.assert_allclose(got, sigma, rtol=1e-5)
    # Unit vectors from <= 7-term float32 products, ~10 roundings (~6e-7) per step; the power
    # iteration damps old errors by (sigma_2 / sigma_1)^2 = 1/4 per step: <= 6e-7 / (3/4) << 1e-5.
    np.testing.assert_allclose(layer.sn_u.numpy(), u, atol=1e-5)
    np.testing.assert_allclose(got, np.linalg.svd(w_mat, compute_uv=False)[0], rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Spectral norm, BigGAN-PyTorch semantics.

def test_biggan_initial_u_unnormalised_and_no_v():
    layer = nz.SNConv2D(64, 3, sn_mode="biggan")
    layer.build((None, 8, 8, 32))
    assert layer.sn_u.shape == (64,) and not hasattr(layer, "sn_v")
    assert abs(np.linalg.norm(layer.sn_u.numpy()) - 1.0) > 0.5  # ~ sqrt(64) = 8
    assert layer.sn_epsilon == 1e-8
    assert nz.SNConv2D(4, 3, sn_mode="biggan", sn_epsilon=1e-6).sn_epsilon == 1e-6


@pytest.mark.parametrize("iterations", [1, 2])
def test_biggan_training_stores_u_and_sv(iterations):
    layer = conv_layer("biggan", power_iterations=iterations, padding="valid")
    x = np.random.RandomState(5).randn(2, 9, 9, 4).astype(np.float32)
    weight = torch_weight(layer.kernel.numpy()).astype(np.float64)
    w_mat = weight.reshape(5, -1)
    u0 = layer.sn_u.numpy().astype(np.float64)
    sigma, stored, _, _ = np_sn_biggan(w_mat, u0, 1e-8, iterations, training=True)
    out = layer(x, training=True).numpy()
    np.testing.assert_allclose(out, np_conv_valid(x, weight / sigma, layer.bias.numpy(), 1),
                               rtol=RTOL, atol=1e-5)
    np.testing.assert_allclose(layer.sn_u.numpy(), stored, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.sn_sv.numpy(), sigma, rtol=RTOL)


@pytest.mark.parametrize("iterations", [1, 2])
def test_biggan_eval_iterates_but_stores_nothing(iterations):
    layer = conv_layer("biggan", power_iterations=iterations)
    x = np.random.RandomState(6).randn(2, 9, 9, 4).astype(np.float32)
    u0, sv0 = layer.sn_u.numpy().copy(), layer.sn_sv.numpy().copy()
    w_mat = torch_weight(layer.kernel.numpy()).reshape(5, -1).astype(np.float64)
    sigma, stored, _, _ = np_sn_biggan(w_mat, u0.astype(np.float64), 1e-8, iterations, False)
    np.testing.assert_allclose(layer.spectral_norm(training=False).numpy(), sigma, rtol=RTOL)
    layer(x, training=False)
    np.testing.assert_array_equal(layer.sn_u.numpy(), u0)
    np.testing.assert_array_equal(layer.sn_sv.numpy(), sv0)
    np.testing.assert_array_equal(stored, u0)
    # Eval is not sigma from the stored u (as PyTorch's eval is): u is iterated once, unstored.
    v = np_normalize(w_mat.T @ u0, 1e-8)
    assert abs(sigma - float(np_normalize(u0, 1e-8) @ w_mat @ v)) > 1e-3


def test_sn_embedding_table_rows_are_outputs():
    layer = nz.SNEmbedding(7, 5, sn_mode="biggan")
    layer.build()
    table = np.random.RandomState(7).randn(7, 5).astype(np.float32)
    layer.kernel.assign(table)
    u0 = layer.sn_u.numpy().astype(np.float64)
    assert u0.shape == (7,)
    sigma, stored, _, _ = np_sn_biggan(table.astype(np.float64), u0, 1e-8, 1, True)
    out = layer(np.array([3, 0, 6]), training=True).numpy()
    np.testing.assert_allclose(out, table[[3, 0, 6]] / sigma, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(layer.sn_u.numpy(), stored, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["pytorch", "biggan"])
def test_sn_two_replicas_equal_one_device(two_replica_strategy, mode):
    rng = np.random.RandomState(8)
    kernel = rng.randn(3, 3, 4, 6).astype(np.float32)
    u0 = rng.randn(6).astype(np.float32)
    batches = [rng.randn(4, 6, 6, 4).astype(np.float32) for _ in range(3)]

    def make():
        layer = nz.SNConv2D(6, 3, padding="same", sn_mode=mode,
                            kernel_initializer=keras.initializers.Constant(kernel))
        layer.build((None, 6, 6, 4))
        layer.sn_u.assign(u0 if mode == "biggan" else u0 / np.linalg.norm(u0))
        return layer

    single = make()
    step = tf.function(lambda x: single(x, training=True))
    for x in batches:
        step(x)

    strategy = two_replica_strategy
    with strategy.scope():
        mirrored = make()

    @tf.function
    def distributed_step(x):
        strategy.run(lambda h: mirrored(h, training=True), args=(x,))

    for x in batches:
        halves = strategy.experimental_distribute_values_from_function(
            lambda ctx, x=x: x[ctx.replica_id_in_sync_group * 2:(ctx.replica_id_in_sync_group + 1) * 2])
        distributed_step(halves)
    names = ["sn_u", "sn_v"] if mode == "pytorch" else ["sn_u", "sn_sv"]
    for name in names:
        replicas = strategy.experimental_local_results(getattr(mirrored, name).value)
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy())
        # The power iteration reads the kernel and u, never the batch: same ops, same inputs.
        np.testing.assert_array_equal(replicas[0].numpy(), getattr(single, name).numpy())


def test_sn_mixed_precision(mixed_precision):
    layer = nz.SNConv2D(4, 3, padding="same", sn_mode="biggan")
    x = tf.constant(np.random.RandomState(9).randn(2, 5, 5, 3), mixed_precision.dtype)
    out = layer(x, training=True)
    assert out.dtype == mixed_precision.dtype
    assert layer.kernel.dtype == "float32" and layer.sn_u.dtype == "float32"
    assert np.isfinite(layer.sn_sv.numpy())


def test_sn_bad_arguments():
    with pytest.raises(ValueError, match="sn_mode"):
        nz.SNDense(3, sn_mode="keras")
    with pytest.raises(ValueError, match="sn_epsilon"):
        nz.SNDense(3, sn_epsilon=0.0)
    with pytest.raises(ValueError, match="power_iterations"):
        nz.SNDense(3, power_iterations=0)
    with pytest.raises(ValueError, match="padding"):
        nz.SNConv2D(3, 3, padding="reflect")
    with pytest.raises(ValueError, match="filters"):
        nz.SNConv2D(0, 3)


@pytest.mark.parametrize("cls,args", [(nz.SNConv2D, (4, 3)), (nz.SNDense, (4,)),
                                      (nz.SNEmbedding, (10, 4))])
def test_sn_config_round_trip(cls, args):
    layer = cls(*args, sn_mode="biggan", sn_epsilon=1e-6, power_iterations=2)
    clone = cls.from_config(layer.get_config())
    assert (clone.sn_mode, clone.sn_epsilon, clone.power_iterations) == ("biggan", 1e-6, 2)


# ---------------------------------------------------------------------------------------------
# Batch norms (BigGAN-PyTorch ccbn / bn).

def np_batch_norm(x, stored_mean, stored_var, training, momentum=0.1, eps=1e-5):
    """F.batch_norm(x, running stats, None, None, training, momentum, eps) for NHWC x."""
    if training:
        mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
        n = x.size / x.shape[-1]
        stored_mean = (1 - momentum) * stored_mean + momentum * mean
        stored_var = (1 - momentum) * stored_var + momentum * var * n / (n - 1)
    else:
        mean, var = stored_mean, stored_var
    return (x - mean) / np.sqrt(var + eps), stored_mean, stored_var


def test_conditional_batch_norm_labels_train_and_eval():
    rng = np.random.RandomState(10)
    layer = nz.ConditionalBatchNorm(num_classes=4)
    layer.build((None, 3, 3, 5))
    gain, bias = layer.gain.numpy(), layer.bias.numpy()
    assert gain.shape == (4, 5) and 0.005 < gain.std() < 0.05  # N(0, 0.02)
    assert not np.allclose(gain, bias)
    labels = np.array([0, 3, 3, 1])
    mean, var = np.zeros(5), np.ones(5)
    for step in range(3):
        x = (rng.randn(4, 3, 3, 5) * 2 + step).astype(np.float32)
        out = layer(x, labels, training=True).numpy()
        x_hat, mean, var = np_batch_norm(x.astype(np.float64), mean, var, True)
        expected = x_hat * (1 + gain[labels][:, None, None]) + bias[labels][:, None, None]
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.stored_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.stored_var.numpy(), var, rtol=1e-5, atol=1e-6)
    x = rng.randn(2, 3, 3, 5).astype(np.float32)
    out = layer(x, np.array([2, 2]), training=False).numpy()
    x_hat, _, _ = np_batch_norm(x.astype(np.float64), mean, var, False)
    np.testing.assert_allclose(out, x_hat * (1 + gain[2]) + bias[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.stored_mean.numpy(), mean, rtol=1e-5, atol=1e-6)


def test_conditional_batch_norm_vector_condition_uses_sn_linear():
    rng = np.random.RandomState(11)
    layer = nz.ConditionalBatchNorm(sn_kwargs={"sn_epsilon": 1e-6})
    layer.build((None, 2, 2, 3), (None, 6))
    assert layer.gain.sn_mode == "biggan" and not layer.gain.use_bias
    x = rng.randn(4, 2, 2, 3).astype(np.float32)
    y = rng.randn(4, 6).astype(np.float32)

    def np_sn_linear(dense):
        w_mat = dense.kernel.numpy().T.astype(np.float64)
        sigma, _, _, _ = np_sn_biggan(w_mat, dense.sn_u.numpy().astype(np.float64), 1e-6, 1, True)
        return y @ (w_mat / sigma).T

    gain, bias = np_sn_linear(layer.gain), np_sn_linear(layer.bias)
    out = layer(x, y, training=True).numpy()
    x_hat, _, _ = np_batch_norm(x.astype(np.float64), np.zeros(3), np.ones(3), True)
    np.testing.assert_allclose(out, x_hat * (1 + gain[:, None, None]) + bias[:, None, None],
                               rtol=1e-4, atol=1e-5)


def test_conditional_batch_norm_vector_needs_condition_shape():
    with pytest.raises(ValueError, match="condition_shape"):
        nz.ConditionalBatchNorm().build((None, 2, 2, 3))


def test_batch_norm_with_gain_and_bias():
    rng = np.random.RandomState(12)
    layer = nz.BatchNorm()
    layer.build((None, 2, 2, 3))
    layer.gain.assign([1.0, 2.0, 0.5])
    layer.bias.assign([0.0, -1.0, 3.0])
    x = rng.randn(3, 2, 2, 3).astype(np.float32)
    out = layer(x, training=True).numpy()
    x_hat, mean, var = np_batch_norm(x.astype(np.float64), np.zeros(3), np.ones(3), True)
    np.testing.assert_allclose(out, x_hat * [1.0, 2.0, 0.5] + [0.0, -1.0, 3.0], rtol=1e-4, atol=1e-5)
    out = layer(x, training=False).numpy()
    x_hat, _, _ = np_batch_norm(x.astype(np.float64), mean, var, False)
    np.testing.assert_allclose(out, x_hat * [1.0, 2.0, 0.5] + [0.0, -1.0, 3.0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cross_replica", [False, True])
def test_batch_norm_two_replicas(two_replica_strategy, cross_replica):
    """Running statistics equal one device with the global batch on both replicas; the
    normalisation uses per-replica statistics unless cross_replica."""
    rng = np.random.RandomState(13)
    batches = [(rng.randn(4, 3, 3, 2) * (1 + i) + i).astype(np.float32) for i in range(2)]
    labels = np.array([0, 1, 2, 1])
    strategy = two_replica_strategy
    with strategy.scope():
        layer = nz.ConditionalBatchNorm(num_classes=3, cross_replica=cross_replica)
        layer.build((None, 3, 3, 2))
    gain, bias = layer.gain.numpy(), layer.bias.numpy()

    @tf.function
    def step(x, y):
        return strategy.run(lambda a, b: layer(a, b, training=True), args=(x, y))

    def halves(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: array[ctx.replica_id_in_sync_group * 2:(ctx.replica_id_in_sync_group + 1) * 2])

    mean, var = np.zeros(2), np.ones(2)
    for x in batches:
        outs = strategy.experimental_local_results(step(halves(x), halves(labels)))
        x64 = x.astype(np.float64)
        x_hat_global, mean, var = np_batch_norm(x64, mean, var, True)
        for r, out in enumerate(outs):
            part = slice(2 * r, 2 * r + 2)
            if cross_replica:
                x_hat = x_hat_global[part]
            else:
                x_hat, _, _ = np_batch_norm(x64[part], np.zeros(2), np.ones(2), True)
            expected = (x_hat * (1 + gain[labels[part]][:, None, None])
                        + bias[labels[part]][:, None, None])
            np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)
    for name, value in (("stored_mean", mean), ("stored_var", var)):
        replicas = strategy.experimental_local_results(getattr(layer, name).value)
        np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy())
        np.testing.assert_allclose(replicas[0].numpy(), value, rtol=1e-5, atol=1e-6)


def test_batch_norm_mixed_precision(mixed_precision):
    layer = nz.ConditionalBatchNorm(num_classes=2)
    x = tf.constant(np.random.RandomState(14).randn(4, 2, 2, 3) * 50 + 100, mixed_precision.dtype)
    out = layer(x, np.array([0, 1, 0, 1]), training=True)
    assert out.dtype == mixed_precision.dtype and layer.stored_var.dtype == "float32"
    assert np.all(np.isfinite(out.numpy())) and np.all(np.isfinite(layer.stored_var.numpy()))


def test_batch_norm_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        nz.BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        nz.ConditionalBatchNorm(epsilon=0)
    with pytest.raises(ValueError, match="num_classes"):
        nz.ConditionalBatchNorm(num_classes=0)
    with pytest.raises(ValueError, match="NHWC"):
        nz.BatchNorm().build((None, 3))


# ---------------------------------------------------------------------------------------------
# Instance and layer-instance norms (U-GAT-IT).

def np_iln_core(x, rho, eps=1e-5):
    """U-GAT-IT adaILN / ILN with torch.var's unbiased variance, NHWC."""
    in_mean = x.mean((1, 2), keepdims=True)
    in_var = x.var((1, 2), keepdims=True, ddof=1)
    ln_mean = x.mean((1, 2, 3), keepdims=True)
    ln_var = x.var((1, 2, 3), keepdims=True, ddof=1)
    out_in = (x - in_mean) / np.sqrt(in_var + eps)
    out_ln = (x - ln_mean) / np.sqrt(ln_var + eps)
    return rho * out_in + (1 - rho) * out_ln


def test_adaptive_layer_instance_norm():
    rng = np.random.RandomState(15)
    layer = nz.AdaptiveLayerInstanceNorm()
    x = rng.randn(2, 3, 4, 5).astype(np.float32)
    gamma, beta = rng.randn(2, 5).astype(np.float32), rng.randn(2, 5).astype(np.float32)
    layer.build(x.shape)
    np.testing.assert_array_equal(layer.rho.numpy(), np.full(5, 0.9, np.float32))
    rho = np.linspace(0.0, 1.0, 5).astype(np.float32)
    layer.rho.assign(rho)
    out = layer(x, gamma, beta).numpy()
    expected = np_iln_core(x.astype(np.float64), rho) * gamma[:, None, None] + beta[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_layer_instance_norm_and_clip():
    rng = np.random.RandomState(16)
    layer = nz.LayerInstanceNorm()
    x = rng.randn(2, 4, 4, 3).astype(np.float32)
    layer.build(x.shape)
    assert np.all(layer.rho.numpy() == 0.0) and np.all(layer.gamma.numpy() == 1.0)
    layer.rho.assign([-0.5, 0.3, 1.7])
    layer.gamma.assign([1.0, 2.0, 3.0])
    layer.beta.assign([0.5, 0.0, -0.5])
    layer.clip_rho()
    np.testing.assert_allclose(layer.rho.numpy(), [0.0, 0.3, 1.0], rtol=1e-6)
    out = layer(x).numpy()
    expected = np_iln_core(x.astype(np.float64), np.array([0.0, 0.3, 1.0])) * [1, 2, 3] + [0.5, 0, -0.5]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_instance_norm_is_pytorch_instance_norm():
    x = np.random.RandomState(17).randn(2, 4, 4, 3).astype(np.float32)
    out = nz.instance_norm()(x).numpy()
    expected = (x - x.mean((1, 2), keepdims=True)) / np.sqrt(x.var((1, 2), keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
