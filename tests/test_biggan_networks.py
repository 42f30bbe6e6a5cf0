"""networks/biggan.py: official parameter counts, FQ placement, projection, attention, ImageNet 64."""

import numpy as np
import pytest
import tensorflow as tf

from fq_keras import FeatureQuantization
from networks import biggan
from networks.normalization import SNDense, SpectralNormLayer


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def np_normalize(x, eps):
    return x / max(np.linalg.norm(x), eps)


def np_biggan_sigma(w_mat, u, eps):
    """BigGAN-PyTorch power iteration, one step from the stored u (eval: nothing stored)."""
    v = np_normalize(u @ w_mat, eps)
    u = np_normalize(v @ w_mat.T, eps)
    return float(v @ w_mat.T @ u)


def small(preset="cifar10", **kwargs):
    kwargs.setdefault("ch", 4)
    return biggan.make_biggan(preset, **kwargs)


# ---------------------------------------------------------------------------------------------
# CIFAR configuration.

def test_cifar10_parameter_counts_are_official():
    G, D = biggan.make_biggan("cifar10")
    G.build()
    D.build()
    assert trainable_count(G) == 4_304_387
    assert trainable_count(D) == 4_207_361
    # State is not counted as parameters (PyTorch buffers): SN u, BN statistics, dictionaries.
    assert all(not w.trainable for w in G.weights if "sn_" in w.name or "stored_" in w.name)


def test_cifar100_counts_differ_only_by_class_tables():
    G10, D10 = biggan.make_biggan("cifar10", fq=False)
    G100, D100 = biggan.make_biggan("cifar100", fq=False)
    for m in (G10, D10, G100, D100):
        m.build()
    # 3 GBlocks x 2 conditional BNs x (gain, bias) tables of 256, and D's 256-wide embedding.
    assert trainable_count(G100) - trainable_count(G10) == 3 * 2 * 2 * 90 * 256
    assert trainable_count(D100) - trainable_count(D10) == 90 * 256


@pytest.mark.parametrize("preset,K,commitment,decay", [("cifar10", 1024, 1.0, 0.8),
                                                       ("cifar100", 64, 10.0, 0.9)])
def test_cifar_fq_presets_placement_and_shapes(preset, K, commitment, decay):
    G, D = biggan.make_biggan(preset)
    assert D.fq_layer_indices == (0, 1, 2, 3)
    assert len(D.fq_layers) == 4 and len({id(fq) for fq in D.fq_layers}) == 4
    for fq in D.fq_layers:
        assert isinstance(fq, FeatureQuantization)
        assert (fq.num_embeddings, fq.commitment_cost, fq.decay) == (K, commitment, decay)
        assert fq.zero_debias is False and fq.forward == "continuous"
    labels = np.array([1, 7])
    images = G(np.random.RandomState(0).randn(2, 128).astype(np.float32), labels, training=True)
    assert images.shape == (2, 32, 32, 3)
    logits, lookups = D(images, labels, training=True, return_fq=True)
    assert logits.shape == (2, 1)
    assert [tuple(l["quantized"].shape) for l in lookups] == [
        (2, 16, 16, 256), (2, 8, 8, 256), (2, 8, 8, 256), (2, 8, 8, 256)]
    assert [tuple(l["indices"].shape) for l in lookups] == [(2, 16, 16), (2, 8, 8), (2, 8, 8), (2, 8, 8)]
    for fq, lookup in zip(D.fq_layers, lookups):
        assert fq.embeddings.shape == (K, 256)
        np.testing.assert_allclose(np.std(fq.embeddings.numpy()), 1.0, rtol=0.2)  # N(0, 1)
        # PyTorch EMA variant: the sums start at the initial dictionary (m_0 = e_0).
        np.testing.assert_array_equal(fq.ema_embedding_sums.numpy(), fq.embeddings.numpy())
        assert lookup["per_sample_loss"].shape == (2,)
    # The quantised tensor is not fed forward: the logits equal the baseline's with equal weights.
    D_base = biggan.BigGANDiscriminator(resolution=32, num_classes=10 if preset == "cifar10" else 100)
    D_base.build()
    for src, dst in zip([w for w in D.weights if "fq" not in w.path],
                        D_base.weights):
        dst.assign(src)
    np.testing.assert_allclose(D_base(images, labels).numpy(), D(images, labels).numpy(), rtol=1e-5)


def test_projection_term_matches_numpy():
    G, D = small(num_classes=5)
    rng = np.random.RandomState(1)
    images = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    labels = np.array([4, 0, 4])
    logits = D(images, labels, training=False).numpy()
    # Features before the head, in eval mode (the SN u are not updated by eval passes).
    h = tf.constant(images)
    for block in D.blocks:
        h = block(h, training=False)
    h = np.maximum(h.numpy(), 0).sum((1, 2)).astype(np.float64)              # [N, C]
    w = D.linear.kernel.numpy().T.astype(np.float64)                        # (1, C)
    w_sn = w / np_biggan_sigma(w, D.linear.sn_u.numpy().astype(np.float64), 1e-8)
    table = D.embed.kernel.numpy().astype(np.float64)                       # (classes, C)
    table_sn = table / np_biggan_sigma(table, D.embed.sn_u.numpy().astype(np.float64), 1e-8)
    expected = h @ w_sn.T + D.linear.bias.numpy() + np.sum(table_sn[labels] * h, 1, keepdims=True)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    # Changing only the labels changes the logits by the projection difference.
    other = D(images, np.array([1, 1, 1]), training=False).numpy()
    np.testing.assert_allclose(logits - other,
                               np.sum((table_sn[labels] - table_sn[[1, 1, 1]]) * h, 1, keepdims=True),
                               rtol=1e-3, atol=1e-4)


def test_training_flag_semantics():
    G, D = small()
    z = np.random.RandomState(2).randn(4, 128).astype(np.float32)
    labels = np.array([0, 1, 2, 3])
    G(z, labels, training=False)
    state = {w.path: w.numpy().copy() for w in G.non_trainable_weights}
    a = G(z, labels, training=False).numpy()
    b = G(z, labels).numpy()
    np.testing.assert_array_equal(a, b)
    for w in G.non_trainable_weights:
        np.testing.assert_array_equal(w.numpy(), state[w.path])
    G(z, labels, training=True)
    changed = [w.path for w in G.non_trainable_weights
               if not np.array_equal(w.numpy(), state[w.path])]
    assert any("stored_mean" in p for p in changed) and any("sn_u" in p for p in changed)
    assert any("sn_sv" in p for p in changed)


def test_n02_init_and_default_biases():
    G, D = biggan.make_biggan("cifar10", fq=False)
    G.build()
    D.build()
    conv = D.blocks[1].conv1
    assert abs(conv.kernel.numpy().std() - 0.02) < 0.001
    assert abs(G.blocks[0].bn1.gain.numpy().std() - 0.02) < 0.003
    bound = 1 / np.sqrt(3 * 3 * 256)  # PyTorch's default bias init U(+-1/sqrt(fan_in))
    assert np.abs(conv.bias.numpy()).max() <= bound and conv.bias.numpy().std() > bound / 4
    sn_layers = [l for l in G._flatten_layers() if isinstance(l, SpectralNormLayer)]
    assert sn_layers and all(l.sn_epsilon == 1e-8 and l.sn_mode == "biggan" for l in sn_layers)


def test_attention_matches_numpy_transcription():
    layer = biggan.Attention()
    rng = np.random.RandomState(3)
    x = rng.randn(2, 4, 6, 16).astype(np.float32)
    layer.build(x.shape)
    layer.gamma.assign(0.7)
    out = layer(x, training=False).numpy()

    def conv1x1(h, sn_layer):  # NCHW, PyTorch weight (O, I)
        w = sn_layer.kernel.numpy()[0, 0].T.astype(np.float64)
        w = w / np_biggan_sigma(w, sn_layer.sn_u.numpy().astype(np.float64), 1e-8)
        return np.einsum("oi,nihw->nohw", w, h)

    def maxpool(h):
        n, c, hh, ww = h.shape
        return h.reshape(n, c, hh // 2, 2, ww // 2, 2).max((3, 5))

    xc = x.transpose(0, 3, 1, 2).astype(np.float64)
    n, c, hh, ww = xc.shape
    theta = conv1x1(xc, layer.theta).reshape(n, c // 8, hh * ww)
    phi = maxpool(conv1x1(xc, layer.phi)).reshape(n, c // 8, hh * ww // 4)
    g = maxpool(conv1x1(xc, layer.g)).reshape(n, c // 2, hh * ww // 4)
    logits = np.einsum("nci,ncj->nij", theta, phi)
    beta = np.exp(logits - logits.max(-1, keepdims=True))
    beta /= beta.sum(-1, keepdims=True)
    o = np.einsum("ncj,nij->nci", g, beta).reshape(n, c // 2, hh, ww)
    expected = (0.7 * conv1x1(o, layer.o) + xc).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# ImageNet 64x64 architecture (small widths).

def test_imagenet64_architecture_shapes():
    G, D = small("imagenet64", ch=8, num_classes=7)
    assert G.hier and G.num_slots == 5 and G.z_chunk_size == 24 and G.dim_z == 120
    assert list(G.attentions) == [2] and list(D.attentions) == [0]  # attention at 32x32
    z = np.random.RandomState(4).randn(2, 120).astype(np.float32)
    labels = np.array([6, 0])
    images = G(z, labels, training=True)
    assert images.shape == (2, 64, 64, 3)
    assert G.shared.embeddings.shape == (7, 128)
    # Conditional BN projections: SN linear without bias from [shared embedding, z chunk].
    bn = G.blocks[0].bn1
    assert isinstance(bn.gain, SNDense) and bn.gain.kernel.shape == (128 + 24, 128)
    assert not bn.gain.use_bias
    assert G.linear.kernel.shape == (24, 16 * 8 * 16)
    logits, lookups = D(images, labels, training=True, return_fq=True)
    assert logits.shape == (2, 1)
    assert D.fq_layer_indices == (2,)
    assert [tuple(l["quantized"].shape) for l in lookups] == [(2, 8, 8, 32)]  # 4ch at 8x8
    fq = D.fq_layers[0]
    assert (fq.num_embeddings, fq.commitment_cost, fq.decay) == (1024, 0.5, 0.7)
    assert [b.out_channels for b in D.blocks] == [8, 16, 32, 64, 128]
    for model in (G, D):
        sn_layers = [l for l in model._flatten_layers() if isinstance(l, SpectralNormLayer)]
        assert sn_layers and all(l.sn_epsilon == 1e-6 for l in sn_layers)


def test_imagenet64_orthogonal_init():
    G, D = small("imagenet64", ch=8, num_classes=7, fq=False)
    G.build()
    D.build()
    # Products in float64: what is left is the float32 QR's orthogonality error, ~sqrt(m) eps32/2
    # for m <= 2048 rows (~3e-6), plus 2 * eps32/2 for storing the factor in float32.
    k = G.linear.kernel.numpy().astype(np.float64)           # (24, 2048): orthonormal rows
    np.testing.assert_allclose(k @ k.T, np.eye(24), atol=1e-5)
    k = D.blocks[2].conv1.kernel.numpy().reshape(-1, 32).astype(np.float64)  # orthonormal columns
    np.testing.assert_allclose(k.T @ k, np.eye(32), atol=1e-5)
    e = G.shared.embeddings.numpy().astype(np.float64)       # (7, 128)
    np.testing.assert_allclose(e @ e.T, np.eye(7), atol=1e-5)


def test_hierarchical_z_is_used_per_block():
    G, _ = small("imagenet64", ch=8, num_classes=3, fq=False)
    rng = np.random.RandomState(5)
    z = rng.randn(1, 120).astype(np.float32)
    labels = np.array([1])
    base = G(z, labels, training=False).numpy()
    for chunk in range(5):
        z2 = z.copy()
        z2[0, chunk * 24:(chunk + 1) * 24] += 1.0
        assert np.abs(G(z2, labels, training=False).numpy() - base).max() > 1e-4
    with pytest.raises(ValueError, match="120 features"):
        G(rng.randn(1, 128).astype(np.float32), labels)


# ---------------------------------------------------------------------------------------------
# Errors, distribution, precision, config.

def test_bad_arguments():
    with pytest.raises(ValueError, match=r"valid: \[0, 1, 2, 3\]"):
        biggan.BigGANDiscriminator(fq_layers=(4,))
    with pytest.raises(ValueError, match=r"valid: \[0, 1, 2, 3, 4\]"):
        biggan.BigGANDiscriminator(resolution=64, fq_layers=(5,))
    with pytest.raises(ValueError, match="shared_dim"):
        biggan.BigGANGenerator(hier=True)
    with pytest.raises(ValueError, match="resolution"):
        biggan.BigGANGenerator(resolution=48)
    with pytest.raises(ValueError, match="attention"):
        biggan.BigGANGenerator(attention=(64,))
    with pytest.raises(ValueError, match="init"):
        biggan.BigGANDiscriminator(init="xavier")
    with pytest.raises(ValueError, match="preset"):
        biggan.make_biggan("lsun")
    with pytest.raises(ValueError, match="num_embeddings"):
        biggan.BigGANDiscriminator(fq_layers=(0, 1), fq_kwargs={"num_embeddings": [8]})


def test_two_replicas_keep_state_identical(two_replica_strategy):
    strategy = two_replica_strategy
    with strategy.scope():
        G, D = small(num_classes=4, fq_kwargs={"num_embeddings": 8})
        G.build()
        D.build()
    rng = np.random.RandomState(6)
    z = rng.randn(4, 128).astype(np.float32)
    labels = np.array([0, 1, 2, 3])

    @tf.function
    def step(z, y):
        def replica_fn(z, y):
            images = G(z, y, training=True)
            logits, lookups = D(images, y, training=True, return_fq=True)
            return logits
        return strategy.run(replica_fn, args=(z, y))

    def halves(a):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: a[ctx.replica_id_in_sync_group * 2:(ctx.replica_id_in_sync_group + 1) * 2])

    step(halves(z), halves(labels))
    step(halves(z[::-1].copy()), halves(labels))
    for model in (G, D):
        for w in model.non_trainable_weights:
            replicas = strategy.experimental_local_results(w.value)
            np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy(), err_msg=w.path)


def test_mixed_precision_forward(mixed_precision):
    G, D = small(num_classes=3)
    z = np.random.RandomState(7).randn(2, 128).astype(np.float32)
    labels = np.array([0, 2])
    images = G(z, labels, training=True)
    assert images.dtype == mixed_precision.dtype
    logits, lookups = D(images, labels, training=True, return_fq=True)
    assert np.all(np.isfinite(logits.numpy())) and lookups[0]["loss"].dtype == tf.float32
    assert all(w.dtype == "float32" for w in G.weights)


def test_config_round_trip():
    G, D = small("imagenet64", ch=8, num_classes=3)
    G2 = biggan.BigGANGenerator.from_config(G.get_config())
    D2 = biggan.BigGANDiscriminator.from_config(D.get_config())
    for a, b in ((G, G2), (D, D2)):
        a.build()
        b.build()
        assert trainable_count(a) == trainable_count(b)
    assert D2.fq_layer_indices == (2,) and D2.fq_layers[0].decay == 0.7


def test_checkpoint_round_trip_restores_state(tmp_path):
    """tf.train.Checkpoint holds everything the trainers resume from: weights, SN u / sv,
    BN running statistics and FQ dictionaries."""
    G, D = small(num_classes=3, fq_kwargs={"num_embeddings": 8})
    z = np.random.RandomState(8).randn(4, 128).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    images = G(z, labels, training=True)
    _, lookups = D(images, labels, training=True, return_fq=True)
    for fq, lookup in zip(D.fq_layers, lookups):
        fq.update_dictionary(lookup["features"], lookup["indices"])
    path = tf.train.Checkpoint(G=G, D=D).write(str(tmp_path / "ckpt"))
    # Every variable is in the checkpoint (Keras 3 drops layers held in lists / dicts from
    # tf.train.Checkpoint unless they are also attributes; see normalization.track_layers).
    saved = [n for n, _ in tf.train.list_variables(path) if n != "_CHECKPOINTABLE_OBJECT_GRAPH"]
    assert len(saved) == len(G.weights) + len(D.weights)
    assert any(n.startswith("D/fq1/embeddings") for n in saved)
    G2, D2 = small(num_classes=3, fq_kwargs={"num_embeddings": 8})
    G2.build()
    D2.build()
    tf.train.Checkpoint(G=G2, D=D2).read(path).assert_consumed()
    for a, b in zip(G.weights + D.weights, G2.weights + D2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(G(z, labels).numpy(), G2(z, labels).numpy())


def test_training_graph_keeps_grapplers_remapper_working(onednn_graph_run):
    """With oneDNN, grappler's remapper fused Conv2D + BiasAdd + Add + Relu at D's residual
    sums although the sum has other readers (the next block's shortcut, the FQ look-up), logged
    "remapper failed" on every BigGAN training graph and dropped its work there
    (`networks.layers.unfused_relu`). A fresh oneDNN process traces D's hinge + FQ loss and its
    weight gradients, FQ after every block: no remapper error, and the numbers of eager
    execution up to float32 summation order."""
    code = """if True:
        import numpy as np, tensorflow as tf
        from networks import biggan
        G, D = biggan.make_biggan("cifar10", ch=4, num_classes=3, fq_layers=[0, 1, 2, 3],
                                  fq_kwargs={"num_embeddings": 8})
        rng = np.random.default_rng(0)
        images = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)), tf.float32)
        labels = tf.constant([0, 1, 2, 0])
        D(images, labels)
        def step(images):
            with tf.GradientTape() as tape:
                logits, lookups = D(images, labels, training=False, return_fq=True)
                loss = tf.reduce_mean(tf.nn.relu(1.0 - logits)) + tf.add_n(
                    [lookup["loss"] for lookup in lookups])
            return [loss, *tape.gradient(loss, D.trainable_weights)]
        eager, graph = step(images), tf.function(step)(images)
        print(max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(eager, graph)
                  if np.max(np.abs(a)) > 0))
    """
    # Sums of up to 9 * 16 products per output through 4 blocks and back: summation order
    # moves them by some float32 ulps of the largest value; dropping a term or a ReLU would
    # move them by far more than 1000 ulps (1.2e-4 relative).
    assert float(onednn_graph_run(code).split()[-1]) <= 1000 * np.finfo(np.float32).eps
