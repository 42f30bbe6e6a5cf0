"""ProGAN networks: shapes, parameter counts, pixel norm, progressive fade, stage cost, labels,
FQ blocks, compiled execution."""

import numpy as np
import pytest
import tensorflow as tf

import fq_keras
from networks import layers as L
from networks import progan as P

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
SMALL = dict(fmap_base=64, fmap_max=16)  # widths min(64 / 2^stage, 16): 16, 16, 8, 4, 2 at 4..64


def trainable_count(net):
    return sum(int(np.prod(v.shape)) for v in net.trainable_weights)


def widths(resolution, fmap_base=64, fmap_max=16):
    return {2 ** i: min(fmap_base // 2 ** (i - 1), fmap_max)
            for i in range(2, int(np.log2(resolution)) + 1)}


def expected_g(resolution, latent, c=0, img=3, **w):
    ch = widths(resolution, **w)
    n = (latent + c) * 16 * ch[4] + ch[4] + 9 * ch[4] ** 2 + ch[4]
    for r in ch:
        if r > 4:
            n += 9 * ch[r // 2] * ch[r] + ch[r] + 9 * ch[r] ** 2 + ch[r]
        n += ch[r] * img + img
    return n


def expected_d(resolution, out=1, img=3, **w):
    ch = widths(resolution, **w)
    nf0 = min(w.get("fmap_base", 64), w.get("fmap_max", 16))
    n = sum(img * ch[r] + ch[r] for r in ch)
    n += sum(9 * ch[r] ** 2 + ch[r] + 9 * ch[r] * ch[r // 2] + ch[r // 2] for r in ch if r > 4)
    c = ch[4]
    return n + 9 * (c + 1) * c + c + 16 * c * nf0 + nf0 + nf0 * out + out


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_shapes_and_parameter_counts(resolution):
    G = P.Generator(resolution=resolution, latent_size=8, **SMALL)
    D = P.Discriminator(resolution=resolution, **SMALL)
    assert trainable_count(G) == expected_g(resolution, 8)
    assert trainable_count(D) == expected_d(resolution)
    images = G(tf.random.normal((4, 8)))
    assert images.shape == (4, resolution, resolution, 3) and images.dtype == tf.float32
    assert D(images).shape == (4, 1)


def test_paper_1024_sizes():
    # ProGAN paper, Table 2 (CelebA-HQ 1024): 23.1M trainable parameters in G and in D.
    G, D = P.Generator(resolution=1024), P.Discriminator(resolution=1024)
    assert round(trainable_count(G) / 1e5) == 231 and round(trainable_count(D) / 1e5) == 231
    assert G.latent_size == 512 and G.channels[1024] == 16 and D.channels[4] == 512


def test_generator_features_are_pixel_normalised():
    G = P.Generator(resolution=8, latent_size=8, **SMALL)
    x = G.b4(tf.random.normal((2, 8)) * 3.0)
    x = G.b8(x).numpy()
    np.testing.assert_allclose(np.mean(x ** 2, axis=-1), 1.0, rtol=1e-4)
    no_pn = P.Generator(resolution=8, latent_size=8, use_pixelnorm=False, **SMALL)
    assert not np.allclose(np.mean(no_pn.b4(tf.random.normal((2, 8))).numpy() ** 2, -1), 1.0)


def test_non_fused_variants_and_relu_run():
    G = P.Generator(resolution=16, latent_size=8, fused_scale=False, use_leakyrelu=False, **SMALL)
    D = P.Discriminator(resolution=16, fused_scale=False, **SMALL)
    assert trainable_count(G) == expected_g(16, 8)
    assert D(G(tf.random.normal((4, 8)))).shape == (4, 1)
    with pytest.raises(ValueError, match="fused_scale"):
        P.Discriminator(resolution=16, fused_scale="yes", **SMALL)


def test_labels_concat_and_auxiliary_head():
    G = P.Generator(resolution=8, latent_size=8, c_dim=3, **SMALL)
    D = P.Discriminator(resolution=8, c_dim=3, **SMALL)
    assert trainable_count(D) == expected_d(8, out=4)
    z = tf.random.normal((4, 8))
    images = G(z, tf.one_hot([0, 1, 2, 0], 3))
    assert not np.allclose(images.numpy(), G(z, tf.one_hot([1, 1, 1, 1], 3)).numpy())
    scores, label_logits = D(images, return_label_logits=True)
    assert scores.shape == (4, 1) and label_logits.shape == (4, 3)
    with pytest.raises(ValueError, match="labels .* are required"):
        G(z)
    with pytest.raises(ValueError, match="predicts labels"):
        D(images, tf.one_hot([0, 1, 2, 0], 3))

#----------------------------------------------------------------------------
# Progressive growing.


def _nets():
    G = P.Generator(resolution=32, latent_size=8, **SMALL)
    D = P.Discriminator(resolution=32, fq_blocks=(8, 32), fq_num_embeddings=8, **SMALL)
    return G, D


def test_generator_fade_boundaries_and_continuity():
    G, _ = _nets()
    z = tf.random.normal((4, 8))
    g8 = G(z, resolution=8).numpy()
    g16 = G(z, resolution=16).numpy()
    # lod = log2 R - log2 S: the stage's own network; + 1: the previous stage, upscaled.
    # t = 0: a + (b - a) * 0 = a exactly. t = 1: a + (b - a) rounds twice, <= eps32 (|a| + |b|).
    lerp_atol = EPS32 * (np.abs(g16).max() + np.abs(g8).max())
    np.testing.assert_array_equal(G(z, resolution=16, lod=1.0).numpy(), g16)
    np.testing.assert_allclose(G(z, resolution=16, lod=2.0).numpy(), L.upscale2d(g8).numpy(),
                               atol=lerp_atol)
    np.testing.assert_array_equal(G(z, resolution=8, lod=2.0).numpy(), g8)
    # Continuous in lod across both ends of the 8 -> 16 transition and linear inside it.
    for lod, reference in ((1.999, L.upscale2d(g8).numpy()), (1.001, g16)):
        out = G(z, resolution=16, lod=lod).numpy()
        assert np.abs(out - reference).max() <= 1e-3 * np.abs(g16 - L.upscale2d(g8)).max() + 1e-6
    # <= 3 roundings each side of |.| <= |a| + |b|: <= 3 eps32 (|a| + |b|) ~ 2e-6 (|a| + |b| ~ 6).
    np.testing.assert_allclose(G(z, resolution=16, lod=1.25).numpy(),
                               0.75 * g16 + 0.25 * L.upscale2d(g8).numpy(), atol=1e-5)
    # lod outside the stage's range is clipped to it.
    np.testing.assert_allclose(G(z, resolution=16, lod=3.0).numpy(), L.upscale2d(g8).numpy(),
                               atol=lerp_atol)


def test_discriminator_fade_boundaries_and_continuity():
    _, D = _nets()
    images = tf.random.uniform((4, 16, 16, 3), -1, 1)
    d16 = D(images).numpy()
    d8 = D(L.downscale2d(images)).numpy()
    np.testing.assert_array_equal(D(images, lod=1.0).numpy(), d16)  # t = 0: exact
    # t = 1: the blend's <= eps32 (|a| + |b|) (~3 eps32 of the features, |x| ~ 1-3) carried by
    # D's unit-gain (equalised) layers to the output: ~3 eps32 * 3 ~ 1e-6.
    np.testing.assert_allclose(D(images, lod=2.0).numpy(), d8, atol=1e-6)
    near = D(images, lod=1.999).numpy()
    assert np.abs(near - d8).max() <= 1e-2 * np.abs(d16 - d8).max() + 1e-6


def test_lod_is_a_tensor_without_retracing():
    G, D = _nets()
    fn = tf.function(lambda z, lod: D(G(z, lod=lod, resolution=16), lod=lod))
    z = tf.random.normal((4, 8))
    outs = [fn(z, tf.constant(lod)).numpy() for lod in (1.9, 1.5, 1.1)]
    assert fn.experimental_get_tracing_count() == 1
    assert not np.allclose(outs[0], outs[2])


def _max_spatial(concrete):
    return max(t.shape[1] for op in concrete.graph.get_operations() for t in op.outputs
               if t.shape.rank == 4 and t.shape[1] is not None)


def test_stage_8_runs_no_higher_resolution_layer():
    G, D = _nets()
    g_cf = tf.function(lambda z, lod: G(z, lod=lod, resolution=8)).get_concrete_function(
        tf.TensorSpec([4, 8]), tf.TensorSpec([]))
    d_cf = tf.function(lambda x, lod: D(x, lod=lod, return_fq=True)).get_concrete_function(
        tf.TensorSpec([4, 8, 8, 3]), tf.TensorSpec([]))
    assert _max_spatial(g_cf) == 8 and _max_spatial(d_cf) == 8
    used = {v.name for v in g_cf.variables} | {v.name for v in d_cf.variables}
    for net in (G, D):
        high = [v.path for v in net.weights if any(s in v.path for s in ("b16", "b32", "rgb16",
                                                                          "rgb32", "fq32"))]
        assert high and not [p for p in high if p + ":0" in used]
    stage8 = [v.path for v in G.weights + D.weights if "b8" in v.path or "rgb8" in v.path]
    assert stage8 and all(p + ":0" in used for p in stage8 if "fq" not in p)
    # Convolution FLOPs counted from the traced shapes: the 8x8 stage of the 32x32 network
    # costs exactly what a network built for 8x8 costs, a fraction of the full network.
    G8 = P.Generator(resolution=8, latent_size=8, **SMALL)
    g8_cf = tf.function(lambda z, lod: G8(z, lod=lod)).get_concrete_function(
        tf.TensorSpec([4, 8]), tf.TensorSpec([]))
    full = tf.function(lambda z, lod: G(z, lod=lod)).get_concrete_function(
        tf.TensorSpec([4, 8]), tf.TensorSpec([]))
    assert _conv_flops(g_cf) == _conv_flops(g8_cf) > 0
    assert _conv_flops(full) > 3 * _conv_flops(g_cf)


def _conv_flops(concrete):
    flops = 0
    for op in concrete.graph.get_operations():
        if op.type in ("Conv2D", "Conv2DBackpropInput"):
            out = op.outputs[0].shape
            k = op.inputs[1].shape
            flops += 2 * int(np.prod(out[1:])) * k[0] * k[1] * (
                k[2] if op.type == "Conv2D" else k[3])
    return flops


def test_fq_blocks_follow_the_stage():
    _, D = _nets()
    assert D.fq_blocks == (32, 8)
    assert D.active_fq_layers(16) == D.active_fq_layers(8) == [D.fq_layers[1]]
    assert D.active_fq_layers(4) == []
    logits, lookups = D(tf.random.uniform((4, 16, 16, 3)), lod=1.5, return_fq=True)
    assert [lk["quantized"].shape for lk in lookups] == [(4, 4, 4, 16)]
    fq_keras.update_dictionaries(D.active_fq_layers(16), lookups)
    _, lookups = D(tf.random.uniform((4, 4, 4, 3)), return_fq=True)
    assert lookups == []
    _, lookups = D(tf.random.uniform((4, 32, 32, 3)), return_fq=True)
    assert [lk["quantized"].shape for lk in lookups] == [(4, 16, 16, 8), (4, 4, 4, 16)]
    with pytest.raises(ValueError, match=r"valid blocks \(by input resolution\) are \[32, 16, 8\]"):
        P.Discriminator(resolution=32, fq_blocks=(64,), **SMALL)


def test_compiled_training_step_matches_eager():
    G, D = _nets()
    z = tf.random.normal((4, 8))

    def step(z, lod):
        with tf.GradientTape() as tape:
            images = G(z, lod=lod, resolution=16)
            logits, lookups = D(images, lod=lod, return_fq=True)
            loss = tf.reduce_mean(logits) + fq_keras.fq_loss(lookups)
        return tape.gradient(loss, G.trainable_variables + D.trainable_variables)

    eager = step(z, tf.constant(1.5))
    for jit in (False, True):
        grads = tf.function(step, jit_compile=jit)(z, tf.constant(1.5))
        for g, e in zip(grads, eager):
            if e is None:
                assert g is None
            else:
                np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-3, atol=1e-5)


def test_progressive_step_under_mirrored_strategy(two_replica_strategy):
    strategy = two_replica_strategy
    with strategy.scope():
        G, D = _nets()
    active = D.active_fq_layers(16)

    @tf.function
    def step(z, lod):
        def replica_fn(z):
            with tf.GradientTape() as tape:
                logits, lookups = D(G(z, lod=lod, resolution=16), lod=lod, return_fq=True)
                loss = tf.reduce_sum(logits) / 8 + fq_keras.fq_loss(lookups, 8)
            grads = tape.gradient(loss, D.trainable_variables)
            fq_keras.update_dictionaries(active, lookups)
            return logits, [g for g in grads if g is not None]
        return strategy.run(replica_fn, args=(z,))

    z = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.random.stateless_normal([4, 8], [ctx.replica_id_in_sync_group, 1]))
    logits, grads = step(z, tf.constant(1.5))
    assert [t.shape for t in strategy.experimental_local_results(logits)] == [(4, 1)] * 2
    dictionaries = [v.numpy() for v in
                    strategy.experimental_local_results(active[0].embeddings.value)]
    np.testing.assert_array_equal(dictionaries[0], dictionaries[1])  # same all-reduced update
    assert int(active[0].num_updates.numpy()) == 1


def test_mixed_precision(mixed_precision):
    G, D = _nets()
    images = G(tf.random.normal((4, 8)), lod=1.5, resolution=16)
    assert images.dtype == tf.float32 and G.b16.conv1.compute_dtype == mixed_precision.name
    logits, lookups = D(images, lod=1.5, return_fq=True)
    assert logits.dtype == tf.float32 and np.all(np.isfinite(logits.numpy()))
    assert lookups[0]["loss"].dtype == tf.float32
