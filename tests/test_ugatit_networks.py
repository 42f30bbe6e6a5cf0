"""networks/ugatit.py: official parameter counts and shapes, CAM against numpy, FQ placement."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from networks import ugatit


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def np_leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def full_generator_count(ngf, n_blocks, img_size, in_channels=3):
    """Full-mode parameter count from the layer shapes of the official ResnetGenerator."""
    c = 4 * ngf
    count = 7 * 7 * in_channels * ngf                                   # conv_in
    count += 3 * 3 * ngf * 2 * ngf + 3 * 3 * 2 * ngf * c                # down convs
    count += n_blocks * 2 * 3 * 3 * c * c                               # ResnetBlocks
    count += 2 * c + (2 * c * c + c)                                    # gap_fc, gmp_fc, conv1x1
    count += (img_size // 4) ** 2 * c * c + 3 * c * c                   # MLP, gamma, beta
    count += n_blocks * (2 * 3 * 3 * c * c + 2 * c)                     # AdaILN blocks + rho
    count += 3 * 3 * c * (c // 2) + 3 * (c // 2)                        # up conv0 + ILN
    count += 3 * 3 * (c // 2) * ngf + 3 * ngf                           # up conv1 + ILN
    count += 7 * 7 * ngf * 3                                            # conv_out
    return count


# ---------------------------------------------------------------------------------------------
# Official sizes.

def test_official_parameter_counts():
    light = ugatit.UGATITGenerator(light=True)
    light.build((None, 64, 64, 3))  # light mode's size does not depend on the image size
    assert trainable_count(light) == 10_589_888                         # 10.59M
    global_d = ugatit.UGATITDiscriminator(n_layers=7)
    global_d.build((None, 256, 256, 3))
    assert trainable_count(global_d) == 53_130_176                      # 53.13M
    local_d = ugatit.UGATITDiscriminator(n_layers=5)
    local_d.build((None, 256, 256, 3))
    assert trainable_count(local_d) == 3_290_560                        # 3.29M
    assert global_d.conv_channels == [64, 128, 256, 512, 1024, 2048]
    assert local_d.conv_channels == [64, 128, 256, 512]
    # Full mode at 256^2 (not built: 268M parameters in its first MLP layer alone).
    assert full_generator_count(64, 4, 256) == 278_959_808              # 278.96M
    assert full_generator_count(64, 4, 256) - full_generator_count(64, 4, 4) == (
        (256 // 4) ** 2 - 1) * 256 * 256


@pytest.mark.parametrize("img_size", [64, 128])
@pytest.mark.parametrize("light", [True, False])
def test_generator_shapes(light, img_size):
    G = ugatit.UGATITGenerator(ngf=4, light=light, img_size=img_size)
    x = np.random.RandomState(0).uniform(-1, 1, (2, img_size, img_size, 3)).astype(np.float32)
    image, cam_logit, heatmap = G(x)
    assert image.shape == (2, img_size, img_size, 3)
    assert cam_logit.shape == (2, 2)
    assert heatmap.shape == (2, img_size // 4, img_size // 4, 1)
    assert np.abs(image.numpy()).max() <= 1.0
    assert trainable_count(G) == (full_generator_count(4, 4, img_size) if not light else
                                  full_generator_count(4, 4, 4))
    mlp_in = 16 if light else (img_size // 4) ** 2 * 16
    assert G.fc[0].kernel.shape == (mlp_in, 16)
    assert G.conv_in.kernel.shape == (7, 7, 3, 4) and G.conv_in.bias is None
    assert G.conv1x1.kernel.shape == (1, 1, 32, 16) and G.conv1x1.bias.shape == (16,)
    assert all(np.all(l.rho.numpy() == 0.9) for l in G.rho_layers()[:8])   # AdaILN
    assert all(np.all(l.rho.numpy() == 0.0) for l in G.rho_layers()[8:])   # ILN


def test_minimum_discriminator_sizes():
    assert [ugatit.min_discriminator_size(n) for n in (5, 6, 7)] == [24, 48, 96]
    assert [ugatit.max_discriminator_layers(s) for s in (24, 47, 48, 95, 96, 256)] == [5, 5, 6, 6, 7, 8]
    with pytest.raises(ValueError, match="at least 24x24"):
        ugatit.UGATITDiscriminator(ndf=2, n_layers=5)(np.zeros((1, 20, 20, 3), np.float32))
    out, _, _ = ugatit.UGATITDiscriminator(ndf=2, n_layers=5)(np.zeros((1, 24, 24, 3), np.float32))
    assert out.shape == (1, 1, 1, 1)


def test_light_generator_any_size_divisible_by_4():
    G = ugatit.UGATITGenerator(ngf=2, n_blocks=1, light=True)
    image, _, heatmap = G(np.zeros((1, 20, 12, 3), np.float32))
    assert image.shape == (1, 20, 12, 3) and heatmap.shape == (1, 5, 3, 1)
    with pytest.raises(ValueError, match="divisible by 4"):
        G(np.zeros((1, 18, 12, 3), np.float32))
    full = ugatit.UGATITGenerator(ngf=2, n_blocks=1, light=False, img_size=16)
    with pytest.raises(ValueError, match="16x16"):
        full(np.zeros((1, 20, 20, 3), np.float32))
    with pytest.raises(ValueError, match="img_size"):
        ugatit.UGATITGenerator(light=False, img_size=30)


@pytest.mark.parametrize("img_size,global_out,local_out", [(64, None, 6), (128, 2, 14)])
def test_discriminator_shapes(img_size, global_out, local_out):
    x = np.random.RandomState(1).uniform(-1, 1, (2, img_size, img_size, 3)).astype(np.float32)
    local = ugatit.UGATITDiscriminator(ndf=4, n_layers=5)
    out, cam_logit, heatmap = local(x, training=True)
    assert out.shape == (2, local_out, local_out, 1) and cam_logit.shape == (2, 2)
    assert heatmap.shape == (2, local_out + 1, local_out + 1, 1)
    assert local.conv_out.kernel.shape == (4, 4, 32, 1) and not local.conv_out.use_bias
    global_d = ugatit.UGATITDiscriminator(ndf=4, n_layers=7)
    if global_out is None:
        # The official global D cannot take 64^2 images (its reflection padding fails).
        with pytest.raises(ValueError, match="at least 96x96.*n_layers <= 6"):
            global_d(x)
        assert ugatit.max_discriminator_layers(64) == 6
        out, _, _ = ugatit.UGATITDiscriminator(ndf=4, n_layers=6)(x)
        assert out.shape == (2, 2, 2, 1)
    else:
        out, cam_logit, heatmap = global_d(x, training=True)
        assert out.shape == (2, global_out, global_out, 1) and cam_logit.shape == (2, 2)
        assert heatmap.shape == (2, global_out + 1, global_out + 1, 1)


# ---------------------------------------------------------------------------------------------
# CAM, against numpy.

def test_class_activation_map_matches_numpy():
    rng = np.random.RandomState(2)
    x = rng.randn(2, 3, 4, 5).astype(np.float32)
    w_gap, w_gmp = rng.randn(5, 1).astype(np.float32), rng.randn(5, 1).astype(np.float32)
    features, cam_logit = ugatit.class_activation_map(
        x, lambda h: h @ w_gap, lambda h: h @ w_gmp, w_gap[:, 0], w_gmp[:, 0])
    np.testing.assert_allclose(cam_logit.numpy(), np.concatenate(
        [x.mean((1, 2)) @ w_gap, x.max((1, 2)) @ w_gmp], 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(features.numpy(), np.concatenate(
        [x * w_gap[:, 0], x * w_gmp[:, 0]], -1), rtol=1e-6)


def test_discriminator_cam_uses_raw_weights_for_features():
    D = ugatit.UGATITDiscriminator(ndf=2, n_layers=5)
    rng = np.random.RandomState(3)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    D(images, training=True)  # a training forward first, so u and v are not the initial ones
    out, cam_logit, heatmap = D(images, training=False)
    x = tf.constant(images)
    for conv in D.convs:
        x = tf.nn.leaky_relu(conv(ugatit.reflect_pad(x, 1), training=False), 0.2)
    x = x.numpy().astype(np.float64)

    def sn_weight(layer):  # PyTorch eval: sigma = u^T W v with the stored vectors
        w = layer.kernel.numpy().T.astype(np.float64)                # (1, C)
        return w / float(layer.sn_u.numpy() @ w @ layer.sn_v.numpy())

    raw_gap, raw_gmp = D.gap_fc.kernel.numpy()[:, 0], D.gmp_fc.kernel.numpy()[:, 0]
    expected_logit = np.concatenate([x.mean((1, 2)) @ sn_weight(D.gap_fc).T,
                                     x.max((1, 2)) @ sn_weight(D.gmp_fc).T], 1)
    np.testing.assert_allclose(cam_logit.numpy(), expected_logit, rtol=1e-4, atol=1e-6)
    features = np.concatenate([x * raw_gap, x * raw_gmp], -1)
    w1 = D.conv1x1.kernel.numpy()[0, 0].astype(np.float64)
    h = np_leaky(features @ w1 + D.conv1x1.bias.numpy())
    np.testing.assert_allclose(heatmap.numpy()[..., 0], h.sum(-1), rtol=1e-4, atol=1e-5)
    # sigma of these 1-row weights is far from 1, so raw and normalised weights differ.
    assert abs(np.linalg.norm(raw_gap) - 1.0) > 0.05


def test_generator_full_mode_flattens_nchw():
    G = ugatit.UGATITGenerator(ngf=2, n_blocks=1, light=False, img_size=16)
    images = np.random.RandomState(4).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    x, _, heatmap = G.encode(images)
    gamma, beta = G.adaptive_params(x)
    flat = x.numpy().transpose(0, 3, 1, 2).reshape(2, -1)   # PyTorch x.view(N, -1) order
    h = np.maximum(flat @ G.fc[0].kernel.numpy(), 0)
    h = np.maximum(h @ G.fc[1].kernel.numpy(), 0)
    np.testing.assert_allclose(gamma.numpy(), h @ G.gamma.kernel.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(beta.numpy(), h @ G.beta.kernel.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(heatmap.numpy()[..., 0], x.numpy().sum(-1), rtol=1e-5)


def test_discriminator_training_forward_runs_one_power_iteration():
    D = ugatit.UGATITDiscriminator(ndf=2, n_layers=5)
    images = np.random.RandomState(5).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    D.build(images.shape)
    before = {l.name: (l.sn_u.numpy().astype(np.float64), l.sn_v.numpy().astype(np.float64))
              for l in D.convs + [D.gap_fc, D.gmp_fc, D.conv_out]}
    D(images, training=True)
    for layer in D.convs + [D.gap_fc, D.gmp_fc, D.conv_out]:
        w_mat = layer._weight_matrix().numpy().astype(np.float64)
        u, v = before[layer.name]
        v = w_mat.T @ u
        v /= np.linalg.norm(v)
        u = w_mat @ v
        u /= np.linalg.norm(u)
        np.testing.assert_allclose(layer.sn_u.numpy(), u, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.sn_v.numpy(), v, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# FQ placement.

def test_official_fq_preset_shapes():
    nets = ugatit.make_ugatit(ndf=8, fq="official")
    D = nets["disGA"]
    assert D.fq_layer_indices == (1, 2, 3)
    assert [(fq.num_embeddings, fq.commitment_cost, fq.decay, fq.forward) for fq in D.fq_layers] == [
        (64, 2.0, 0.85, "continuous"), (128, 2.0, 0.85, "continuous"), (128, 2.0, 0.85, "continuous")]
    images = np.random.RandomState(6).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    (out, _, _), lookups = D(images, training=True, return_fq=True)
    # 256^2 input: 64^2, 32^2, 16^2 with ndf * (2, 4, 8) channels (128, 256, 512 at ndf=64).
    assert [tuple(l["quantized"].shape) for l in lookups] == [
        (1, 64, 64, 16), (1, 32, 32, 32), (1, 16, 16, 64)]
    assert [D.conv_channels[i] * 8 for i in (1, 2, 3)] == [128, 256, 512]
    assert out.shape == (1, 6, 6, 1)
    for fq in D.fq_layers:
        np.testing.assert_allclose(fq.embeddings.numpy().std(), 1.0, rtol=0.25)  # N(0, 1)
        assert fq.zero_debias


def test_paper_fq_preset_shapes():
    nets = ugatit.make_ugatit(ndf=8, fq="paper")
    D = nets["disGB"]
    assert D.fq_layer_indices == (2,)
    fq = D.fq_layers[0]
    assert (fq.num_embeddings, fq.decay, fq.forward) == (1024, 0.8, "quantized")
    images = np.random.RandomState(7).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    _, lookups = D(images, training=False, return_fq=True)
    assert [tuple(l["quantized"].shape) for l in lookups] == [(1, 16, 16, 32)]
    assert ugatit.UGATITDiscriminator(n_layers=7).conv_channels[2] == 256


def test_separate_dictionaries_per_discriminator():
    nets = ugatit.make_ugatit(ndf=4, fq="official")
    ga, gb = nets["disGA"], nets["disGB"]
    assert not nets["disLA"].fq_layers and not nets["disLB"].fq_layers
    images = np.random.RandomState(8).uniform(-1, 1, (2, 128, 128, 3)).astype(np.float32)
    ga(images)
    gb(images)
    for fa, fb in zip(ga.fq_layers, gb.fq_layers):
        assert fa is not fb and fa.embeddings is not fb.embeddings
        assert not np.allclose(fa.embeddings.numpy(), fb.embeddings.numpy())
    before = [fq.embeddings.numpy().copy() for fq in gb.fq_layers]
    _, lookups = ga(images, training=True, return_fq=True)
    for fq, lookup in zip(ga.fq_layers, lookups):
        fq.update_dictionary(lookup["features"], lookup["indices"])
    for fq, value in zip(gb.fq_layers, before):
        np.testing.assert_array_equal(fq.embeddings.numpy(), value)
    all_weights = {id(w) for w in ga.weights} & {id(w) for w in gb.weights}
    assert not all_weights


def test_fq_layer_errors():
    with pytest.raises(ValueError, match=r"valid: \[0, 1, 2, 3, 4, 5\]"):
        ugatit.UGATITDiscriminator(n_layers=7, fq_layers=(6,))
    with pytest.raises(ValueError, match=r"valid: \[0, 1, 2, 3\]"):
        ugatit.UGATITDiscriminator(n_layers=5, fq_layers=(1, 4))
    with pytest.raises(ValueError, match="num_embeddings"):
        ugatit.UGATITDiscriminator(fq_layers=(1, 2), fq_kwargs={"num_embeddings": [8]})
    with pytest.raises(ValueError, match="preset"):
        ugatit.make_ugatit(fq="tf")
    D = ugatit.UGATITDiscriminator(ndf=2, n_layers=5, fq_layers=(0, 3))
    assert [fq.num_embeddings for fq in D.fq_layers] == [32, 128]  # official 2^[5,6,7,7,7,7][i]


# ---------------------------------------------------------------------------------------------
# Distribution, rho clipping, precision, config.

def test_two_replicas_equal_one_device(two_replica_strategy):
    rng = np.random.RandomState(9)
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    single = ugatit.UGATITDiscriminator(ndf=2, n_layers=5, fq_layers=(1,), name="single")
    single.build(images.shape)
    strategy = two_replica_strategy
    with strategy.scope():
        mirrored = ugatit.UGATITDiscriminator(ndf=2, n_layers=5, fq_layers=(1,), name="mirrored")
        mirrored.build(images.shape)
    for src, dst in zip(single.weights, mirrored.weights):
        dst.assign(src.numpy())

    tf.function(lambda x: single(x, training=True))(images)

    @tf.function
    def step(x):
        strategy.run(lambda h: mirrored(h, training=True), args=(x,))

    step(strategy.experimental_distribute_values_from_function(
        lambda ctx: images[ctx.replica_id_in_sync_group * 2:(ctx.replica_id_in_sync_group + 1) * 2]))
    for a, b in zip(single.non_trainable_weights, mirrored.non_trainable_weights):
        replicas = strategy.experimental_local_results(b.value)
        np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy())
        # A forward pass moves only SN's u (from the kernel, not the batch; FQ dictionaries are
        # updated by the trainer): the same ops on the same inputs, bit-equal.
        np.testing.assert_array_equal(replicas[0].numpy(), a.numpy(), err_msg=b.path)


def test_clip_rho_in_replica_context(two_replica_strategy):
    strategy = two_replica_strategy
    with strategy.scope():
        G = ugatit.UGATITGenerator(ngf=2, n_blocks=1)
        G.build((None, 8, 8, 3))
    for layer in G.rho_layers():
        layer.rho.assign(np.linspace(-1, 2, layer.rho.shape[0]).astype(np.float32))

    @tf.function
    def clip():
        strategy.run(G.clip_rho)

    clip()
    for layer in G.rho_layers():
        for value in strategy.experimental_local_results(layer.rho.value):
            np.testing.assert_allclose(
                value.numpy(), np.clip(np.linspace(-1, 2, layer.rho.shape[0]), 0, 1), rtol=1e-6)


def test_mixed_precision_forward(mixed_precision):
    half = mixed_precision
    G = ugatit.UGATITGenerator(ngf=2, n_blocks=1)
    D = ugatit.UGATITDiscriminator(ndf=2, n_layers=5, fq_layers=(1,))
    x = tf.constant(np.random.RandomState(10).uniform(-1, 1, (2, 32, 32, 3)), half.dtype)
    image, cam_logit, heatmap = G(x)
    assert image.dtype == half.dtype and np.all(np.isfinite(image.numpy()))
    (out, cam, hm), lookups = D(image, training=True, return_fq=True)
    assert np.all(np.isfinite(out.numpy())) and lookups[0]["loss"].dtype == tf.float32


def test_config_round_trip():
    G = ugatit.UGATITGenerator(ngf=2, n_blocks=1, light=False, img_size=16)
    D = ugatit.UGATITDiscriminator(
        ndf=2, n_layers=5, fq_layers=(1, 2),
        fq_kwargs={"num_embeddings": [8, 16], "decay": 0.8,
                   "embeddings_initializer": keras.initializers.RandomNormal(stddev=0.5)})
    G2 = ugatit.UGATITGenerator.from_config(G.get_config())
    D2 = ugatit.UGATITDiscriminator.from_config(D.get_config())
    D2 = ugatit.UGATITDiscriminator.from_config(D2.get_config())  # twice: serialised initializer
    for a, b in ((G, G2), (D, D2)):
        a.build((None, 16, 16, 3) if a is G else (None, 32, 32, 3))
        b.build((None, 16, 16, 3) if b is G2 else (None, 32, 32, 3))
        assert trainable_count(a) == trainable_count(b)
    assert [fq.num_embeddings for fq in D2.fq_layers] == [8, 16] and D2.fq_layers[0].decay == 0.8
    assert abs(D2.fq_layers[1].embeddings.numpy().std() - 0.5) < 0.1


def test_checkpoint_round_trip_restores_state(tmp_path):
    nets = ugatit.make_ugatit(ngf=2, ndf=2, n_blocks=1, fq="official")
    G, D = nets["genA2B"], nets["disGA"]
    images = np.random.RandomState(11).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    G(images)
    _, lookups = D(images, training=True, return_fq=True)
    for fq, lookup in zip(D.fq_layers, lookups):
        fq.update_dictionary(lookup["features"], lookup["indices"])
    path = tf.train.Checkpoint(G=G, D=D).write(str(tmp_path / "ckpt"))
    saved = [n for n, _ in tf.train.list_variables(path) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(saved) == len(G.weights) + len(D.weights)
    nets2 = ugatit.make_ugatit(ngf=2, ndf=2, n_blocks=1, fq="official")
    G2, D2 = nets2["genA2B"], nets2["disGA"]
    G2.build(images.shape)
    D2.build(images.shape)
    tf.train.Checkpoint(G=G2, D=D2).read(path).assert_consumed()
    for a, b in zip(G.weights + D.weights, G2.weights + D2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(D(images)[0].numpy(), D2(images)[0].numpy())
