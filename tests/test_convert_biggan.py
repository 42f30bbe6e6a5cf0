"""networks.convert.from_biggan_pytorch: official BigGAN-PyTorch / FQ-BigGAN state dicts.

The state dicts here are written from the official layout (names and shapes of BigGAN.py,
layers.py and vq_layer.py), independently of our networks, and the converted networks are
checked against a numpy NCHW transcription of the official eval-mode forward passes.
"""

import numpy as np
import pytest

from networks import convert

G_CHANNELS = {32: ((4, 4, 4), (4, 4, 4), (8, 16, 32)),
              64: ((16, 16, 8, 4), (16, 8, 4, 2), (8, 16, 32, 64))}
D_CHANNELS = {32: ((4, 4, 4, 4), (True, True, False, False), (16, 16, 16, 16)),
              64: ((1, 2, 4, 8, 16), (True, True, True, True, False), (32, 16, 8, 4, 4))}


#----------------------------------------------------------------------------
# Official layouts (PyTorch names, NCHW / (out, in) shapes).


def _sn(state, rng, key, shape, bias=True, scale=0.2):
    state[f"{key}.weight"] = (rng.randn(*shape) * scale).astype(np.float32)
    if bias:
        state[f"{key}.bias"] = (rng.randn(shape[0]) * 0.1).astype(np.float32)
    state[f"{key}.u0"] = rng.randn(1, shape[0]).astype(np.float32)
    state[f"{key}.sv0"] = rng.uniform(0.5, 2.0, size=(1,)).astype(np.float32)


def _stats(state, rng, key, channels):
    state[f"{key}.stored_mean"] = (rng.randn(channels) * 0.1).astype(np.float32)
    state[f"{key}.stored_var"] = rng.uniform(0.5, 1.5, channels).astype(np.float32)


def _attention(state, rng, key, c):
    for name, shape in (("theta", (c // 8, c)), ("phi", (c // 8, c)), ("g", (c // 2, c)),
                        ("o", (c, c // 2))):
        _sn(state, rng, f"{key}.{name}", shape + (1, 1), bias=False)
    state[f"{key}.gamma"] = np.float32(rng.randn())


def official_g_state(rng, resolution=32, ch=2, num_classes=5, dim_z=8, shared_dim=0,
                     hier=False, attention=()):
    ins, outs, resolutions = G_CHANNELS[resolution]
    num_slots = len(outs) + 1 if hier else 1
    chunk = dim_z // num_slots
    state = {}
    if shared_dim:
        state["shared.weight"] = rng.randn(num_classes, shared_dim).astype(np.float32)
    _sn(state, rng, "linear", (ins[0] * ch * 16, chunk if hier else dim_z))
    for i, (cin, cout, res) in enumerate(zip(ins, outs, resolutions)):
        cin, cout, key = cin * ch, cout * ch, f"blocks.{i}.0"
        for bn, c in (("bn1", cin), ("bn2", cout)):
            _stats(state, rng, f"{key}.{bn}", c)
            for part in ("gain", "bias"):
                if shared_dim:
                    _sn(state, rng, f"{key}.{bn}.{part}", (c, shared_dim + chunk), bias=False)
                else:
                    state[f"{key}.{bn}.{part}.weight"] = (
                        rng.randn(num_classes, c) * 0.2).astype(np.float32)
        _sn(state, rng, f"{key}.conv1", (cout, cin, 3, 3))
        _sn(state, rng, f"{key}.conv2", (cout, cout, 3, 3))
        _sn(state, rng, f"{key}.conv_sc", (cout, cin, 1, 1))
        if res in attention:
            _attention(state, rng, f"blocks.{i}.1", cout)
    c = outs[-1] * ch
    state["output_layer.0.gain"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    state["output_layer.0.bias"] = (rng.randn(c) * 0.1).astype(np.float32)
    _stats(state, rng, "output_layer.0", c)
    _sn(state, rng, "output_layer.2", (3, c, 3, 3))
    return state


def official_d_state(rng, resolution=32, ch=2, num_classes=5, fq_layers=(0, 1, 2, 3), K=16,
                     attention=()):
    mults, downsample, resolutions = D_CHANNELS[resolution]
    state, cin = {}, 3
    for i, (m, down, res) in enumerate(zip(mults, downsample, resolutions)):
        cout, key = m * ch, f"blocks.{i}"
        _sn(state, rng, f"{key}.0.conv1", (cout, cin, 3, 3))
        _sn(state, rng, f"{key}.0.conv2", (cout, cout, 3, 3))
        if cin != cout or down:
            _sn(state, rng, f"{key}.0.conv_sc", (cout, cin, 1, 1))
        after = 1
        if i in fq_layers:
            embed = rng.randn(cout, K).astype(np.float32)
            state[f"{key}.1.embed"] = embed
            state[f"{key}.1.cluster_size"] = rng.uniform(0, 5, K).astype(np.float32)
            state[f"{key}.1.embed_avg"] = embed * 1.5
            after = 2
        if res in attention:
            _attention(state, rng, f"{key}.{after}", cout)
        cin = cout
    _sn(state, rng, "linear", (1, cin))
    _sn(state, rng, "embed", (num_classes, cin), bias=False)
    return state


#----------------------------------------------------------------------------
# numpy transcription of the official eval-mode forward passes (NCHW, float64).


def np_sn_weight(state, key, eps=1e-8):
    """W / sigma with one power iteration from the stored u (layers.SN.W_, eval mode)."""
    w = state[f"{key}.weight"].astype(np.float64)
    w_mat = w.reshape(w.shape[0], -1)
    u = state[f"{key}.u0"].astype(np.float64)
    normalize = lambda x: x / max(np.linalg.norm(x), eps)
    v = normalize(u @ w_mat)
    u = normalize(v @ w_mat.T)
    return w / (v @ w_mat.T @ u.T).item()


def np_conv(state, key, x, eps=1e-8):
    w = np_sn_weight(state, key, eps)
    k = w.shape[-1]
    p = k // 2
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, w.shape[0], h, wd))
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("nihw,oi->nohw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
    if f"{key}.bias" in state:
        out += state[f"{key}.bias"][None, :, None, None]
    return out


def np_linear(state, key, x):
    out = x @ np_sn_weight(state, key).T
    return out + state[f"{key}.bias"] if f"{key}.bias" in state else out


def _up(x):
    return x.repeat(2, axis=2).repeat(2, axis=3)


def _pool(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def _relu(x):
    return np.maximum(x, 0)


def np_generator(state, z, y, eps=1e-5):
    """CIFAR G (no shared embedding, no attention) in eval mode; returns NHWC."""
    def norm(x, key):
        m = state[f"{key}.stored_mean"][None, :, None, None]
        v = state[f"{key}.stored_var"][None, :, None, None]
        return (x - m) / np.sqrt(v + eps)

    def ccbn(x, key):
        gain = state[f"{key}.gain.weight"][y][:, :, None, None]
        bias = state[f"{key}.bias.weight"][y][:, :, None, None]
        return norm(x, key) * (1 + gain) + bias

    h = np_linear(state, "linear", z.astype(np.float64))
    h = h.reshape(len(z), -1, 4, 4)
    i = 0
    while f"blocks.{i}.0.conv1.weight" in state:
        key = f"blocks.{i}.0"
        hh = np_conv(state, f"{key}.conv1", _up(_relu(ccbn(h, f"{key}.bn1"))))
        hh = np_conv(state, f"{key}.conv2", _relu(ccbn(hh, f"{key}.bn2")))
        h = hh + np_conv(state, f"{key}.conv_sc", _up(h))
        i += 1
    gain = state["output_layer.0.gain"][None, :, None, None]
    bias = state["output_layer.0.bias"][None, :, None, None]
    h = _relu(norm(h, "output_layer.0") * gain + bias)
    return np.tanh(np_conv(state, "output_layer.2", h)).transpose(0, 2, 3, 1)


def np_discriminator(state, x_nhwc, y, commitment):
    """CIFAR FQ-D in eval mode -> (logits (N,), per-sample FQ loss summed over layers (N,))."""
    h = x_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
    fq_loss = np.zeros(len(h))
    for i, down in enumerate(D_CHANNELS[32][1]):
        key = f"blocks.{i}"
        if i == 0:
            hh = _pool(np_conv(state, f"{key}.0.conv2", _relu(np_conv(state, f"{key}.0.conv1", h))))
            sc = np_conv(state, f"{key}.0.conv_sc", _pool(h))
        else:
            hh = np_conv(state, f"{key}.0.conv1", _relu(h))
            hh = np_conv(state, f"{key}.0.conv2", _relu(hh))
            sc = np_conv(state, f"{key}.0.conv_sc", h) if f"{key}.0.conv_sc.weight" in state else h
            if down:
                hh, sc = _pool(hh), _pool(sc)
        h = hh + sc
        if f"{key}.1.embed" in state:
            embed = state[f"{key}.1.embed"].astype(np.float64)            # (C, K)
            flat = h.transpose(0, 2, 3, 1).reshape(-1, h.shape[1])
            dist = (flat ** 2).sum(1, keepdims=True) - 2 * flat @ embed + (embed ** 2).sum(0)
            q = embed.T[dist.argmin(1)].reshape(h.shape[0], h.shape[2], h.shape[3], -1)
            fq_loss += commitment * ((q - h.transpose(0, 2, 3, 1)) ** 2).mean(axis=(1, 2, 3))
    h = _relu(h).sum(axis=(2, 3))
    out = np_linear(state, "linear", h)[:, 0]
    out += (np_sn_weight(state, "embed")[y] * h).sum(1)
    return out, fq_loss


#----------------------------------------------------------------------------


def test_cifar_state_dicts_load_and_match_the_official_forward():
    rng = np.random.RandomState(0)
    g_state = official_g_state(rng)
    d_state = official_d_state(rng)
    nets = convert.from_biggan_pytorch(g_state, d_state)
    G, D = nets.G, nets.D
    assert (G.resolution, G.num_classes, G.ch, G.dim_z, G.shared_dim, G.hier) == (
        32, 5, 2, 8, 0, False)
    assert D.fq_layer_indices == (0, 1, 2, 3)
    for fq in D.fq_layers:  # CIFAR-10 preset hyper-parameters, PyTorch EMA variant
        assert (fq.num_embeddings, fq.commitment_cost, fq.decay, fq.zero_debias) == (
            16, 1.0, 0.8, False)

    # Buffers arrive where our layers keep them.
    np.testing.assert_array_equal(G.linear.sn_u.numpy(), g_state["linear.u0"][0])
    assert G.linear.sn_sv.numpy() == g_state["linear.sv0"][0]
    np.testing.assert_array_equal(G.blocks[1].bn2.stored_var.numpy(),
                                  g_state["blocks.1.0.bn2.stored_var"])
    np.testing.assert_array_equal(G.output_bn.stored_mean.numpy(),
                                  g_state["output_layer.0.stored_mean"])
    fq = D.fq_by_block[2]
    np.testing.assert_array_equal(fq.embeddings.numpy(), d_state["blocks.2.1.embed"].T)
    np.testing.assert_array_equal(fq.ema_embedding_sums.numpy(), d_state["blocks.2.1.embed_avg"].T)
    np.testing.assert_array_equal(fq.ema_cluster_size.numpy(), d_state["blocks.2.1.cluster_size"])
    np.testing.assert_array_equal(D.embed.sn_u.numpy(), d_state["embed.u0"][0])

    z = rng.randn(3, 8).astype(np.float32)
    y = np.array([0, 4, 2])
    images = G(z, y, training=False).numpy()
    np.testing.assert_allclose(images, np_generator(g_state, z, y), rtol=1e-4, atol=2e-5)
    logits, lookups = D(images, y, training=False, return_fq=True)
    want_logits, want_fq = np_discriminator(d_state, images, y, commitment=1.0)
    np.testing.assert_allclose(logits.numpy()[:, 0], want_logits, rtol=1e-4, atol=1e-4)
    got_fq = sum(l["per_sample_loss"].numpy() for l in lookups)
    np.testing.assert_allclose(got_fq, want_fq, rtol=1e-4)


def test_imagenet64_state_dicts_with_shared_embedding_hierarchical_z_and_attention():
    rng = np.random.RandomState(1)
    g_state = official_g_state(rng, resolution=64, ch=2, num_classes=7, dim_z=20, shared_dim=6,
                               hier=True, attention=(32,))
    d_state = official_d_state(rng, resolution=64, ch=8, num_classes=7, fq_layers=(2,), K=32,
                               attention=(32,))
    G, D = convert.from_biggan_pytorch(g_state, d_state)
    assert (G.resolution, G.num_classes, G.shared_dim, G.hier, G.dim_z) == (64, 7, 6, True, 20)
    assert G.attention == (32,) and sorted(G.attentions) == [2]
    assert D.attention == (32,) and sorted(D.attentions) == [0] and D.fq_layer_indices == (2,)
    fq = D.fq_layers[0]  # ImageNet preset hyper-parameters
    assert (fq.num_embeddings, fq.commitment_cost, fq.decay) == (32, 0.5, 0.7)
    assert G.sn_epsilon == 1e-6 and G.init == "ortho"
    np.testing.assert_array_equal(G.shared.embeddings.numpy(), g_state["shared.weight"])
    # Shared-embedding ccbn: bias-free SN linears (C, shared + chunk), transposed.
    bn = G.blocks[0].bn1
    np.testing.assert_array_equal(bn.gain.kernel.numpy(), g_state["blocks.0.0.bn1.gain.weight"].T)
    np.testing.assert_array_equal(bn.bias.sn_u.numpy(), g_state["blocks.0.0.bn1.bias.u0"][0])
    assert G.attentions[2].gamma.numpy() == g_state["blocks.2.1.gamma"]
    np.testing.assert_array_equal(D.attentions[0].o.kernel.numpy(),
                                  d_state["blocks.0.1.o.weight"].transpose(2, 3, 1, 0))
    images = G(rng.randn(2, 20).astype(np.float32), np.array([1, 6]), training=False)
    assert images.shape == (2, 64, 64, 3) and np.all(np.isfinite(images.numpy()))
    assert np.all(np.isfinite(D(images, np.array([1, 6]), training=False).numpy()))


def test_cifar100_dictionary_hyperparameters_and_overrides():
    rng = np.random.RandomState(2)
    d_state = official_d_state(rng, num_classes=100, fq_layers=(1, 3), K=8)
    D = convert.from_biggan_pytorch(None, d_state).D
    assert D.fq_layer_indices == (1, 3)
    assert [(f.commitment_cost, f.decay) for f in D.fq_layers] == [(10.0, 0.9)] * 2
    D = convert.from_biggan_pytorch(
        d_state=d_state, discriminator_overrides={"fq_kwargs": {"commitment_cost": 2.0}}).D
    assert D.fq_layers[0].commitment_cost == 2.0
    # A BigGAN-PyTorch D without Quantize buffers is the baseline.
    baseline = official_d_state(rng, fq_layers=())
    assert convert.from_biggan_pytorch(d_state=baseline).D.fq_layers == []


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update({"blocks.1.0.conv2.weight": s["blocks.1.0.conv2.weight"][:, :-1]}),
     "'blocks.1.0.conv2.weight' has shape"),
    (lambda s: s.update({"blocks.0.0.bn1.stored_mean": np.zeros(3, np.float32)}),
     "'blocks.0.0.bn1.stored_mean' has shape"),
    (lambda s: s.update({"linear.u0": np.zeros((1, 5), np.float32)}), "'linear.u0' has shape"),
    (lambda s: s.pop("output_layer.0.stored_var"), "missing key 'output_layer.0.stored_var'"),
    (lambda s: s.update({"linear.u1": np.zeros((1, 128), np.float32)}), "linear.u1"),
])
def test_wrong_generator_state_fails_loudly(edit, message):
    state = official_g_state(np.random.RandomState(3))
    edit(state)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        convert.from_biggan_pytorch(state)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.update({"blocks.2.1.embed_avg": np.zeros((8, 15), np.float32)}),
     "'blocks.2.1.embed_avg' has shape"),
    (lambda s: s.update({"blocks.0.1.cluster_size": np.zeros(17, np.float32)}),
     "'blocks.0.1.cluster_size' has shape"),
    (lambda s: s.update({"embed.weight": np.zeros((5, 9), np.float32)}),
     "'embed.weight' has shape"),
    (lambda s: s.pop("blocks.3.0.conv2.sv0"), "missing key 'blocks.3.0.conv2.sv0'"),
])
def test_wrong_discriminator_state_fails_loudly(edit, message):
    state = official_d_state(np.random.RandomState(4))
    edit(state)
    with pytest.raises(ValueError, match=message):
        convert.from_biggan_pytorch(d_state=state)


def test_unsupported_architectures_and_empty_input():
    with pytest.raises(ValueError, match="give g_state, d_state or both"):
        convert.from_biggan_pytorch()
    with pytest.raises(ValueError, match="blocks.0.0.conv1.weight"):
        convert.from_biggan_pytorch({"linear.weight": np.zeros((4, 4), np.float32)})
    state = official_g_state(np.random.RandomState(5))
    two_blocks = {k: v for k, v in state.items() if not k.startswith("blocks.2.")}
    with pytest.raises(ValueError, match="2 blocks; supported are the 32x32"):
        convert.from_biggan_pytorch(two_blocks)
    # Four GBlocks of CIFAR widths: block count of the 64x64 G, but not its channel ratios.
    state.update({k.replace("blocks.2.", "blocks.3."): v for k, v in list(state.items())
                  if k.startswith("blocks.2.")})
    with pytest.raises(ValueError, match="unsupported architecture"):
        convert.from_biggan_pytorch(state)


def test_prefixed_single_file_form_prefers_g_ema_and_saves(tmp_path):
    rng = np.random.RandomState(6)
    g, g_ema, d = official_g_state(rng), official_g_state(rng), official_d_state(rng)
    state = {**{f"G.{k}": v for k, v in g.items()}, **{f"G_ema.{k}": v for k, v in g_ema.items()},
             **{f"D.{k}": v for k, v in d.items()}}
    nets = convert.IMPORTERS["biggan-pytorch"](state)
    np.testing.assert_array_equal(nets.G.linear.kernel.numpy(), g_ema["linear.weight"].T)
    only_d = convert.IMPORTERS["biggan-pytorch"](d)
    assert only_d.G is None and only_d.D is not None
    convert.save_networks(str(tmp_path / "converted"), G=nets.G, D=nets.D)
    loaded = convert.load_networks(str(tmp_path / "converted"))
    z, y = rng.randn(2, 8).astype(np.float32), np.array([3, 1])
    images = loaded["G"](z, y).numpy()
    # The same classes rebuilt with the same weights, run eagerly: the same ops, bit-equal.
    np.testing.assert_array_equal(images, nets.G(z, y).numpy())
    # convert.load_networks restores lazily: variables get their values when first built.
    np.testing.assert_array_equal(loaded["D"](images, y).numpy(), nets.D(images, y).numpy())
    np.testing.assert_array_equal(loaded["D"].fq_layers[1].embeddings.numpy(),
                                  d["blocks.1.1.embed"].T)
