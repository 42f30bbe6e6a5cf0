"""networks.convert.from_ugatit_pytorch against an NCHW numpy transcription of UGATIT-pytorch.

The state dicts are synthetic, with the official names and shapes (ResnetGenerator and
Discriminator of znxlwm/UGATIT-pytorch networks.py, torch spectral_norm's weight_orig /
weight_u / weight_v); the numpy forward follows that code line by line.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from networks import convert, ugatit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPS = 1e-5

# ---------------------------------------------------------------------------------------------
# Official state dicts.


def unit(rng, n):
    v = rng.standard_normal(n)
    return v / np.linalg.norm(v)


def generator_state(rng, ngf=2, n_blocks=2, light=True, img_size=16, in_ch=3, out_ch=3):
    c = 4 * ngf
    w = {}

    def conv(key, o, i, k):
        w[f"{key}.weight"] = rng.uniform(-1, 1, (o, i, k, k)) / np.sqrt(i * k * k)

    conv("DownBlock.1", ngf, in_ch, 7)
    conv("DownBlock.5", 2 * ngf, ngf, 3)
    conv("DownBlock.9", 4 * ngf, 2 * ngf, 3)
    for i in range(n_blocks):
        conv(f"DownBlock.{12 + i}.conv_block.1", c, c, 3)
        conv(f"DownBlock.{12 + i}.conv_block.5", c, c, 3)
    w["gap_fc.weight"] = rng.uniform(-1, 1, (1, c)) / np.sqrt(c)
    w["gmp_fc.weight"] = rng.uniform(-1, 1, (1, c)) / np.sqrt(c)
    conv("conv1x1", c, 2 * c, 1)
    w["conv1x1.bias"] = rng.uniform(-0.1, 0.1, c)
    mlp_in = c if light else (img_size // 4) ** 2 * c
    w["FC.0.weight"] = rng.uniform(-1, 1, (c, mlp_in)) / np.sqrt(mlp_in)
    w["FC.2.weight"] = rng.uniform(-1, 1, (c, c)) / np.sqrt(c)
    w["gamma.weight"] = rng.uniform(-1, 1, (c, c)) / np.sqrt(c)
    w["beta.weight"] = rng.uniform(-1, 1, (c, c)) / np.sqrt(c)
    for i in range(1, n_blocks + 1):
        for j in (1, 2):
            conv(f"UpBlock1_{i}.conv{j}", c, c, 3)
            w[f"UpBlock1_{i}.norm{j}.rho"] = rng.uniform(0, 1, (1, c, 1, 1))
    for index, (o, i) in ((2, (c // 2, c)), (7, (c // 4, c // 2))):
        conv(f"UpBlock2.{index}", o, i, 3)
        w[f"UpBlock2.{index + 1}.rho"] = rng.uniform(0, 1, (1, o, 1, 1))
        w[f"UpBlock2.{index + 1}.gamma"] = rng.uniform(0.5, 1.5, (1, o, 1, 1))
        w[f"UpBlock2.{index + 1}.beta"] = rng.uniform(-0.5, 0.5, (1, o, 1, 1))
    conv("UpBlock2.11", out_ch, ngf, 7)
    return w


def discriminator_state(rng, ndf=2, n_layers=4, in_ch=3):
    w = {}

    def sn(key, shape, bias):
        w[f"{key}.weight_orig"] = rng.uniform(-1, 1, shape) / np.sqrt(np.prod(shape[1:]))
        w[f"{key}.weight_u"] = unit(rng, shape[0])
        w[f"{key}.weight_v"] = unit(rng, int(np.prod(shape[1:])))
        if bias:
            w[f"{key}.bias"] = rng.uniform(-0.1, 0.1, shape[0])

    channels = in_ch
    for i in range(n_layers - 1):
        out = ndf * 2 ** i
        sn(f"model.{1 + 3 * i}", (out, channels, 4, 4), True)
        channels = out
    sn("gap_fc", (1, channels), False)
    sn("gmp_fc", (1, channels), False)
    w["conv1x1.weight"] = rng.uniform(-1, 1, (channels, 2 * channels, 1, 1)) / np.sqrt(
        2 * channels)
    w["conv1x1.bias"] = rng.uniform(-0.1, 0.1, channels)
    sn("conv", (1, channels, 4, 4), False)
    return w


def official_state(rng, light=True, img_size=16, n_blocks=2):
    g = dict(light=light, img_size=img_size, n_blocks=n_blocks)
    return {"genA2B": generator_state(rng, **g), "genB2A": generator_state(rng, **g),
            "disGA": discriminator_state(rng, n_layers=5),
            "disGB": discriminator_state(rng, n_layers=5),
            "disLA": discriminator_state(rng, n_layers=4),
            "disLB": discriminator_state(rng, n_layers=4)}

# ---------------------------------------------------------------------------------------------
# The official forward passes in numpy (NCHW, float64).


def np_conv(x, w, b=None, stride=1):
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    ho, wo = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out if b is None else out + b[None, :, None, None]


def pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")


def instance_norm(x):
    return (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + EPS)


def iln_core(x, rho):
    """adaILN / ILN: torch.var is unbiased (N - 1)."""
    in_mean, in_var = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True, ddof=1)
    ln_mean, ln_var = x.mean((1, 2, 3), keepdims=True), x.var((1, 2, 3), keepdims=True, ddof=1)
    out_in = (x - in_mean) / np.sqrt(in_var + EPS)
    out_ln = (x - ln_mean) / np.sqrt(ln_var + EPS)
    return rho * out_in + (1 - rho) * out_ln


def relu(x):
    return np.maximum(x, 0)


def leaky(x):
    return np.where(x > 0, x, 0.2 * x)


def np_generator(w, x, light):
    x = relu(instance_norm(np_conv(pad(x, 3), w["DownBlock.1.weight"])))
    x = relu(instance_norm(np_conv(pad(x, 1), w["DownBlock.5.weight"], stride=2)))
    x = relu(instance_norm(np_conv(pad(x, 1), w["DownBlock.9.weight"], stride=2)))
    i = 12
    while f"DownBlock.{i}.conv_block.1.weight" in w:
        h = relu(instance_norm(np_conv(pad(x, 1), w[f"DownBlock.{i}.conv_block.1.weight"])))
        x = x + instance_norm(np_conv(pad(h, 1), w[f"DownBlock.{i}.conv_block.5.weight"]))
        i += 1
    gap_logit = x.mean((2, 3)) @ w["gap_fc.weight"].T
    gap = x * w["gap_fc.weight"][:, :, None, None]
    gmp_logit = x.max((2, 3)) @ w["gmp_fc.weight"].T
    gmp = x * w["gmp_fc.weight"][:, :, None, None]
    cam_logit = np.concatenate([gap_logit, gmp_logit], 1)
    x = relu(np_conv(np.concatenate([gap, gmp], 1), w["conv1x1.weight"], w["conv1x1.bias"]))
    heatmap = x.sum(1, keepdims=True)
    h = x.mean((2, 3)) if light else x.reshape(x.shape[0], -1)
    h = relu(relu(h @ w["FC.0.weight"].T) @ w["FC.2.weight"].T)
    gamma, beta = h @ w["gamma.weight"].T, h @ w["beta.weight"].T
    g, b = gamma[:, :, None, None], beta[:, :, None, None]
    i = 1
    while f"UpBlock1_{i}.conv1.weight" in w:
        key = f"UpBlock1_{i}"
        h = relu(iln_core(np_conv(pad(x, 1), w[f"{key}.conv1.weight"]), w[f"{key}.norm1.rho"])
                 * g + b)
        h = np_conv(pad(h, 1), w[f"{key}.conv2.weight"])
        x = x + iln_core(h, w[f"{key}.norm2.rho"]) * g + b
        i += 1
    for index in (2, 7):
        x = x.repeat(2, axis=2).repeat(2, axis=3)                      # nn.Upsample nearest
        x = np_conv(pad(x, 1), w[f"UpBlock2.{index}.weight"])
        n = f"UpBlock2.{index + 1}"
        x = relu(iln_core(x, w[f"{n}.rho"]) * w[f"{n}.gamma"] + w[f"{n}.beta"])
    x = np.tanh(np_conv(pad(x, 3), w["UpBlock2.11.weight"]))
    return x, cam_logit, heatmap


def sn_weight(w, key):
    """Eval-mode torch spectral_norm: W / (u . W_mat v) with the stored u, v."""
    weight = w[f"{key}.weight_orig"]
    sigma = w[f"{key}.weight_u"] @ weight.reshape(weight.shape[0], -1) @ w[f"{key}.weight_v"]
    return weight / sigma


def np_discriminator(w, x):
    i = 0
    while f"model.{1 + 3 * i}.weight_orig" in w:
        key = f"model.{1 + 3 * i}"
        last = f"model.{1 + 3 * (i + 1)}.weight_orig" not in w
        x = leaky(np_conv(pad(x, 1), sn_weight(w, key), w[f"{key}.bias"], stride=1 if last else 2))
        i += 1
    gap_logit = x.mean((2, 3)) @ sn_weight(w, "gap_fc").T
    gmp_logit = x.max((2, 3)) @ sn_weight(w, "gmp_fc").T
    # The re-weighting uses list(gap_fc.parameters())[0], i.e. weight_orig.
    gap = x * w["gap_fc.weight_orig"][:, :, None, None]
    gmp = x * w["gmp_fc.weight_orig"][:, :, None, None]
    cam_logit = np.concatenate([gap_logit, gmp_logit], 1)
    x = leaky(np_conv(np.concatenate([gap, gmp], 1), w["conv1x1.weight"], w["conv1x1.bias"]))
    heatmap = x.sum(1, keepdims=True)
    out = np_conv(pad(x, 1), sn_weight(w, "conv"))
    return out, cam_logit, heatmap


def nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def images(rng, n, size):
    return rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)

# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("light", [True, False])
def test_generators_match_the_official_forward(light):
    rng = np.random.default_rng(0 if light else 1)
    state = official_state(rng, light=light)
    nets = convert.from_ugatit_pytorch(state, img_size=16)
    assert list(nets) == ["genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB"]
    x = images(rng, 2, 16)
    for name in ("genA2B", "genB2A"):
        G = nets[name]
        assert (G.light, G.ngf, G.n_blocks, G.img_size) == (light, 2, 2, 16)
        image, cam_logit, heatmap = (t.numpy() for t in G(x))
        ref_image, ref_cam, ref_heatmap = np_generator(state[name], nchw(x).astype(np.float64),
                                                       light)
        # Against float64 numpy: ~15 float32 layers (sums of <= 147 terms, instance norms), each
        # ~sqrt(147) eps32 ~ 1.4e-6 relative, into tanh (|image| < 1): ~15 * 1.4e-6 ~ 2e-5.
        np.testing.assert_allclose(nchw(image), ref_image, atol=2e-5)
        np.testing.assert_allclose(cam_logit, ref_cam, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(nchw(heatmap), ref_heatmap, rtol=1e-4, atol=1e-4)


def test_discriminators_match_the_official_forward_and_keep_u_v():
    rng = np.random.default_rng(2)
    state = official_state(rng)
    nets = convert.from_ugatit_pytorch(state)
    x = images(rng, 2, 32)
    for name, n_layers in (("disGA", 5), ("disGB", 5), ("disLA", 4), ("disLB", 4)):
        D = nets[name]
        assert (D.n_layers, D.ndf) == (n_layers, 2) and not D.fq_layers
        out, cam_logit, heatmap = (t.numpy() for t in D(x, training=False))
        ref_out, ref_cam, ref_heatmap = np_discriminator(state[name], nchw(x).astype(np.float64))
        np.testing.assert_allclose(nchw(out), ref_out, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cam_logit, ref_cam, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(nchw(heatmap), ref_heatmap, rtol=1e-4, atol=1e-4)
        # Stored vectors are PyTorch's (one training forward then continues its power method).
        np.testing.assert_allclose(D.convs[0].sn_u.numpy(), state[name]["model.1.weight_u"],
                                   rtol=1e-6)
        np.testing.assert_allclose(D.conv_out.sn_v.numpy(), state[name]["conv.weight_v"],
                                   rtol=1e-6)


def test_fq_can_be_added_to_the_converted_global_discriminators():
    rng = np.random.default_rng(3)
    nets = convert.from_ugatit_pytorch(official_state(rng), fq=None, fq_layers=(1, 2),
                                       fq_kwargs={"num_embeddings": 16})
    assert nets["disGA"].fq_layer_indices == (1, 2) and nets["disGB"].fq_layer_indices == (1, 2)
    assert not nets["disLA"].fq_layers
    (out, _, _), lookups = nets["disGA"](images(rng, 1, 32), return_fq=True)
    # 32x32 input: convs 1 and 2 give 8x8 with 2 ndf and 4x4 with 4 ndf channels.
    assert [tuple(l["quantized"].shape) for l in lookups] == [(1, 8, 8, 4), (1, 4, 4, 8)]


def test_nested_flat_and_partial_states():
    rng = np.random.default_rng(4)
    state = official_state(rng)
    flat = {f"{net}.{k}": v for net, part in state.items() for k, v in part.items()}
    a = convert.from_ugatit_pytorch(flat)
    b = convert.from_ugatit_pytorch({"genA2B": state["genA2B"]})
    assert list(b) == ["genA2B"]
    x = images(rng, 1, 16)
    np.testing.assert_array_equal(a["genA2B"](x)[0].numpy(), b["genA2B"](x)[0].numpy())


def test_missing_key_fails_loudly():
    state = official_state(np.random.default_rng(5))
    del state["disLA"]["model.4.weight_v"]
    with pytest.raises(ValueError, match=r"UGATIT-pytorch disLA: missing key 'model.4.weight_v'"):
        convert.from_ugatit_pytorch(state)
    state = official_state(np.random.default_rng(5))
    del state["genB2A"]["UpBlock2.8.gamma"]
    with pytest.raises(ValueError, match=r"genB2A: missing key 'UpBlock2.8.gamma'"):
        convert.from_ugatit_pytorch(state)


def test_wrong_shape_fails_loudly():
    state = official_state(np.random.default_rng(6))
    state["genA2B"]["gamma.weight"] = state["genA2B"]["gamma.weight"][:, :4]
    with pytest.raises(ValueError, match=r"genA2B: 'gamma.weight' has shape \(8, 4\), expected "
                                         r"\(8, 8\)"):
        convert.from_ugatit_pytorch(state)
    state = official_state(np.random.default_rng(6))
    state["disGB"]["gap_fc.weight_u"] = np.ones(2)
    with pytest.raises(ValueError, match=r"disGB: 'gap_fc.weight_u' has shape \(2,\)"):
        convert.from_ugatit_pytorch(state)
    state = official_state(np.random.default_rng(6))
    state["genA2B"]["FC.0.weight"] = np.zeros((8, 100))
    with pytest.raises(ValueError, match="neither light mode"):
        convert.from_ugatit_pytorch(state)


def test_unexpected_keys_fail_loudly():
    state = official_state(np.random.default_rng(7))
    state["disGA"]["model.1.weight"] = np.zeros((2, 3, 4, 4))   # not a spectral-norm name
    with pytest.raises(ValueError, match=r"disGA: 1 unexpected key\(s\).*model.1.weight"):
        convert.from_ugatit_pytorch(state)
    with pytest.raises(ValueError, match="belongs to none of the networks"):
        convert.from_ugatit_pytorch({"G.DownBlock.1.weight": np.zeros((2, 3, 7, 7))})
    with pytest.raises(ValueError, match="empty state dict"):
        convert.from_ugatit_pytorch({})
    with pytest.raises(ValueError, match="conv_clamp does not apply"):
        convert.IMPORTERS["ugatit-pytorch"](official_state(np.random.default_rng(7)),
                                            generator_overrides={"conv_clamp": 256})


def test_cli_converts_and_the_translation_cli_uses_the_result(tmp_path):
    rng = np.random.default_rng(8)
    state = official_state(rng, light=False, img_size=16, n_blocks=1)
    npz = tmp_path / "selfie2anime_params_latest.npz"
    np.savez(npz, **{f"{net}.{k}": v for net, part in state.items() for k, v in part.items()})
    out = tmp_path / "converted"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_convert.py"),
                             "--source=ugatit-pytorch", f"--network={npz}", f"--outdir={out}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "genA2B: UGATITGenerator" in result.stdout and "Saved to" in result.stdout
    nets = convert.load_networks(str(out))
    assert sorted(nets) == sorted(convert.UGATIT_NETWORKS)
    x = images(rng, 1, 16)
    ref = np_generator(state["genA2B"], nchw(x).astype(np.float64), light=False)[0]
    # As in test_generators_match_the_official_forward: ~15 layers * sqrt(147) eps32 ~ 2e-5.
    np.testing.assert_allclose(nchw(nets["genA2B"](x)[0].numpy()), ref, atol=2e-5)
    y = images(rng, 1, 32)
    ref = np_discriminator(state["disLB"], nchw(y).astype(np.float64))[0]
    np.testing.assert_allclose(nchw(nets["disLB"](y)[0].numpy()), ref, rtol=1e-4, atol=1e-5)

    import run_translation
    from absl import flags
    from PIL import Image
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(np.uint8(np.clip((x[0] + 1) * 127.5, 0, 255))).save(src / "p.png")
    fv = flags.FlagValues()
    run_translation.define_flags(fv)
    fv(["run_translation.py", "--network", str(out), "--input", str(src), "--outdir",
        str(tmp_path / "anime")])
    assert run_translation.run(["run_translation.py"], fv) == 0
    assert np.asarray(Image.open(tmp_path / "anime" / "p.png")).shape == (16, 16, 3)


def test_converted_networks_run_under_tf_function():
    nets = convert.from_ugatit_pytorch(official_state(np.random.default_rng(9)))
    x = tf.constant(images(np.random.default_rng(10), 2, 16))
    G = nets["genB2A"]
    eager = G(x)[0].numpy()
    graph = tf.function(lambda x: G(x)[0])(x).numpy()
    # Graph rewrites round each op differently: ~eps32 per op, ~20 ops deep on |x| < 4: ~1e-5.
    np.testing.assert_allclose(graph, eager, atol=1e-5)
    assert isinstance(G, ugatit.UGATITGenerator)
