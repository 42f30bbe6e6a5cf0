"""StyleGAN2 networks: shapes, parameter counts, mapping / truncation / mixing, FQ blocks,
progressive growing, tf.function / XLA, MirroredStrategy and mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fq_keras
from networks import stylegan2 as S

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
SMALL = dict(fmap_base=64, fmap_max=16)  # channels min(128 / R, 16): 16, 16, 8, 4, 2 at 4..64
G_SMALL = dict(z_dim=8, w_dim=8, mapping_layers=2, **SMALL)


def trainable_count(net):
    return sum(int(np.prod(v.shape)) for v in net.trainable_weights)


def expected_g_params(resolution, ch, z=8, w=8, c=0, img=3, arch="skip", mapping=2):
    """stylegan2-ada-pytorch parameter formula (SynthesisLayer: affine, weight, bias, strength)."""
    feats = [z + (w if c else 0)] + [w] * mapping
    n = sum(feats[i] * feats[i + 1] + feats[i + 1] for i in range(mapping))
    n += c * w + w if c else 0
    layer = lambda i, o: w * i + i + 9 * i * o + o + 1  # noqa: E731
    torgb = lambda k: w * k + k + k * img + img  # noqa: E731
    for r in ch:
        if r == 4:
            n += ch[4] * 16 + layer(ch[4], ch[4])
        else:
            n += layer(ch[r // 2], ch[r]) + layer(ch[r], ch[r])
        n += torgb(ch[r]) if (arch == "skip" or r == resolution) else 0
        n += ch[r // 2] * ch[r] if (arch == "resnet" and r > 4) else 0
    return n


def expected_d_params(resolution, ch, img=3, arch="resnet"):
    n = 0
    for r in [2 ** i for i in range(int(np.log2(resolution)), 2, -1)]:
        tmp, out = ch[r], ch[r // 2]
        n += img * tmp + tmp if (r == resolution or arch == "skip") else 0
        n += 9 * tmp * tmp + tmp + 9 * tmp * out + out + (tmp * out if arch == "resnet" else 0)
    c = ch[4]
    n += img * c + c if arch == "skip" else 0
    return n + 9 * (c + 1) * c + c + 16 * c * c + c + c + 1


def test_config_e_and_f_channel_formulas():
    f = S.channels_per_resolution(1024, **S.PRESETS["config-f"])
    e = S.channels_per_resolution(1024, **S.PRESETS["config-e"])
    assert f == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    assert e == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def test_config_f_1024_generator_has_the_official_parameter_count():
    G = S.Generator(resolution=1024, **S.PRESETS["config-f"])
    assert trainable_count(G) == 30_370_060  # stylegan2 / stylegan2-ada-pytorch, FFHQ 1024
    assert G.num_ws == 18


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
@pytest.mark.parametrize("arch", ["skip", "resnet", "orig"])
def test_shapes_and_parameter_counts(resolution, arch):
    ch = S.channels_per_resolution(resolution, **SMALL)
    G = S.Generator(resolution=resolution, architecture=arch, **G_SMALL)
    D = S.Discriminator(resolution=resolution, architecture=arch, **SMALL)
    assert trainable_count(G) == expected_g_params(resolution, ch, arch=arch)
    assert trainable_count(D) == expected_d_params(resolution, ch, arch=arch)
    assert G.num_ws == 2 * int(np.log2(resolution)) - 2
    images = G(tf.random.normal((2, 8)))
    assert images.shape == (2, resolution, resolution, 3) and images.dtype == tf.float32
    assert D(images).shape == (2, 1)


def test_config_round_trip_rebuilds_the_same_network():
    G = S.Generator(resolution=16, architecture="resnet", c_dim=2, conv_clamp=256., **G_SMALL)
    D = S.Discriminator(resolution=16, c_dim=2, fq_blocks=(8,), fq_num_embeddings={8: 4}, **SMALL)
    G2 = S.Generator.from_config(G.get_config())
    D2 = S.Discriminator.from_config(D.get_config())
    assert trainable_count(G2) == trainable_count(G) and G2.c_dim == 2
    assert D2.fq_blocks == (8,) and D2.fq_layers[0].num_embeddings == 4


def test_mapping_labels_and_broadcast():
    G = S.Generator(resolution=8, c_dim=3, **G_SMALL)
    z, c = tf.random.normal((2, 8)), tf.one_hot([0, 2], 3)
    ws = G.mapping(z, c)
    assert ws.shape == (2, G.num_ws, 8)
    np.testing.assert_array_equal(ws[:, 0].numpy(), ws[:, -1].numpy())  # broadcast copies
    assert not np.allclose(ws.numpy(), G.mapping(z, tf.one_hot([1, 1], 3)).numpy())
    with pytest.raises(ValueError, match="labels .* are required"):
        G(z)
    with pytest.raises(ValueError, match="unconditional"):
        S.Generator(resolution=8, **G_SMALL)(z, c)


def test_truncation_with_cutoff_and_dlatent_average():
    G = S.Generator(resolution=16, **G_SMALL)
    ws = G.mapping(tf.random.normal((4, 8)))
    new_avg = G.update_dlatent_avg(ws, beta=0.9)
    # 0.1 m as m - 0.9 m: roundings ~eps32 |m| are 10 eps32 of the result; the means of 4 terms
    # differ by <= 4 eps32 max|w| (absolute: m may cancel to ~0), times 0.1.
    np.testing.assert_allclose(new_avg.numpy(), 0.1 * ws[:, 0].numpy().mean(0), rtol=1e-5,
                               atol=0.1 * 4 * EPS32 * np.abs(ws.numpy()).max())
    np.testing.assert_array_equal(G.dlatent_avg.numpy(), new_avg.numpy())
    t = G.truncate(ws, truncation_psi=0.25, truncation_cutoff=2).numpy()
    avg = G.dlatent_avg.numpy()
    np.testing.assert_allclose(t[:, :2], avg + 0.25 * (ws.numpy()[:, :2] - avg), rtol=1e-5)
    # psi = 1 past the cutoff: avg + (w - avg) * 1 rounds twice, <= eps32 (|avg| + |w|).
    np.testing.assert_allclose(t[:, 2:], ws.numpy()[:, 2:],
                               atol=EPS32 * (np.abs(avg).max() + np.abs(ws.numpy()).max()))
    # psi = 0: avg + (w - avg) * 0 = avg exactly.
    np.testing.assert_array_equal(G.truncate(ws, 0.0).numpy(), np.broadcast_to(avg, ws.shape))


def test_style_mixing_cutoff():
    G = S.Generator(resolution=16, seed=5, **G_SMALL)
    ws1 = tf.zeros((2, G.num_ws, 8))
    ws2 = tf.ones((2, G.num_ws, 8))
    cutoffs = set()
    for _ in range(30):
        mixed = G.mix_styles(ws1, ws2, prob=1.0).numpy()[0, :, 0]
        cutoff = int((mixed == 0).sum())
        np.testing.assert_array_equal(mixed, np.arange(G.num_ws) >= cutoff)
        cutoffs.add(cutoff)
    assert cutoffs <= set(range(1, G.num_ws)) and len(cutoffs) > 2
    np.testing.assert_array_equal(G.mix_styles(ws1, ws2, prob=0.0).numpy(), ws1.numpy())
    active = G.mix_styles(ws1, ws2, num_active_layers=2, prob=1.0).numpy()[0, :, 0]
    np.testing.assert_array_equal(active, [0, 1, 1, 1, 1, 1])


def test_noise_modes_and_seeded_random_noise():
    G = S.Generator(resolution=8, seed=7, **G_SMALL)
    for layer in (G.synthesis.b4.conv1, G.synthesis.b8.conv0, G.synthesis.b8.conv1):
        layer.noise.strength.assign(0.5)
    z = tf.random.normal((2, 8))
    const = G(z, noise_mode="const").numpy()
    np.testing.assert_array_equal(G(z, noise_mode="const").numpy(), const)  # same computation
    assert not np.allclose(G(z, noise_mode="none").numpy(), const)
    a, b = G(z, noise_mode="random").numpy(), G(z, noise_mode="random").numpy()
    assert not np.allclose(a, b)
    G2 = S.Generator.from_config(G.get_config())
    G2.set_weights(G.get_weights())
    G2.synthesis.seed_generator.state.assign([7, 0])
    G.synthesis.seed_generator.state.assign([7, 0])
    np.testing.assert_array_equal(G2(z, noise_mode="random").numpy(),  # same weights and noise
                                  G(z, noise_mode="random").numpy())
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="fixed")


def test_path_length_gradient_wrt_dlatents():
    G = S.Generator(resolution=16, **G_SMALL)
    ws = G.mapping(tf.random.normal((2, 8)))
    noise = tf.random.normal((2, 16, 16, 3)) / 16.0
    with tf.GradientTape() as tape:
        tape.watch(ws)
        images = G.synthesis(ws, noise_mode="random")
        out = tf.reduce_sum(images * noise)
    grads = tape.gradient(out, ws)
    lengths = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=2), axis=1))
    assert grads.shape == ws.shape and np.all(lengths.numpy() > 0)


def test_fq_blocks_shapes_order_and_defaults():
    D = S.Discriminator(resolution=32, fq_blocks=(16, 32), **SMALL)
    assert D.fq_blocks == (32, 16)
    assert [fq.num_embeddings for fq in D.fq_layers] == [128, 128]
    assert [(fq.decay, fq.commitment_cost, fq.forward) for fq in D.fq_layers] == \
        [(0.8, 0.25, "continuous")] * 2
    images = tf.random.uniform((4, 32, 32, 3), -1, 1)
    logits, lookups = D(images, return_fq=True)
    ch = D.channels
    assert [lk["quantized"].shape for lk in lookups] == [(4, 16, 16, ch[16]), (4, 8, 8, ch[8])]
    assert [lk["indices"].shape for lk in lookups] == [(4, 16, 16), (4, 8, 8)]
    # Official forward: FQ adds a loss only; the logits equal the plain forward (bit for bit).
    np.testing.assert_array_equal(logits.numpy(), D(images).numpy())
    stats = fq_keras.update_dictionaries(D.fq_layers, lookups, lookups)
    assert len(stats) == 2 and int(D.fq_layers[0].num_updates.numpy()) == 1
    assert fq_keras.fq_loss(lookups, 4).numpy() > 0


def test_default_dictionary_size_is_the_official_per_block_k():
    """Official FQ-StyleGAN2 (res_dictsz_mapping): K = 64 after blocks >= 128, 128 below; an
    explicit K applies to every block; the config keeps None, so the rebuild is the same."""
    D = S.Discriminator(resolution=256, fq_blocks=(256, 128, 64, 16), **SMALL)
    assert [fq.num_embeddings for fq in D.fq_layers] == [64, 64, 128, 128]
    assert D.get_config()["fq_num_embeddings"] is None
    assert S.FQ_DEFAULTS["fq_num_embeddings"] is None
    D = S.Discriminator(resolution=256, fq_blocks=(128, 16), fq_num_embeddings=32, **SMALL)
    assert [fq.num_embeddings for fq in D.fq_layers] == [32, 32]


def test_fq_quantized_forward_changes_logits_and_bad_blocks_are_rejected():
    kw = dict(resolution=16, **SMALL)
    D = S.Discriminator(fq_blocks=(8,), fq_forward="quantized", fq_num_embeddings=4, **kw)
    images = tf.random.uniform((4, 16, 16, 3), -1, 1)
    logits, lookups = D(images, return_fq=True)
    assert lookups[0]["quantized"].shape == (4, 4, 4, D.channels[4])
    baseline = S.Discriminator(**kw)
    baseline.set_weights([w for w in D.get_weights()[:len(baseline.weights)]])
    assert not np.allclose(logits.numpy(), baseline(images).numpy())
    with pytest.raises(ValueError, match=r"valid blocks \(by input resolution\) are \[16, 8\]"):
        S.Discriminator(fq_blocks=(32,), **kw)
    with pytest.raises(ValueError, match=r"are \[16, 8\]"):
        S.Discriminator(fq_blocks=(4,), **kw)


def test_minibatch_stddev_batch_error():
    D = S.Discriminator(resolution=8, **SMALL)
    with pytest.raises(ValueError, match="not divisible by the group size 4"):
        D(tf.zeros((6, 8, 8, 3)))


def test_fixed_network_rejects_stages():
    G = S.Generator(resolution=16, **G_SMALL)
    with pytest.raises(ValueError, match="progressive=True"):
        G(tf.zeros((2, 8)), resolution=8)
    with pytest.raises(ValueError, match="architecture='skip'"):
        S.Discriminator(resolution=16, progressive=True, **SMALL)

#----------------------------------------------------------------------------
# Progressive growing (option; architecture 'skip').


def _progressive_pair():
    G = S.Generator(resolution=32, progressive=True, seed=1, **G_SMALL)
    D = S.Discriminator(resolution=32, architecture="skip", progressive=True, fq_blocks=(8, 32),
                        **SMALL)
    for block in G.synthesis.blocks:  # non-zero noise so 'const' noise matters
        for layer in (block.conv0, block.conv1):
            if layer is not None:
                layer.noise.strength.assign(0.3)
    return G, D


def test_progressive_fade_boundaries_and_continuity():
    G, D = _progressive_pair()
    z = tf.random.normal((4, 8))
    up = lambda x: S.L.upsample_2d(x)  # noqa: E731
    g8, g16 = G(z, resolution=8).numpy(), G(z, resolution=16).numpy()
    # lod = 1: stage 16 fully faded in equals the fixed 16x16 network; lod = 2: equals stage 8.
    # up + (img - up) * (1 - t): t = 0 rounds twice, <= eps32 (|up| + |img|); t = 1 adds 0.
    scale = np.abs(g16).max() + np.abs(up(g8).numpy()).max()
    np.testing.assert_allclose(G(z, resolution=16, lod=1.0).numpy(), g16, atol=EPS32 * scale)
    np.testing.assert_array_equal(G(z, resolution=16, lod=2.0).numpy(), up(g8).numpy())
    a = G(z, resolution=16, lod=1.999).numpy()
    assert np.abs(a - up(g8).numpy()).max() < 1e-2 * np.abs(g8).max()
    halfway = G(z, resolution=16, lod=1.5).numpy()
    # Each side rounds <= 2 eps32 (|up| + |img|).
    np.testing.assert_allclose(halfway, 0.5 * (G(z, resolution=16, lod=1.0).numpy() +
                                               up(g8).numpy()), atol=4 * EPS32 * scale)

    images = tf.random.uniform((4, 16, 16, 3), -1, 1)
    d16 = D(images, lod=1.0).numpy()
    np.testing.assert_array_equal(d16, D(images).numpy())  # x * (1 - 0): exact
    d_prev = D(S.L.downsample_2d(images), lod=2.0).numpy()
    # x * (1 - 1) = 0 and 0 + FromRGB(img) is exact: stage 8 then runs on the same inputs.
    np.testing.assert_array_equal(D(images, lod=2.0).numpy(), d_prev)
    near = D(images, lod=1.999).numpy()
    assert np.abs(near - d_prev).max() < 1e-2 * max(np.abs(d_prev).max(), 1e-3)


def test_progressive_fq_layers_follow_the_stage():
    _, D = _progressive_pair()
    assert D.fq_blocks == (32, 8)
    assert D.active_fq_layers(8) == [D.fq_layers[1]] == D.active_fq_layers(16)
    assert D.active_fq_layers() == D.fq_layers
    _, lookups = D(tf.zeros((4, 16, 16, 3)), lod=1.5, return_fq=True)
    assert [lk["quantized"].shape[1] for lk in lookups] == [4]  # block 8 only
    fq_keras.update_dictionaries(D.active_fq_layers(16), lookups)
    _, lookups = D(tf.zeros((4, 32, 32, 3)), return_fq=True)
    assert [lk["quantized"].shape[1] for lk in lookups] == [16, 4]


def _max_spatial(concrete):
    return max(t.shape[1] for op in concrete.graph.get_operations() for t in op.outputs
               if t.shape.rank == 4 and t.shape[1] is not None)


def test_stage_8_runs_no_higher_resolution_layer():
    G, D = _progressive_pair()
    g_fn = tf.function(lambda z, lod: G(z, lod=lod, resolution=8, noise_mode="random"))
    g_cf = g_fn.get_concrete_function(tf.TensorSpec([4, 8]), tf.TensorSpec([]))
    d_fn = tf.function(lambda x, lod: D(x, lod=lod, return_fq=True))
    d_cf = d_fn.get_concrete_function(tf.TensorSpec([4, 8, 8, 3]), tf.TensorSpec([]))
    # FIR padding makes 8x8 maps at most 11x11 inside the ops; nothing reaches 16x16.
    assert _max_spatial(g_cf) < 16 and _max_spatial(d_cf) < 16
    used = {v.name for v in g_cf.variables} | {v.name for v in d_cf.variables}
    for net in (G, D):
        high = [v.path for v in net.weights if any(f"/b{r}/" in v.path for r in (16, 32))]
        assert high and not [p for p in high if any(v.endswith(p + ":0") or v == p for v in used)]
    low = [v.path for v in G.weights if "/b8/" in v.path and v.trainable]
    assert all(any(p in v for v in used) for p in low)
    full = tf.function(lambda z, lod: G(z, lod=lod, noise_mode="random")).get_concrete_function(
        tf.TensorSpec([4, 8]), tf.TensorSpec([]))
    assert _max_spatial(full) >= 32

#----------------------------------------------------------------------------
# Execution contexts.


def test_tf_function_and_xla_match_eager():
    """Loss and G gradients through D with FQ (16x16 block): compiled and XLA equal eager.

    The nearest-code look-up is discontinuous: if two codes were almost equally near a feature,
    float32 differences between the execution modes could pick different ones and change the
    commitment gradient by a jump (weights and z were unseeded here once, and one draw did that
    under oneDNN). So weights and z are fixed (identical on both float paths), the test first
    checks that every feature's nearest code wins by a margin far above float32 error, and then
    that every mode picked the same codes."""
    keras.utils.set_random_seed(0)
    G = S.Generator(resolution=16, **G_SMALL)
    D = S.Discriminator(resolution=16, fq_blocks=(16,), **SMALL)
    # Seed 2: smallest relative margin 4.5e-4 on both float paths (seed 0 has a 3e-7 near-tie).
    z = tf.constant(np.random.RandomState(2).randn(4, 8).astype(np.float32))

    def step(z):
        with tf.GradientTape() as tape:
            images = G(z, noise_mode="const")
            logits, lookups = D(images, return_fq=True)
            loss = tf.reduce_mean(tf.nn.softplus(-logits)) + fq_keras.fq_loss(lookups)
        return (loss, tape.gradient(loss, G.trainable_variables),
                [(l["indices"], l["features"]) for l in lookups])

    eager_loss, eager_grads, eager_lookups = step(z)
    for layer, (_, features) in zip(D.fq_layers, eager_lookups):
        flat = tf.reshape(features, [-1, features.shape[-1]]).numpy().astype(np.float64)
        codes = layer.embeddings.numpy().astype(np.float64)
        distances = np.sort(((flat[:, None] - codes[None]) ** 2).sum(-1), axis=1)
        # Runner-up minus nearest, relative: the modes' features differ by ~1e-6 relative (the
        # gradient tolerance below), which moves d = |h - e|^2 by ~2|h|/|h - e| * 1e-6 ~ 1e-5
        # relative here; a margin of 1e-4 is ten times that.
        margin = (distances[:, 1] - distances[:, 0]) / distances[:, 1]
        assert margin.min() > 1e-4, margin.min()
    for jit in (False, True):
        loss, grads, lookups = tf.function(step, jit_compile=jit)(z)
        for (indices, _), (eager_indices, _) in zip(lookups, eager_lookups):
            np.testing.assert_array_equal(indices.numpy(), eager_indices.numpy())
        np.testing.assert_allclose(loss.numpy(), eager_loss.numpy(), rtol=1e-4)
        for g, e in zip(grads, eager_grads):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-3, atol=1e-5)


def test_mirrored_strategy_training_step(two_replica_strategy):
    strategy = two_replica_strategy
    with strategy.scope():
        G = S.Generator(resolution=16, seed=3, **G_SMALL)
        D = S.Discriminator(resolution=16, fq_blocks=(8, 16), fq_num_embeddings=8, **SMALL)
        opt = keras.optimizers.Adam(1e-3)
        opt.build(D.trainable_variables)

    @tf.function
    def step(z):
        def replica_fn(z):
            with tf.GradientTape() as tape:
                ws = G.mapping(z)
                G.update_dlatent_avg(ws)
                images = G.synthesis(ws, noise_mode="random")
                logits, lookups = D(images, return_fq=True)
                loss = tf.reduce_sum(tf.nn.softplus(logits)) / 8 + fq_keras.fq_loss(lookups, 8)
            opt.apply(tape.gradient(loss, D.trainable_variables), D.trainable_variables)
            fq_keras.update_dictionaries(D.fq_layers, lookups)
            return images, ws
        return strategy.run(replica_fn, args=(z,))

    z = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.random.stateless_normal([4, 8], [ctx.replica_id_in_sync_group, 0]))
    images, ws = step(z)
    images = strategy.experimental_local_results(images)
    ws = np.concatenate([w.numpy() for w in strategy.experimental_local_results(ws)])
    assert [i.shape for i in images] == [(4, 16, 16, 3)] * 2
    avgs = [v.numpy() for v in strategy.experimental_local_results(G.dlatent_avg.value)]
    np.testing.assert_array_equal(avgs[0], avgs[1])  # same all-reduced mean on both replicas
    # 0.005 m as m - 0.995 m: roundings ~eps32 |m| are ~200 eps32 ~ 2.4e-5 of the result; the
    # means of 8 terms (4 + 4) differ by <= 8 eps32 max|w| (absolute: m may cancel), times 0.005.
    np.testing.assert_allclose(avgs[0], 0.005 * ws[:, 0].mean(0), rtol=1e-4,
                               atol=0.005 * 8 * EPS32 * np.abs(ws).max())
    kernels = [v.numpy() for v in strategy.experimental_local_results(D.b4.out.kernel.value)]
    np.testing.assert_array_equal(kernels[0], kernels[1])  # same all-reduced Adam update


def test_mixed_precision_matches_float32(mixed_precision):
    half = mixed_precision
    G16 = S.Generator(resolution=16, **G_SMALL)
    D16 = S.Discriminator(resolution=16, fq_blocks=(16,), **SMALL)
    keras.mixed_precision.set_global_policy("float32")
    G32 = S.Generator(resolution=16, **G_SMALL)
    D32 = S.Discriminator(resolution=16, fq_blocks=(16,), **SMALL)
    G32.set_weights(G16.get_weights())
    D32.set_weights(D16.get_weights())
    z = tf.random.normal((4, 8))
    img16, img32 = G16(z), G32(z)
    assert img16.dtype == tf.float32 and G16.synthesis.b16.conv1.compute_dtype == half.name
    # float16 rounds each op by <= 2^-11 ~ 5e-4 relative; ~10 layers of several ops each: ~5%
    # (bfloat16, 2^-8: 8x).
    np.testing.assert_allclose(img16.numpy(), img32.numpy(), atol=5e-2 * (half.unit_roundoff / 2.0 ** -11) * np.abs(img32).max())
    logits16, lookups = D16(img32, return_fq=True)
    assert logits16.dtype == tf.float32 and lookups[0]["loss"].dtype == tf.float32
    np.testing.assert_allclose(logits16.numpy(), D32(img32).numpy(), atol=5e-2 * (half.unit_roundoff / 2.0 ** -11), rtol=5e-2 * (half.unit_roundoff / 2.0 ** -11))
