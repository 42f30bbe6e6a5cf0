"""StyleGAN v1 networks: shapes, parameter counts, mapping, layer epilogue math, truncation,
style mixing, progressive fade and stage cost, D_basic labels and FQ, compiled execution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fq_keras
from networks import layers as L
from networks import stylegan as V

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
SMALL = dict(fmap_base=64, fmap_max=16)
G_SMALL = dict(z_dim=8, w_dim=8, mapping_layers=2, mapping_fmaps=8, **SMALL)


def trainable_count(net):
    return sum(int(np.prod(v.shape)) for v in net.trainable_weights)


def expected_g(resolution, z=8, w=8, c=0, img=3, mapping=2):
    ch = {2 ** i: min(64 // 2 ** (i - 1), 16) for i in range(2, int(np.log2(resolution)) + 1)}
    fan_in = z * (2 if c else 1)
    n = c * z
    for _ in range(mapping):
        n += fan_in * w + w
        fan_in = w
    epilogue = lambda k: k + k + w * 2 * k + 2 * k  # noqa: E731  noise, bias, style dense
    for r in ch:
        n += 16 * ch[4] if r == 4 else 9 * ch[r // 2] * ch[r]
        n += epilogue(ch[r]) + 9 * ch[r] ** 2 + epilogue(ch[r]) + ch[r] * img + img
    return n


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_shapes_and_parameter_counts(resolution):
    G = V.Generator(resolution=resolution, **G_SMALL)
    D = V.Discriminator(resolution=resolution, **SMALL)
    assert trainable_count(G) == expected_g(resolution)
    assert G.num_ws == 2 * int(np.log2(resolution)) - 2
    images = G(tf.random.normal((4, 8)))
    assert images.shape == (4, resolution, resolution, 3)
    assert D(images).shape == (4, 1)


def test_official_1024_sizes():
    # StyleGAN (FFHQ 1024): G 26.2M parameters (mapping 2.1M); D_basic equals ProGAN's D, 23.1M.
    G, D = V.Generator(resolution=1024), V.Discriminator(resolution=1024)
    assert round(trainable_count(G) / 1e5) == 262 and round(trainable_count(G.mapping) / 1e5) == 21
    assert round(trainable_count(D) / 1e5) == 231
    assert G.num_ws == 18 and G.synthesis.channels[1024] == 16


def test_mapping_embeds_labels_and_normalises_the_concatenation():
    G = V.Generator(resolution=8, c_dim=3, **G_SMALL)
    m = G.mapping
    z, c = np.random.default_rng(0).standard_normal((2, 8)), np.eye(3)[[0, 2]]
    x = np.concatenate([z, c @ m.label_embedding.numpy()], axis=1)
    x = x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)
    for fc in m.fcs:
        coef = np.sqrt(2) / np.sqrt(x.shape[1]) * 0.01  # he_std * lrmul
        y = x @ (fc.kernel.numpy() * coef) + fc.bias.numpy() * 0.01
        x = np.where(y >= 0, y, 0.2 * y)
    ws = m(z.astype(np.float32), c.astype(np.float32)).numpy()
    assert ws.shape == (2, G.num_ws, 8)
    np.testing.assert_allclose(ws, np.broadcast_to(x[:, None], ws.shape), rtol=1e-4, atol=1e-6)


def test_first_layer_epilogue_math():
    """const -> + noise * strength -> + bias -> lrelu -> instance norm -> x (s + 1) + b."""
    G = V.Generator(resolution=8, **G_SMALL)
    block = G.synthesis.b4
    epi = block.epilogue0
    rng = np.random.default_rng(1)
    block.const.assign(rng.standard_normal((4, 4, 16)))
    epi.noise.strength.assign(rng.standard_normal(16))
    epi.bias.assign(rng.standard_normal(16))
    epi.adain.style.bias.assign(rng.standard_normal(32))
    w = rng.standard_normal((2, 8)).astype(np.float32)
    x = block.const.numpy()[None] + epi.noise.noise_const.numpy()[None, :, :, None] * \
        epi.noise.strength.numpy()
    x = x + epi.bias.numpy()
    x = np.where(x >= 0, x, 0.2 * x)
    x = x - x.mean(axis=(1, 2), keepdims=True)
    x = x / np.sqrt(np.mean(x ** 2, axis=(1, 2), keepdims=True) + 1e-8)
    style = w @ (epi.adain.style.kernel.numpy() / np.sqrt(8)) + epi.adain.style.bias.numpy()
    expected = x * (style[:, None, None, :16] + 1) + style[:, None, None, 16:]
    ours = epi(tf.tile(block.const[None], [2, 1, 1, 1]), w, noise_mode="const").numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def test_truncation_cutoff_and_style_mixing_at_a_stage():
    G = V.Generator(resolution=64, seed=2, **G_SMALL)
    ws = G.mapping(tf.random.normal((2, 8)))
    G.update_dlatent_avg(ws, beta=0.0)
    truncated = G.truncate(ws, 0.7, 8).numpy()
    avg = G.dlatent_avg.numpy()
    np.testing.assert_allclose(truncated[:, :8], avg + 0.7 * (ws.numpy()[:, :8] - avg), rtol=1e-5)
    # psi = 1 past the cutoff: avg + (w - avg) * 1 rounds twice, <= eps32 (|avg| + |w|).
    np.testing.assert_allclose(truncated[:, 8:], ws.numpy()[:, 8:],
                               atol=EPS32 * (np.abs(avg).max() + np.abs(ws.numpy()).max()))
    assert G.num_layers_at(16) == 6 and G.num_layers_at() == 10
    ones, zeros = tf.ones_like(ws), tf.zeros_like(ws)
    for _ in range(20):
        mixed = G.mix_styles(zeros, ones, num_active_layers=G.num_layers_at(16), prob=1.0)
        cutoff = int((mixed.numpy()[0, :, 0] == 0).sum())
        assert 1 <= cutoff < 6


def test_generator_fade_and_stage_cost():
    G = V.Generator(resolution=32, seed=3, **G_SMALL)
    z = tf.random.normal((4, 8))
    g8, g16 = G(z, resolution=8).numpy(), G(z, resolution=16).numpy()
    # t = 1: a + (b - a) * 1 rounds twice, <= eps32 (|a| + |b|); t = 0: a + (b - a) * 0 = a.
    np.testing.assert_allclose(G(z, resolution=16, lod=2.0).numpy(), L.upscale2d(g8).numpy(),
                               atol=EPS32 * (np.abs(g16).max() + np.abs(g8).max()))
    np.testing.assert_array_equal(G(z, resolution=16, lod=1.0).numpy(), g16)
    near = G(z, resolution=16, lod=1.999).numpy()
    assert np.abs(near - L.upscale2d(g8).numpy()).max() < 1e-2 * np.abs(g8).max()
    cf = tf.function(lambda z, lod: G(z, lod=lod, resolution=8, noise_mode="random"))
    cf = cf.get_concrete_function(tf.TensorSpec([4, 8]), tf.TensorSpec([]))
    # The blur pads 8x8 maps to 10x10 inside its op; nothing reaches 16x16.
    assert max(t.shape[1] for op in cf.graph.get_operations() for t in op.outputs
               if t.shape.rank == 4 and t.shape[1] is not None) < 16
    used = {v.name for v in cf.variables}
    assert not [v.path for v in G.weights if ("b16" in v.path or "b32" in v.path)
                and v.path + ":0" in used]
    assert any("b8" in name for name in used)


def test_discriminator_blur_labels_and_fade():
    D = V.Discriminator(resolution=16, c_dim=3, **SMALL)
    assert D.b16.blur_filter == (1, 2, 1) and D.label_mode == "projection"
    images = tf.random.uniform((4, 16, 16, 3), -1, 1)
    labels = tf.one_hot([0, 1, 2, 1], 3)
    logits = D(images, labels).numpy()
    raw = D.b4(D.b8(D.b16(D.fromrgb16(images)))).numpy()  # (4, 3) LabelSwitch outputs
    np.testing.assert_allclose(logits[:, 0], raw[np.arange(4), [0, 1, 2, 1]], rtol=1e-5)
    with pytest.raises(ValueError, match="labels .* are required"):
        D(images)
    d8 = D(L.downscale2d(images), labels).numpy()
    # t = 1: the blend's <= eps32 (|a| + |b|) (~3 eps32 of the features, |x| ~ 1-3) carried by
    # D's unit-gain (equalised) layers to the output: ~3 eps32 * 3 ~ 1e-6.
    np.testing.assert_allclose(D(images, labels, lod=1.0).numpy(), d8, atol=1e-6)


def test_official_fq_placement_and_defaults():
    D = V.Discriminator(resolution=32, **V.FQ_DEFAULTS, **SMALL)
    fq = D.fq_layers[0]
    assert D.fq_blocks == (8,)
    assert (fq.num_embeddings, fq.decay, fq.commitment_cost) == (1024, 0.8, 5.0)
    for size in (8, 16, 32):  # block 8 runs at every stage
        _, lookups = D(tf.random.uniform((4, size, size, 3)), lod=0.5, return_fq=True)
        assert [lk["quantized"].shape for lk in lookups] == [(4, 4, 4, D.channels[4])]
    fq_keras.update_dictionaries(D.active_fq_layers(8), lookups)
    with pytest.raises(ValueError, match=r"valid blocks .* are \[32, 16, 8\]"):
        V.Discriminator(resolution=32, fq_blocks=("4x4",), **SMALL)


def test_random_noise_is_seeded_and_compiles():
    G = V.Generator(resolution=8, seed=4, **G_SMALL)
    for block in G.synthesis.blocks:
        for epi in (block.epilogue0, block.epilogue1):
            epi.noise.strength.assign(tf.fill(epi.noise.strength.shape, 0.5))
    z = tf.random.normal((2, 8))
    fn = tf.function(lambda z: G(z, noise_mode="random"), jit_compile=True)
    a, b = fn(z).numpy(), fn(z).numpy()
    assert not np.allclose(a, b)
    G.synthesis.seed_generator.state.assign([4, 0])
    np.testing.assert_allclose(fn(z).numpy(), a, rtol=1e-5, atol=1e-5)


def test_mixed_precision_generator(mixed_precision):
    half = mixed_precision
    G16 = V.Generator(resolution=16, **G_SMALL)
    keras.mixed_precision.set_global_policy("float32")
    G32 = V.Generator(resolution=16, **G_SMALL)
    G32.set_weights(G16.get_weights())
    z = tf.random.normal((4, 8))
    out16, out32 = G16(z, lod=0.5).numpy(), G32(z, lod=0.5).numpy()
    assert G16.synthesis.b16.conv1.compute_dtype == half.name and G16.mapping.dtype == "float32"
    # float16 rounds each op by <= 2^-11 ~ 5e-4 relative; ~10 layers of several ops each: ~3%
    # (bfloat16, 2^-8: 8x).
    np.testing.assert_allclose(out16, out32, atol=3e-2 * (half.unit_roundoff / 2.0 ** -11) * np.abs(out32).max())
