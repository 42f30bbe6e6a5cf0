"""networks/layers.py against direct numpy transcriptions of the reference formulas (NHWC)."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from networks import layers as L

RNG = np.random.default_rng(0)


EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


def randn(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def np_conv_same(x, w):
    """Cross-correlation with zero 'same' padding, x NHWC, w HWIO (odd k)."""
    k = w.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, wd = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (w.shape[3],))
    for a in range(k):
        for b in range(k):
            out += np.einsum("nhwi,io->nhwo", xp[:, a:a + h, b:b + wd], w[a, b])
    return out


def np_nearest_up(x):
    return x.repeat(2, axis=1).repeat(2, axis=2)


def np_avg_down(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def np_fir(x, kernel, up=1, down=1, pad=(0, 0), gain=1.0):
    """Direct upfirdn: zero-insert, pad, true 2-D convolution with the FIR filter, subsample."""
    f = np.outer(kernel, kernel).astype(np.float64)
    f = f / f.sum() * gain
    n, h, w, c = x.shape
    if up > 1:
        y = np.zeros((n, h * up, w * up, c))
        y[:, ::up, ::up] = x
        x = y
    x = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    k = f.shape[0]
    ho, wo = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((n, ho, wo, c))
    for i in range(ho):
        for j in range(wo):
            window = x[:, i:i + k, j:j + k, :]
            out[:, i, j] = np.einsum("nabc,ab->nc", window, f[::-1, ::-1])
    return out[:, ::down, ::down]

#----------------------------------------------------------------------------
# Equalized learning rate.


@pytest.mark.parametrize("gain,lrmul", [(np.sqrt(2), 1.0), (1.0, 0.01)])
def test_equalized_dense_runtime_coefficient(gain, lrmul):
    keras.utils.set_random_seed(0)   # the draw must not depend on which tests ran before
    layer = L.EqualizedDense(7, gain=gain, lrmul=lrmul)
    layer.build((None, 300))
    he_std = gain / np.sqrt(300)
    assert layer.runtime_coef == pytest.approx(he_std * lrmul)
    # Init N(0, 1/lrmul): the runtime weight then has std he_std whatever lrmul is. The sample
    # std of n = 2100 normal draws has relative standard error 1/sqrt(2n) = 1.5%: 8% is > 5 SE
    # (5% was 3.3 SE and failed once, at 5.1%, with an unseeded draw).
    assert layer.kernel.numpy().std() == pytest.approx(1.0 / lrmul, rel=0.08)
    layer.bias.assign(randn(7))
    x = randn(4, 300)
    expected = x @ (layer.kernel.numpy() * he_std * lrmul) + layer.bias.numpy() * lrmul
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_equalized_dense_without_wscale_is_he_init():
    keras.utils.set_random_seed(0)
    layer = L.EqualizedDense(8, gain=2.0, lrmul=0.5, use_wscale=False)
    layer.build((None, 400))
    assert layer.runtime_coef == 0.5
    # n = 3200 draws: relative standard error of the sample std 1/sqrt(2n) = 1.25%; 8% > 6 SE.
    assert layer.kernel.numpy().std() == pytest.approx(2.0 / np.sqrt(400) / 0.5, rel=0.08)


def test_equalized_conv_fan_in_activation_and_gain():
    layer = L.EqualizedConv2D(5, 3, gain=1.0, activation="lrelu", activation_gain=np.sqrt(2))
    layer.build((None, 6, 6, 4))
    assert layer.runtime_coef == pytest.approx(1 / np.sqrt(3 * 3 * 4))
    layer.bias.assign(randn(5))
    x = randn(2, 6, 6, 4)
    y = np_conv_same(x, layer.kernel.numpy() * layer.runtime_coef) + layer.bias.numpy()
    expected = np.where(y >= 0, y, 0.2 * y) * np.sqrt(2) * 0.5
    np.testing.assert_allclose(layer(x, gain=0.5).numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("ours, theirs", [
    (L.leaky_relu, lambda v: tf.nn.leaky_relu(v, L.LRELU_SLOPE)),
    (L.unfused_relu, tf.nn.relu)], ids=["leaky_relu", "unfused_relu"])
def test_activation_equals_tensorflows_in_value_gradient_and_second_order(ours, theirs, dtype):
    """networks.layers.leaky_relu (gradient read from the output) against tf.nn.leaky_relu,
    and unfused_relu (a Maximum op with ReluGrad's gradient, 0 at x = 0 where Maximum's own
    would give 1) against tf.nn.relu: the same bits for the value, the gradient and R1's double
    back-propagation through two convolutions, on inputs with zeros of both signs, values whose
    0.2 x underflows, and large ones."""
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    edges = np.array([0.0, -0.0, tiny, -tiny, -3 * tiny, 1e30, -1e30, 1.0, -1.0], np.float32)
    x = tf.cast(np.concatenate([edges, randn(55)]).reshape(1, 8, 8, 1), dtype)
    upstream = tf.cast(randn(1, 8, 8, 1), dtype)
    w1, w2 = tf.cast(randn(3, 3, 1, 4), dtype), tf.cast(randn(3, 3, 4, 1), dtype)
    bias = tf.cast(randn(4), dtype)

    def results(activation):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = activation(x)
        grad = tape.gradient(y, x, output_gradients=upstream)
        with tf.GradientTape() as outer:
            outer.watch([w1, w2])
            with tf.GradientTape() as inner:
                inner.watch(x)
                hidden = activation(tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "SAME"), bias))
                score = tf.reduce_sum(tf.nn.conv2d(hidden, w2, 1, "SAME"))
            penalty = tf.reduce_sum(tf.square(inner.gradient(score, x)))
        return [y, grad, penalty, *outer.gradient(penalty, [w1, w2])]

    ours, theirs = results(ours), results(theirs)
    assert np.count_nonzero(ours[3].numpy()) > 0       # the second order is not trivially 0
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(tf.cast(a, tf.float32).numpy(),
                                      tf.cast(b, tf.float32).numpy())


@pytest.mark.one_float_path   # its own process runs oneDNN whatever this one runs
def test_training_graphs_with_leaky_relu_keep_grapplers_remapper_working(onednn_graph_run):
    """With oneDNN, grappler's remapper fused Conv2D + BiasAdd + LeakyRelu under the
    LeakyReluGrad that still read the BiasAdd, logged "remapper failed" on every StyleGAN
    training graph and dropped its work there. A fresh process with oneDNN on (the training
    tools' setting) traces a D-like layer's loss with R1's double back-propagation: no remapper
    error, and the same numbers as eager execution (float32 summation order only)."""
    code = """if True:
        import numpy as np, tensorflow as tf
        from networks import layers as L
        rng = np.random.default_rng(0)
        x = tf.constant(rng.standard_normal((4, 8, 8, 3)), tf.float32)
        layers = [L.EqualizedConv2D(8, 3, activation="lrelu"),
                  L.EqualizedConv2D(8, 1, activation="lrelu")]
        layers[1](layers[0](x))
        def step(x):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    inner.watch(x)
                    score = tf.reduce_sum(tf.square(layers[1](layers[0](x))))
                r1 = tf.reduce_sum(tf.square(inner.gradient(score, x)))
                total = r1 + score
            weights = [w for layer in layers for w in layer.trainable_weights]
            return [r1, *outer.gradient(total, weights)]
        eager, graph = step(x), tf.function(step)(x)
        print(max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(eager, graph)))
    """
    # Differences come from summation order in sums of <= 8 * 9 * 3 products per output and
    # their gradients: a few float32 ulps of the largest value; 100 ulps is far below the
    # relative 1e-2 and more that dropping a term or a slope would leave.
    assert float(onednn_graph_run(code).split()[-1]) <= 100 * EPS32


def test_the_output_gain_is_folded_into_weight_and_bias_only_where_that_is_exact():
    """act(x w + b) g = act(x (w g) + b g) needs g > 0 and a positively homogeneous
    activation; otherwise the gain stays a product after the activation. Both give the
    formula: a negative output gain (not folded) and a positive one (folded)."""
    assert L.fold_gain("lrelu", 2.0) == (2.0, 1.0) and L.fold_gain("linear", 0.5) == (0.5, 1.0)
    assert L.fold_gain("lrelu", -2.0) == (1.0, -2.0)
    gain = tf.constant(2.0)
    assert L.fold_gain("relu", gain) == (1.0, gain)       # a tensor: value unknown when traced
    x = randn(2, 6, 6, 4)
    for activation_gain in (np.sqrt(2), -np.sqrt(2)):
        layer = L.EqualizedConv2D(5, 3, activation="lrelu", activation_gain=activation_gain)
        layer.build((None, 6, 6, 4))
        layer.bias.assign(randn(5))
        y = np_conv_same(x, layer.kernel.numpy() * layer.runtime_coef) + layer.bias.numpy()
        expected = np.where(y >= 0, y, 0.2 * y) * activation_gain * 0.5
        np.testing.assert_allclose(layer(x, gain=0.5).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_equalized_layers_reject_bad_config():
    with pytest.raises(ValueError, match="kernel_size"):
        L.EqualizedConv2D(4, 2)
    with pytest.raises(ValueError, match="activation"):
        L.EqualizedDense(4, activation="tanh")
    with pytest.raises(ValueError, match="lrmul"):
        L.EqualizedDense(4, lrmul=0)
    with pytest.raises(ValueError, match="up and down"):
        L.EqualizedConv2D(4, 3, up=True, down=True)


def test_config_round_trip():
    layer = L.EqualizedConv2D(4, 3, down=True, resample_kernel=(1, 3, 3, 1), lrmul=0.5,
                              activation="lrelu", clamp=256)
    clone = L.EqualizedConv2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    mbstd = L.MinibatchStddev(group_size=2, num_features=2)
    assert L.MinibatchStddev.from_config(mbstd.get_config()).get_config() == mbstd.get_config()

#----------------------------------------------------------------------------
# Normalisation, minibatch stddev.


def test_pixel_norm():
    x = randn(3, 4, 4, 8)
    expected = x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(L.pixel_norm(x).numpy(), expected, rtol=1e-5)
    # float16: eps 1e-8 underflows, the float32 computation keeps zeros finite.
    zeros16 = tf.zeros((1, 2, 2, 4), tf.float16)
    out = L.pixel_norm(zeros16)
    assert out.dtype == tf.float16 and np.all(np.isfinite(out.numpy()))


def np_mbstd(x, group_size=4, num_features=1):
    """Per group m = {m, m+M, m+2M, ...} (strided), as the reference states."""
    n, h, w, c = x.shape
    g = min(group_size, n)
    m = n // g
    out = np.zeros((n, h, w, num_features))
    for j in range(m):
        members = x[j::m].astype(np.float64)  # the G samples of group j
        std = np.sqrt(members.var(axis=0) + 1e-8)  # [H,W,C]
        feats = std.reshape(h, w, num_features, c // num_features).mean(axis=(0, 1, 3))
        out[j::m] = feats
    return np.concatenate([x, out], axis=-1)


@pytest.mark.parametrize("n,group,features", [(8, 4, 1), (4, 4, 2), (6, 2, 1), (2, 4, 1)])
def test_minibatch_stddev_strided_grouping(n, group, features):
    x = randn(n, 3, 3, 4)
    np.testing.assert_allclose(L.minibatch_stddev(x, group, features).numpy(),
                               np_mbstd(x, group, features), rtol=1e-5, atol=1e-6)


def test_minibatch_stddev_is_not_contiguous_grouping():
    x = randn(8, 2, 2, 3)
    ours = L.minibatch_stddev(x, 4).numpy()[..., -1]
    contiguous = np.sqrt(x.reshape(2, 4, 2, 2, 3).var(axis=1) + 1e-8).mean(axis=(1, 2, 3))
    assert not np.allclose(ours[:, 0, 0], np.repeat(contiguous, 4), atol=1e-3)


def test_minibatch_stddev_batch_must_divide():
    with pytest.raises(ValueError, match="not divisible by the group size 4"):
        L.minibatch_stddev(randn(6, 2, 2, 3), 4)
    fn = tf.function(lambda x: L.minibatch_stddev(x, 4),
                     input_signature=[tf.TensorSpec([None, 2, 2, 3])])
    assert fn(randn(8, 2, 2, 3)).shape == (8, 2, 2, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not divisible by the group size"):
        fn(randn(6, 2, 2, 3))


def test_batch_lanes_draw_their_rows_of_the_whole_batch_draw_and_merge_back():
    """Random draws inside `BatchLanes.run` are each lane's rows of the draws the whole batch
    makes (same numbers, same generator state after), and `merge` restores batch order."""
    whole = keras.random.SeedGenerator(5)
    expected = [L.replica_random("normal", [8, 2, 2, 1], whole),
                L.replica_random("uniform", [8, 3], whole)]
    laned = keras.random.SeedGenerator(5)
    lanes = L.BatchLanes(2)
    draws = [lanes.run(j, lambda: (L.replica_random("normal", [4, 2, 2, 1], laned),
                                   L.replica_random("uniform", [4, 3], laned)))
             for j in range(2)]
    for i, whole_draw in enumerate(expected):
        np.testing.assert_array_equal(draws[0][i].numpy(), whole_draw.numpy()[0::2])
        np.testing.assert_array_equal(draws[1][i].numpy(), whole_draw.numpy()[1::2])
        np.testing.assert_array_equal(lanes.merge([d[i] for d in draws]).numpy(),
                                      whole_draw.numpy())
    np.testing.assert_array_equal(laned.state.numpy(), whole.state.numpy())
    assert L.BatchLanes.active is None
    # Lanes do not nest, and a lane may not draw what lane 0 did not.
    with pytest.raises(RuntimeError, match="do not nest"):
        lanes.run(0, lambda: lanes.run(1, lambda: None))
    extra = L.BatchLanes(2)
    extra.run(0, lambda: L.replica_random("normal", [1], laned))
    with pytest.raises(RuntimeError, match="draws more random numbers than lane 0"):
        extra.run(1, lambda: [L.replica_random("normal", [1], laned) for _ in range(2)])
    assert L.BatchLanes.active is None


def test_lanes_keep_minibatch_stddev_groups_whole():
    """Strided lanes of a minibatch-stddev network: group m holds samples m, m + M, ... (M = N
    / G), so `count` lanes keep groups whole iff count divides M; mbstd per lane is then the
    whole batch's, merged back."""
    assert L.lanes_keep_groups(8, 2, [4])          # M = 2
    assert not L.lanes_keep_groups(4, 2, [4])      # M = 1: one group of 4
    assert not L.lanes_keep_groups(8, 4, [4])
    assert L.lanes_keep_groups(8, 4, [1]) and L.lanes_keep_groups(8, 2, [])
    assert not L.lanes_keep_groups(6, 4, [])       # the batch does not split
    x = randn(8, 2, 2, 3)
    lanes = L.BatchLanes(2)
    laned = lanes.merge([L.minibatch_stddev(x[j::2], 4) for j in range(2)])
    np.testing.assert_array_equal(laned.numpy(), L.minibatch_stddev(x, 4).numpy())


def test_adain():
    layer = L.AdaIN()
    layer.build((None, 4, 4, 3), (None, 5))
    layer.style.bias.assign(randn(6))
    x, w = randn(2, 4, 4, 3), randn(2, 5)
    xn = x - x.mean(axis=(1, 2), keepdims=True)
    xn = xn / np.sqrt(np.mean(xn ** 2, axis=(1, 2), keepdims=True) + 1e-8)
    style = w @ (layer.style.kernel.numpy() / np.sqrt(5)) + layer.style.bias.numpy()
    expected = xn * (style[:, None, None, :3] + 1) + style[:, None, None, 3:]
    np.testing.assert_allclose(layer(x, w).numpy(), expected, rtol=1e-4, atol=1e-5)

#----------------------------------------------------------------------------
# Resampling.


def test_fir_upsample_and_downsample_match_direct_convolution():
    # Unit-sum FIRs of n <= 16 taps (<= 4 non-zero when upsampling) on |x| < 5 (float64 numpy):
    # float32 sums err <= (n - 1) eps32/2 * 5 <= 4.5e-6, taps' own rounding eps32/2 * 5: < 1e-5.
    x = randn(2, 5, 5, 3)
    np.testing.assert_allclose(L.upsample_2d(x).numpy(),
                               np_fir(x, [1, 3, 3, 1], up=2, pad=(2, 1), gain=4), atol=1e-5)
    x = randn(2, 8, 8, 3)
    np.testing.assert_allclose(L.downsample_2d(x).numpy(),
                               np_fir(x, [1, 3, 3, 1], down=2, pad=(1, 1)), atol=1e-5)
    # Asymmetric kernel: true convolution (flipped), negative padding crops.
    np.testing.assert_allclose(L.upfirdn2d(x, [1, 2, 5], padding=(1, -1)).numpy(),
                               np_fir(np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))[:, :-1, :-1],
                                      [1, 2, 5]), atol=1e-5)


def np_fir_input_gradient(dy, kernel, down, pad, size):
    """The input gradient of np_fir(x, kernel, down=down, pad=pad) for x of spatial `size`,
    float64: every output's upstream dy spread back over its window with the filter's taps."""
    f = np.outer(kernel, kernel).astype(np.float64)
    f = (f / f.sum())[::-1, ::-1]   # the taps np_fir's windows use
    k, (h, w) = f.shape[0], size
    n, ho, wo, c = dy.shape
    grad = np.zeros((n, h + pad[0] + pad[1], w + pad[0] + pad[1], c))
    for i in range(ho):
        for j in range(wo):
            grad[:, i * down:i * down + k, j * down:j * down + k] += (
                dy[:, i, j, np.newaxis, np.newaxis, :] * f[np.newaxis, :, :, np.newaxis])
    return grad[:, pad[0]:pad[0] + h, pad[0]:pad[0] + w]


def test_strided_fir_gradients_in_bfloat16_are_the_transposed_filter():
    """bfloat16, stride 2 (as downsample_2d): the input gradient is `_depthwise_adjoint`, not
    TensorFlow's DepthwiseConv2dNativeBackpropInput (5x slower there), equal to the transposed
    filter, and differentiable again (R1's second-order term) to the filter itself. Odd,
    non-square inputs leave rows and columns no window reaches (zero gradient there)."""
    kernel = [1, 2, 4, 1]   # asymmetric: a transposed filter that forgot to flip it fails
    bf16 = lambda a: tf.constant(a, tf.bfloat16)   # noqa: E731
    x = bf16(randn(2, 9, 7, 3))
    upstream = bf16(randn(2, 3, 2, 3))   # bfloat16-exact: the losses below add no rounding
    probe = bf16(randn(2, 9, 7, 3))

    @tf.function
    def gradients(x, upstream):
        with tf.GradientTape() as outer:
            outer.watch(upstream)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = L.upfirdn2d(x, kernel, down=2)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.cast(upstream, tf.float32))
            grad = inner.gradient(loss, x)
            second = tf.reduce_sum(tf.cast(grad, tf.float32) * tf.cast(probe, tf.float32))
        return y, grad, outer.gradient(second, upstream)

    y, grad, grad_of_grad = gradients(x, upstream)
    assert y.shape == (2, 3, 2, 3) and grad.dtype == tf.bfloat16
    # TensorFlow's input gradient only at stride 1 (the second-order term's), where it is fast.
    strides = [list(op.get_attr("strides")) for op in
               gradients.get_concrete_function(x, upstream).graph.get_operations()
               if op.type == "DepthwiseConv2dNativeBackpropInput"]
    assert strides and all(s == [1, 1, 1, 1] for s in strides)
    # bfloat16 arithmetic: oneDNN sums in float32 and rounds once, Eigen rounds every product
    # and partial sum to bfloat16 (<= 2^-9 relative each): with n non-zero terms per output
    # the error is <= 2n 2^-9 sum|terms| either way (n = 4 taps reach each input at stride 2).
    f64 = lambda t: t.numpy().astype(np.float64)   # noqa: E731
    expected = np_fir_input_gradient(f64(upstream), kernel, 2, (0, 0), (9, 7))
    terms = np_fir_input_gradient(np.abs(f64(upstream)), kernel, 2, (0, 0), (9, 7))
    assert np.all(np.abs(f64(grad) - expected) <= 2 * 4 * 2.0 ** -9 * terms)
    assert np.all(f64(grad)[:, -1] == 0) and np.all(f64(grad)[:, :, -1] == 0)
    assert np.abs(expected).max() > 0.1
    # d/d(upstream) of sum(grad * probe) is the filter applied to the probe (16 terms).
    expected = np_fir(f64(probe), kernel, down=2)
    terms = np_fir(np.abs(f64(probe)), kernel, down=2)
    assert np.all(np.abs(f64(grad_of_grad) - expected) <= 2 * 16 * 2.0 ** -9 * terms)


def test_blur_and_box_resampling():
    x = randn(1, 6, 6, 2)
    # 9 unit-sum taps on |x| < 5: <= 8 eps32/2 * 5 + eps32/2 * 5 ~ 2.7e-6 < 1e-5.
    np.testing.assert_allclose(L.blur2d(x).numpy(), np_fir(x, [1, 2, 1], pad=(1, 1)), atol=1e-5)
    # Means of 4 (both sides float32): <= 2 * 3 eps32/2 max|x|.
    np.testing.assert_allclose(L.downscale2d(x).numpy(), np_avg_down(x),
                               atol=3 * EPS32 * np.abs(x).max())
    np.testing.assert_array_equal(L.upscale2d(x).numpy(), np_nearest_up(x))  # copies: exact


# Convolutions of N(0,1) x and w against float64 numpy: an n-term float32 sum of unit products
# errs ~eps32 * n / sqrt(2) typically (n <= 48 here: ~4e-6), a few times that at the worst of a
# few hundred outputs: atol=1e-4 holds with > 5x margin.


def test_fused_up_equals_nearest_then_flipped_conv():
    x, w = randn(2, 4, 4, 3), randn(3, 3, 3, 5)
    fused = L.conv2d_resample(x, w, up=True, fused_scale=True).numpy()
    np.testing.assert_allclose(fused, np_conv_same(np_nearest_up(x), w[::-1, ::-1]), atol=1e-4)
    separate = L.conv2d_resample(x, w, up=True, fused_scale=False).numpy()
    np.testing.assert_allclose(separate, np_conv_same(np_nearest_up(x), w), atol=1e-4)


def test_fused_down_equals_conv_then_average():
    x, w = randn(2, 8, 8, 3), randn(3, 3, 3, 5)
    expected = np_avg_down(np_conv_same(x, w))
    for fused in (True, False):
        np.testing.assert_allclose(L.conv2d_resample(x, w, down=True, fused_scale=fused).numpy(),
                                   expected, atol=1e-4)


def test_fir_up_conv_is_transposed_conv_with_flipped_kernel_then_fir():
    x, w = randn(1, 4, 4, 2), randn(3, 3, 2, 3)
    ours = L.conv2d_resample(x, w, up=True, resample_kernel=(1, 3, 3, 1)).numpy()
    # Transposed conv, stride 2, no padding, with the spatially flipped kernel (scatter-add).
    t = np.zeros((1, 9, 9, 3))
    wf = w[::-1, ::-1]
    for a in range(3):
        for b in range(3):
            t[:, a:a + 8:2, b:b + 8:2] += np.einsum("nhwi,io->nhwo", x, wf[a, b])
    np.testing.assert_allclose(ours, np_fir(t, [1, 3, 3, 1], pad=(1, 1), gain=4), atol=1e-4)


def test_fir_down_conv_is_fir_then_strided_conv():
    x, w = randn(1, 8, 8, 2), randn(3, 3, 2, 3)
    ours = L.conv2d_resample(x, w, down=True, resample_kernel=(1, 3, 3, 1)).numpy()
    f = np_fir(x, [1, 3, 3, 1], pad=(2, 2))  # 9x9
    expected = np.zeros((1, 4, 4, 3))
    for a in range(3):
        for b in range(3):
            expected += np.einsum("nhwi,io->nhwo", f[:, a:a + 8:2, b:b + 8:2], w[a, b])
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_lerp_clip():
    a, b = tf.constant([0.0, 2.0]), tf.constant([4.0, 4.0])
    # Dyadic values: every lerp below is exact.
    np.testing.assert_array_equal(L.lerp_clip(a, b, 0.25).numpy(), [1.0, 2.5])
    np.testing.assert_array_equal(L.lerp_clip(a, b, -1.0).numpy(), [0.0, 2.0])
    np.testing.assert_array_equal(L.lerp_clip(a, b, 3.0).numpy(), [4.0, 4.0])

#----------------------------------------------------------------------------
# Modulated convolution, noise.


def np_modconv(x, w, s, demodulate=True):
    out = []
    for n in range(x.shape[0]):
        wn = w * s[n][None, None, :, None]
        if demodulate:
            wn = wn / np.sqrt(np.sum(wn ** 2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        out.append(np_conv_same(x[n:n + 1], wn))
    return np.concatenate(out)


def conv_same_derivatives(conv, x, w, upstream):
    """[y, dL/dx, dL/dw, dP/dx, dP/dw] of L = sum(upstream * conv(x, w)) and R1's kind of
    penalty P = sum((dL/dx)^2) + sum(dL/dw * w) (double back-propagation through the gradient
    by the input and, for the filter gradient's own rule, by the kernel)."""
    with tf.GradientTape() as outer:
        outer.watch([x, w])
        with tf.GradientTape() as inner:
            inner.watch([x, w])
            y = conv(x, w)
        dx, dw = inner.gradient(y, [x, w], output_gradients=upstream)
        penalty = tf.reduce_sum(tf.square(dx)) + tf.reduce_sum(dw * w)
    return [y, dx, dw, *outer.gradient(penalty, [x, w])]


@pytest.fixture
def product_filter_gradients():
    """The matrix-product filter gradients, whatever this machine's default (the tests of
    their rules run on every machine)."""
    with L.filter_gradients("products"):
        yield


@pytest.mark.parametrize("k", [1, 3, 5])
def test_conv2d_same_matches_tensorflows_float64_convolution_to_second_order(
        k, product_filter_gradients):
    """conv2d_same (the filter gradient by one matrix product, `conv2d_same_filter_grad`, in
    every order) against TensorFlow's own float64 convolution and gradients: the value, both
    gradients, and both gradients of a penalty on them, on a non-square input (a swapped H / W
    or a shifted block would be off by O(1)); eagerly and traced with a dynamic batch."""
    x, w, upstream = randn(3, 7, 5, 4), randn(k, k, 4, 6), randn(3, 7, 5, 6)

    def native(a, b):
        return tf.nn.conv2d(a, b, 1, "SAME")

    args64 = [tf.constant(v, tf.float64) for v in (x, w, upstream)]
    expected = conv_same_derivatives(native, *args64)
    # Every quantity is a chain of at most two sums: a convolution's (k*k*6 or k*k*4 terms)
    # and a filter gradient's (3*7*5 terms), each product rounded once. |error| <= n eps32
    # times the sum of |terms|, which the same computation on |inputs| bounds elementwise.
    n = k * k * 6 + 3 * 7 * 5
    scale = conv_same_derivatives(native, *[tf.abs(v) for v in args64])
    bounds = [n * EPS32 * np.abs(v.numpy()) + 1e-30 for v in scale]
    dynamic = tf.function(lambda a, b, u: conv_same_derivatives(L.conv2d_same, a, b, u),
                          input_signature=[tf.TensorSpec([None, 7, 5, 4]),
                                           tf.TensorSpec([k, k, 4, 6]),
                                           tf.TensorSpec([None, 7, 5, 6])])
    for ours in (conv_same_derivatives(L.conv2d_same, *map(tf.constant, (x, w, upstream))),
                 dynamic(x, w, upstream)):
        for a, b, bound in zip(ours, expected, bounds):
            assert a.shape == b.shape and a.dtype == tf.float32
            assert np.all(np.abs(a.numpy() - b.numpy()) <= bound)
    assert np.abs(expected[4].numpy()).max() > 1   # the second-order kernel term is not 0


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("extra", [0, 1])
def test_stride2_convolutions_match_tensorflows_float64_ones_to_second_order(
        k, extra, product_filter_gradients):
    """conv2d_stride2 and conv2d_stride2_transpose (filter gradients by matrix products on the
    parity planes, `conv2d_stride2_filter_grad`, in every order) against TensorFlow's float64
    stride-2 'valid' convolution and its transpose: value, both gradients and both gradients
    of a penalty on them; x of height 2(H-1)+k (+ `extra`, the row a valid convolution drops)
    and a different width; eagerly and traced with a dynamic batch."""
    h, w = 4, 3
    hx, wx = 2 * (h - 1) + k + extra, 2 * (w - 1) + k + 1 - extra
    x, kernel = randn(3, hx, wx, 4), randn(k, k, 4, 6)
    y_shape = (3, h, w, 6)
    cases = [  # (ours, TensorFlow's, first input, upstream gradient)
        (L.conv2d_stride2, lambda a, b: tf.nn.conv2d(a, b, 2, "VALID"), x, randn(*y_shape)),
        (lambda a, b: L.conv2d_stride2_transpose(a, b, (hx, wx)),
         lambda a, b: tf.nn.conv2d_transpose(a, b, tf.stack([tf.shape(a)[0], hx, wx, 4]), 2,
                                             "VALID"),
         randn(*y_shape), randn(3, hx, wx, 4)),
    ]
    for ours, native, first, upstream in cases:
        args64 = [tf.constant(v, tf.float64) for v in (first, kernel, upstream)]
        expected = conv_same_derivatives(native, *args64)
        # As conv2d_same's test: chains of at most two sums, a convolution's (<= k*k*6 terms)
        # and a filter gradient's (<= 3*4*3 terms), each product rounded once.
        n = k * k * 6 + 3 * h * w
        scale = conv_same_derivatives(native, *[tf.abs(v) for v in args64])
        bounds = [n * EPS32 * np.abs(v.numpy()) + 1e-30 for v in scale]
        dynamic = tf.function(
            lambda a, b, u, ours=ours: conv_same_derivatives(ours, a, b, u),
            input_signature=[tf.TensorSpec((None,) + first.shape[1:]),
                             tf.TensorSpec(kernel.shape),
                             tf.TensorSpec((None,) + upstream.shape[1:])])
        for got in (conv_same_derivatives(ours, *map(tf.constant, (first, kernel, upstream))),
                    dynamic(first, kernel, upstream)):
            for a, b, bound in zip(got, expected, bounds):
                assert a.shape == b.shape and a.dtype == tf.float32
                assert np.all(np.abs(a.numpy() - b.numpy()) <= bound)
        assert np.abs(expected[4].numpy()).max() > 1   # the second-order kernel term is not 0


def test_conv2d_same_takes_the_filter_gradient_by_matrix_product_where_products_win():
    """Under filter_gradients("products") the traced float32 gradients of conv2d_same,
    conv2d_stride2 and conv2d_stride2_transpose have matrix products and no
    Conv2DBackpropFilter; under filter_gradients("native"), in bfloat16 and for a dynamic
    height they are TensorFlow's own ops again. The default is the products on CPUs except
    with oneDNN on an AVX-512 CPU (`products_win`), and what `matmul_filter_gradients` says
    for this machine."""
    convs = {"same": (L.conv2d_same, 6), "stride2": (L.conv2d_stride2, 7),
             "transpose": (lambda a, b: L.conv2d_stride2_transpose(a, b, (7, 7)), 3)}

    def op_types(name, dtype, kind, dynamic_height=False):
        conv, size = convs[name]
        x = tf.TensorSpec([2, None if dynamic_height else size, size, 3], dtype)
        w = tf.TensorSpec([3, 3, 3, 3], dtype)

        def grads(a, b):
            with tf.GradientTape() as tape:
                tape.watch([a, b])
                y = conv(a, b)
            return tape.gradient(y, [a, b])
        with L.filter_gradients(kind):
            graph = tf.function(grads).get_concrete_function(x, w).graph
        return {op.type for op in graph.get_operations()}

    for name in convs:
        matmul = op_types(name, tf.float32, "products")
        assert "MatMul" in matmul and "Conv2DBackpropFilter" not in matmul, name
        natives = [op_types(name, tf.float32, "native"),
                   op_types(name, tf.bfloat16, "products")]
        if name != "transpose":   # its output size is given: the height is never dynamic
            natives.append(op_types(name, tf.float32, "products", dynamic_height=True))
        for native in natives:
            assert "Conv2DBackpropFilter" in native and "MatMul" not in native, name
        assert op_types(name, tf.float32, None) == (
            matmul if L.default_filter_gradients() == "products" else natives[0]), name

    avx2, avx512 = frozenset({"fpu", "avx2"}), frozenset({"fpu", "avx2", "avx512f"})
    assert L.products_win(False, True, avx2) and L.products_win(False, False, avx2)
    assert L.products_win(False, False, avx512)   # Eigen on an AVX-512 CPU
    assert not L.products_win(False, True, avx512)
    assert not L.products_win(True, True, avx2) and not L.products_win(True, False, avx2)
    assert L.matmul_filter_gradients() == L.products_win(
        bool(tf.config.list_physical_devices("GPU")), L.onednn_enabled(), L.cpu_flags())
    with pytest.raises(ValueError, match="not one of"):
        with L.filter_gradients("fast"):
            pass


def test_cpu_flags_reads_the_kernels_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16\nbugs\t: x\n")
    assert L.cpu_flags(str(cpuinfo)) == {"fpu", "avx2", "avx512f", "amx_bf16"}
    assert L.cpu_flags(str(tmp_path / "missing")) == frozenset()


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_matches_numpy_fused_and_not(demodulate):
    x, w, s = randn(3, 5, 5, 4), randn(3, 3, 4, 6) / 6, randn(3, 4) + 1
    # 36-term sums (|w| ~ 1/6 or demodulated): sum|x w| <= ||x|| ||w s|| ~ 6 * 3: worst-case
    # 35 eps32/2 * 18 ~ 3.8e-5 < 1e-4 (numpy in float64).
    expected = np_modconv(x, w, s, demodulate)
    for fused in (False, True):
        np.testing.assert_allclose(
            L.modulated_conv2d(x, w, s, demodulate=demodulate, fused=fused).numpy(),
            expected, atol=1e-4)


def test_modulated_up_conv_fused_equals_non_fused():
    x, w, s = randn(3, 4, 4, 4), randn(3, 3, 4, 5), randn(3, 4) + 1
    a = L.modulated_conv2d(x, w, s, up=True, resample_kernel=(1, 3, 3, 1), fused=False)
    b = L.modulated_conv2d(x, w, s, up=True, resample_kernel=(1, 3, 3, 1), fused=True)
    assert a.shape == b.shape == (3, 8, 8, 5)
    # Two float32 algorithms (modulate x vs per-sample weights), 36-term sums then a 16-tap FIR,
    # outputs ~N(0, 1) (demodulated): typical ~eps32 * 36 / sqrt(2) * 2 sides ~ 6e-6 < 1e-5.
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    xla = tf.function(lambda x: L.modulated_conv2d(x, w, s, up=True, resample_kernel=(1, 3, 3, 1),
                                                   fused=True), jit_compile=True)
    np.testing.assert_allclose(xla(x).numpy(), a.numpy(), atol=1e-5)  # the same bound


def np_per_sample_conv(x, ww, up):
    """y[b] = correlation of x[b] with ww[b] ('same'); up: zero insertion, pad k-1 (the
    stride-2 transposed convolution with the flipped kernel), float64."""
    n, h, w, i = x.shape
    k = ww.shape[1]
    if up:
        z = np.zeros((n, 2 * h - 1, 2 * w - 1, i))
        z[:, ::2, ::2] = x
        xp = np.pad(z, ((0, 0), (k - 1, k - 1), (k - 1, k - 1), (0, 0)))
    else:
        xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    ho, wo = xp.shape[1] - k + 1, xp.shape[2] - k + 1
    y = np.zeros((n, ho, wo, ww.shape[4]))
    for a in range(k):
        for b in range(k):
            y += np.einsum("nhwi,nio->nhwo", xp[:, a:a + ho, b:b + wo], ww[:, a, b])
    return y


PER_SAMPLE_PATHS = {"grouped": L._grouped_conv2d, "patches": L._patch_conv2d}


@pytest.mark.parametrize("path", sorted(PER_SAMPLE_PATHS))
@pytest.mark.parametrize("k, up", [(1, False), (3, False), (3, True)])
def test_per_sample_conv_paths_match_numpy_with_gradients(path, k, up):
    """Both implementations of the fused modulated conv's per-sample convolution (the grouped
    one exists only where grouped kernels do: oneDNN or GPU; the suite runs with oneDNN on
    and off) against numpy, eagerly, traced with a dynamic batch and under XLA; gradients
    with respect to x and the kernels equal those of the other path where both run."""
    if path == "grouped" and not L.grouped_convs_supported():
        pytest.skip("no grouped convolution kernels in this TensorFlow build (oneDNN off)")
    fn = PER_SAMPLE_PATHS[path]
    x, ww = randn(3, 5, 5, 4), randn(3, k, k, 4, 6)
    expected = np_per_sample_conv(x.astype(np.float64), ww.astype(np.float64), up)
    dynamic = tf.function(lambda a, b: fn(a, b, up), input_signature=[
        tf.TensorSpec([None, 5, 5, 4]), tf.TensorSpec([None, k, k, 4, 6])])
    xla = tf.function(lambda a, b: fn(a, b, up), jit_compile=True)
    # Each output sums n = k*k*4 float32 products: |error| <= n * eps32 * sum|terms| (the
    # recursive-summation bound, products rounded once each), computed per element.
    bound = k * k * 4 * np.finfo(np.float32).eps * np_per_sample_conv(
        np.abs(x).astype(np.float64), np.abs(ww).astype(np.float64), up)
    for y in (fn(x, ww, up), dynamic(x, ww), xla(x, ww)):
        assert y.shape == expected.shape
        assert np.all(np.abs(y.numpy() - expected) <= bound)
    xt, wt = tf.constant(x), tf.constant(ww)
    grads = {}
    for name, f in PER_SAMPLE_PATHS.items():
        if name == "grouped" and not L.grouped_convs_supported():
            continue
        with tf.GradientTape() as tape:
            tape.watch([xt, wt])
            loss = tf.reduce_sum(f(xt, wt, up) ** 2)
        grads[name] = [g.numpy() for g in tape.gradient(loss, [xt, wt])]
    # d/dx sums n = k*k*6 terms 2y*ww, d/dww sums n = H'*W' terms 2y*x, each path within
    # n * eps32 * n * max|2y| * max|factor| of the exact value (y's own rounding is smaller).
    two_y = 2 * np.abs(expected).max()
    eps = np.finfo(np.float32).eps
    n_x, n_w = k * k * 6, expected.shape[1] * expected.shape[2]
    bounds = (2 * n_x ** 2 * eps * two_y * np.abs(ww).max(),
              2 * n_w ** 2 * eps * two_y * np.abs(x).max())
    for other in grads.values():
        for a, b, bound in zip(grads[path], other, bounds):
            np.testing.assert_allclose(a, b, rtol=0, atol=bound)
    assert grads[path][0].shape == x.shape and grads[path][1].shape == ww.shape


def test_grouped_conv_probe_matches_this_tensorflow():
    """The probe answers what a grouped transposed convolution really does here."""
    x, w = tf.ones([1, 4, 4, 4]), tf.ones([3, 3, 1, 4])  # 4 groups
    try:
        tf.nn.conv2d_transpose(x, w, [1, 9, 9, 4], 2, "VALID")
        works = True
    except tf.errors.InvalidArgumentError:
        works = False
    assert L.grouped_convs_supported() == works


def test_fused_modulated_up_conv_trains_on_every_cpu():
    """The fused path (official converted weights) differentiates with oneDNN on and off."""
    layer = L.ModulatedConv2D(5, 3, up=True, fused=True)
    x, w = tf.constant(randn(2, 4, 4, 3)), tf.constant(randn(2, 6))
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        loss = tf.reduce_sum(layer(x, w) ** 2)
    grads = tape.gradient(loss, [x, w] + layer.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    unfused = L.ModulatedConv2D(5, 3, up=True, fused=False)
    unfused.build((None, 4, 4, 3), (None, 6))
    for dst, src in zip(unfused.weights, layer.weights):
        dst.assign(src)
    np.testing.assert_allclose(layer(x, w).numpy(), unfused(x, w).numpy(), rtol=0, atol=1e-4)


def test_modulated_conv_layer_styles_add_one_and_gradients_flow():
    layer = L.ModulatedConv2D(4, 3)
    layer.build((None, 5, 5, 3), (None, 6))
    w = randn(2, 6)
    expected_styles = w @ (layer.affine.kernel.numpy() / np.sqrt(6)) + 1.0
    np.testing.assert_allclose(layer.styles(w).numpy(), expected_styles, rtol=1e-5)
    x = tf.constant(randn(2, 5, 5, 3))
    w = tf.constant(w)
    with tf.GradientTape() as tape:
        tape.watch([x, w])
        loss = tf.reduce_sum(layer(x, w) ** 2)
    grads = tape.gradient(loss, [x, w] + layer.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    assert len(layer.trainable_variables) == 3  # kernel, affine kernel, affine bias


def test_modulated_conv_float16_matches_float32():
    x, w, s = randn(2, 6, 6, 8), randn(3, 3, 8, 8) / 8, 50 * (randn(2, 8) + 1)
    ref = L.modulated_conv2d(x, w, s).numpy()
    for fused in (False, True):
        y16 = L.modulated_conv2d(tf.cast(x, tf.float16), w, s, fused=fused)
        assert y16.dtype == tf.float16
        np.testing.assert_allclose(y16.numpy().astype(np.float32), ref, atol=2e-2, rtol=1e-2)


def test_noise_input_modes():
    layer = L.NoiseInput(per_channel=True)
    layer.build((None, 4, 4, 3))
    layer.strength.assign([0.5, -1.0, 2.0])
    x = randn(2, 4, 4, 3)
    const = layer.noise_const.numpy()[None, :, :, None] * np.array([0.5, -1.0, 2.0])
    # Float32 x + s n rounds twice (numpy's side is float64): <= eps32/2 (|s n| + |x + s n|).
    np.testing.assert_allclose(layer(x, noise_mode="const").numpy(), x + const,
                               atol=EPS32 * (np.abs(const).max() + np.abs(x + const).max()))
    np.testing.assert_array_equal(layer(x, noise_mode="none").numpy(), x)
    seeds = keras.random.SeedGenerator(3)
    a = layer(x, noise_mode="random", seed_generator=seeds).numpy()
    b = layer(x, noise_mode="random", seed_generator=seeds).numpy()
    assert not np.allclose(a, b)
    # The noise is one map per sample shared by all channels, scaled per channel.
    n = (a - x) / np.array([0.5, -1.0, 2.0])
    # a = x + s n rounds by eps32/2 |a| (|a| < 15), / |s| >= 0.5: <= 1.8e-6 per channel < 1e-5.
    np.testing.assert_allclose(n[..., 0], n[..., 2], atol=1e-5)
    again = layer(x, noise_mode="random", seed_generator=keras.random.SeedGenerator(3)).numpy()
    np.testing.assert_array_equal(again, a)  # same seed, same noise, same ops
    with pytest.raises(ValueError, match="SeedGenerator"):
        layer(x, noise_mode="random")
    with pytest.raises(ValueError, match="noise_mode"):
        layer(x, noise_mode="fixed")
    compiled = tf.function(lambda x: layer(x, noise_mode="random", seed_generator=seeds),
                           jit_compile=True)
    assert not np.allclose(compiled(x).numpy(), compiled(x).numpy())


def test_layers_under_mixed_precision(mixed_precision):
    half = mixed_precision
    conv = L.EqualizedConv2D(4, 3, down=True, resample_kernel=(1, 3, 3, 1), activation="lrelu")
    conv.build((None, 8, 8, 3))
    assert conv.kernel.dtype == "float32" and conv.compute_dtype == half.name
    x = randn(2, 8, 8, 3)
    y = conv(x)
    assert y.dtype == half.dtype
    ref = L.conv2d_resample(x, conv.runtime_kernel(), down=True, resample_kernel=(1, 3, 3, 1))
    # float16 rounds x, the kernel and y by <= 2^-11 relative: ~3 * 2^-11 * |y| (|y| < 3) < 1e-2;
    # bfloat16 (2^-8) 8x that.
    np.testing.assert_allclose(y.numpy().astype(np.float32),
                               np.where(ref >= 0, ref, 0.2 * ref), atol=1e-2 * (half.unit_roundoff / 2.0 ** -11))
    out = L.MinibatchStddev()(tf.cast(randn(4, 2, 2, 3), half.dtype))
    assert out.dtype == half.dtype and np.all(np.isfinite(out.numpy()))


def test_make_fq_layers_validates_block_names():
    blocks, fq_layers = L.make_fq_layers((16, 32), [32, 16, 8], {32: 8, 16: 4, 8: 4}, 16, 0.8,
                                         0.25)
    assert blocks == (32, 16)
    assert [fq.embeddings.shape for fq in fq_layers] == [(16, 8), (16, 4)]
    with pytest.raises(ValueError, match=r"valid blocks .* are \[32, 16, 8\]"):
        L.make_fq_layers((4,), [32, 16, 8], {}, 16, 0.8, 0.25)
    with pytest.raises(ValueError, match="duplicate"):
        L.make_fq_layers((8, 8), [32, 16, 8], {8: 4}, 16, 0.8, 0.25)
    _, per_block = L.make_fq_layers((8, 16), [32, 16, 8], {16: 4, 8: 4}, {8: 32, 16: 64}, 0.8,
                                    {8: 1.0, 16: 0.25})
    assert [fq.num_embeddings for fq in per_block] == [64, 32]
    assert [fq.commitment_cost for fq in per_block] == [0.25, 1.0]


def test_fir_under_xla_uses_the_same_math():
    x = randn(2, 8, 8, 3)
    for fn in (L.upsample_2d, L.downsample_2d, L.blur2d):
        xla = tf.function(fn, jit_compile=True)
        # <= 16 unit-sum taps on |x| < 5, summed in other orders: <= 2 * 15 eps32/2 * 5 ~ 9e-6.
        np.testing.assert_allclose(xla(x).numpy(), fn(x).numpy(), atol=1e-5)
    assert not L.in_xla_context()
    flags = []
    tf.function(lambda x: flags.append(L.in_xla_context()) or x, jit_compile=True)(x)
    assert flags == [True]


def test_fade_coefficient():
    # Reals are faded by datasets.fade_reals (one home); this is the networks' own t.
    assert L.fade_coefficient(tf.constant(3.0), 32, 8).numpy() == 1.0
    assert L.fade_coefficient(tf.constant(2.5), 32, 8).numpy() == 0.5
