"""Official-weight import (stylegan2-ada-pytorch naming) checked against a numpy reference.

The reference below is a straight NCHW transcription of the official PyTorch forward pass
(`../shared/reference/stylegan.md`: weight_gain = 1/sqrt(fan_in), conv2d_resample padding
rules, conv_transpose2d for up-convs, upfirdn2d as true convolution, NCHW flatten before the
D's fc, affine bias initialised to 1 and no +1 at run time). It shares no code with
`networks/`. Synthetic state dicts use the official names and shapes.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import export
from networks import convert, stylegan2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float64)
FIR /= FIR.sum()
SQRT2 = np.sqrt(2.0)
# Max abs difference allowed between our float32 NHWC nets and the float64 reference; the
# reference notes 1.5e-5 (G) / 3e-6 (D) for a careful port against PyTorch at 32x32.
ATOL = 2e-5


def assert_matches(ours, expected, rel=ATOL):
    """Max abs error within rel * (largest |expected|, at least 1); outputs must not be tiny."""
    scale = float(np.abs(expected).max())
    assert scale > 1e-3, f"reference output too small to compare ({scale})"
    error = float(np.abs(np.asarray(ours, np.float64) - expected).max())
    assert error <= rel * max(scale, 1.0) and error <= 1e-3 * scale, (error, scale)

#----------------------------------------------------------------------------
# Numpy reference (NCHW, PyTorch conventions).


def np_conv2d(x, w, stride=1, pad=0):
    """Cross-correlation, x [N,I,H,W], w [O,I,k,k]."""
    n, _, h, wd = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho, wo = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, ho, wo))
    for a in range(k):
        for b in range(k):
            patch = xp[:, :, a:a + stride * ho:stride, b:b + stride * wo:stride]
            out += np.einsum("nihw,oi->nohw", patch, w[:, :, a, b])
    return out


def np_conv_transpose2d(x, w, stride):
    """PyTorch conv_transpose2d without padding, w [I,O,k,k]: scatter-add definition."""
    n, _, h, wd = x.shape
    _, o, k, _ = w.shape
    out = np.zeros((n, o, (h - 1) * stride + k, (wd - 1) * stride + k))
    for a in range(k):
        for b in range(k):
            out[:, :, a:a + stride * h:stride, b:b + stride * wd:stride] += np.einsum(
                "nihw,io->nohw", x, w[:, :, a, b])
    return out


def np_upfirdn2d(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """Zero-insert upsample, pad (before, after) on H and W, true convolution with f, downsample."""
    n, c, h, w = x.shape
    if up > 1:
        y = np.zeros((n, c, h * up, w * up))
        y[:, :, ::up, ::up] = x
        x = y
    x = np.pad(x, ((0, 0), (0, 0), pad, pad))
    f = (f * gain)[::-1, ::-1]  # convolution = correlation with the flipped filter
    k = f.shape[0]
    ho, wo = x.shape[2] - k + 1, x.shape[3] - k + 1
    out = np.zeros((n, c, ho, wo))
    for a in range(k):
        for b in range(k):
            out += x[:, :, a:a + ho, b:b + wo] * f[a, b]
    return out[:, :, ::down, ::down]


def np_conv2d_resample(x, w, up=1, down=1, padding=0):
    """stylegan2-ada-pytorch conv2d_resample, the cases the networks use (flip_weight = up == 1)."""
    k = w.shape[-1]
    fw = 4
    px0 = px1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
    if k == 1 and down > 1 and up == 1:
        return np_conv2d(np_upfirdn2d(x, FIR, down=down, pad=(px0, px1)), w)
    if k == 1 and up > 1 and down == 1:
        return np_upfirdn2d(np_conv2d(x, w), FIR, up=up, pad=(px0, px1), gain=up ** 2)
    if down > 1 and up == 1:
        return np_conv2d(np_upfirdn2d(x, FIR, pad=(px0, px1)), w, stride=down)
    if up > 1:
        w_t = w.transpose(1, 0, 2, 3)  # [I,O,k,k]; flip_weight=True for the transpose: no flip
        px0 -= k - 1
        px1 -= k - up
        x = np_conv_transpose2d(x, w_t, stride=up)
        return np_upfirdn2d(x, FIR, pad=(px0, px1), gain=up ** 2)
    return np_conv2d(x, w, pad=px0)


def lrelu(x, gain=SQRT2):
    return np.where(x >= 0, x, 0.2 * x) * gain


def np_fc(x, state, key, lrmul=1.0, act=False):
    w = state[f"{key}.weight"]
    y = x @ (w * (lrmul / np.sqrt(w.shape[1]))).T + state[f"{key}.bias"] * lrmul
    return lrelu(y) if act else y


def normalize_2nd_moment(x):
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)


def np_mapping(state, prefix, z, c, num_layers):
    parts = []
    if z is not None:
        parts.append(normalize_2nd_moment(z))
    if c is not None:
        parts.append(normalize_2nd_moment(np_fc(c, state, f"{prefix}embed")))
    x = np.concatenate(parts, axis=1)
    for i in range(num_layers):
        x = np_fc(x, state, f"{prefix}fc{i}", lrmul=0.01, act=True)
    return x


def np_modulated_layer(state, key, x, w, up=1, demodulate=True, gain=1.0):
    """SynthesisLayer / ToRGBLayer forward, per sample (the fused form)."""
    weight = state[f"{key}.weight"]
    styles = np_fc(w, state, f"{key}.affine")
    if not demodulate:
        styles = styles / np.sqrt(weight[0].size)  # ToRGB: weight_gain on the styles
    out = []
    for n in range(x.shape[0]):
        wn = weight * styles[n][np.newaxis, :, np.newaxis, np.newaxis]
        if demodulate:
            wn = wn / np.sqrt(np.sum(wn ** 2, axis=(1, 2, 3), keepdims=True) + 1e-8)
        out.append(np_conv2d_resample(x[n:n + 1], wn, up=up, padding=weight.shape[-1] // 2))
    y = np.concatenate(out)
    if not demodulate:
        return y + state[f"{key}.bias"][np.newaxis, :, np.newaxis, np.newaxis]
    y = y + state[f"{key}.noise_const"] * state[f"{key}.noise_strength"]
    y = y + state[f"{key}.bias"][np.newaxis, :, np.newaxis, np.newaxis]
    return lrelu(y, SQRT2 * gain)


def np_generator(state, z, c, resolution, architecture, mapping_layers, psi=1.0):
    ws1 = np_mapping(state, "mapping.", z, c, mapping_layers)
    ws1 = state["mapping.w_avg"] + (ws1 - state["mapping.w_avg"]) * psi
    x = img = None
    w_idx = 0
    res_list = [2 ** i for i in range(2, int(np.log2(resolution)) + 1)]
    for r in res_list:
        b = f"synthesis.b{r}"
        if r == 4:
            x = np.repeat(state[f"{b}.const"][np.newaxis], z.shape[0], axis=0)
            x = np_modulated_layer(state, f"{b}.conv1", x, ws1)
            w_idx += 1
        elif architecture == "resnet":
            y = np_conv2d_resample(x, state[f"{b}.skip.weight"] / np.sqrt(x.shape[1]), up=2)
            y = y * np.sqrt(0.5)
            x = np_modulated_layer(state, f"{b}.conv0", x, ws1, up=2)
            x = np_modulated_layer(state, f"{b}.conv1", x, ws1, gain=np.sqrt(0.5))
            x = y + x
            w_idx += 2
        else:
            x = np_modulated_layer(state, f"{b}.conv0", x, ws1, up=2)
            x = np_modulated_layer(state, f"{b}.conv1", x, ws1)
            w_idx += 2
        if img is not None:
            img = np_upfirdn2d(img, FIR, up=2, pad=(2, 1), gain=4)
        if architecture == "skip" or r == resolution:
            y = np_modulated_layer(state, f"{b}.torgb", x, ws1, demodulate=False)
            img = y if img is None else img + y
    return img.transpose(0, 2, 3, 1)  # NHWC for comparison


def np_dconv(state, key, x, up=1, down=1, act=True, gain=1.0, bias=True):
    w = state[f"{key}.weight"]
    y = np_conv2d_resample(x, w / np.sqrt(w[0].size), up=up, down=down, padding=w.shape[-1] // 2)
    if bias:
        y = y + state[f"{key}.bias"][np.newaxis, :, np.newaxis, np.newaxis]
    return lrelu(y, SQRT2 * gain) if act else y * gain


def np_mbstd(x, group_size=4):
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, -1, 1, c, h, w)
    y = y - y.mean(axis=0)
    y = np.sqrt(np.mean(y ** 2, axis=0) + 1e-8)
    y = y.mean(axis=(2, 3, 4)).reshape(-1, 1, 1, 1)
    y = np.tile(y, (g, 1, h, w))
    return np.concatenate([x, y], axis=1)


def np_discriminator(state, img_nhwc, c, resolution, architecture, mapping_layers=8):
    img = img_nhwc.transpose(0, 3, 1, 2).astype(np.float64)
    x = None
    for r in [2 ** i for i in range(int(np.log2(resolution)), 2, -1)]:
        b = f"b{r}"
        if r == resolution or architecture == "skip":
            y = np_dconv(state, f"{b}.fromrgb", img)
            x = y if x is None else x + y
            img = np_upfirdn2d(img, FIR, down=2, pad=(1, 1)) if architecture == "skip" else None
        if architecture == "resnet":
            y = np_dconv(state, f"{b}.skip", x, down=2, act=False, gain=np.sqrt(0.5), bias=False)
            x = np_dconv(state, f"{b}.conv0", x)
            x = np_dconv(state, f"{b}.conv1", x, down=2, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = np_dconv(state, f"{b}.conv1", np_dconv(state, f"{b}.conv0", x), down=2)
    if architecture == "skip":
        x = x + np_dconv(state, "b4.fromrgb", img)
    x = np_mbstd(x)
    x = np_dconv(state, "b4.conv", x)
    x = np_fc(x.reshape(x.shape[0], -1), state, "b4.fc", act=True)  # NCHW flatten
    x = np_fc(x, state, "b4.out")
    if c is not None:
        cmap = np_mapping(state, "mapping.", None, c, mapping_layers)
        x = np.sum(x * cmap, axis=1, keepdims=True) / np.sqrt(cmap.shape[1])
    return x

#----------------------------------------------------------------------------
# Synthetic state dicts with the official names and shapes.


def channels(resolution, channel_base, channel_max):
    return {2 ** i: min(channel_base // 2 ** i, channel_max)
            for i in range(2, int(np.log2(resolution)) + 1)}


def official_g_state(rng, resolution=16, z_dim=8, c_dim=0, w_dim=8, channel_base=128,
                     channel_max=16, img_channels=3, architecture="skip", mapping_layers=2):
    ch = channels(resolution, channel_base, channel_max)
    s = {}

    def dense(key, out_f, in_f, bias_center=0.0, lrmul=1.0):
        # Official init: weight N(0, 1) / lr_multiplier.
        s[f"{key}.weight"] = rng.standard_normal((out_f, in_f)) / lrmul
        s[f"{key}.bias"] = bias_center + 0.1 * rng.standard_normal(out_f)

    embed = w_dim if c_dim else 0
    if c_dim:
        dense("mapping.embed", embed, c_dim)
    features = [z_dim + embed] + [w_dim] * mapping_layers
    for i in range(mapping_layers):
        dense(f"mapping.fc{i}", features[i + 1], features[i], lrmul=0.01)
    s["mapping.w_avg"] = rng.standard_normal(w_dim)

    def layer(key, o, i, r):
        s[f"{key}.weight"] = rng.standard_normal((o, i, 3, 3))
        dense(f"{key}.affine", i, w_dim, bias_center=1.0)  # PyTorch: affine bias_init=1
        s[f"{key}.bias"] = 0.1 * rng.standard_normal(o)
        s[f"{key}.noise_strength"] = np.array(0.3 * rng.standard_normal())
        s[f"{key}.noise_const"] = rng.standard_normal((r, r))
        s[f"{key}.resample_filter"] = FIR.copy()

    for r in ch:
        b = f"synthesis.b{r}"
        s[f"{b}.resample_filter"] = FIR.copy()
        if r == 4:
            s[f"{b}.const"] = rng.standard_normal((ch[4], 4, 4))
        else:
            layer(f"{b}.conv0", ch[r], ch[r // 2], r)
        layer(f"{b}.conv1", ch[r], ch[r], r)
        if architecture == "skip" or r == resolution:
            s[f"{b}.torgb.weight"] = rng.standard_normal((img_channels, ch[r], 1, 1))
            s[f"{b}.torgb.bias"] = 0.1 * rng.standard_normal(img_channels)
            dense(f"{b}.torgb.affine", ch[r], w_dim, bias_center=1.0)
        if architecture == "resnet" and r > 4:
            s[f"{b}.skip.weight"] = rng.standard_normal((ch[r], ch[r // 2], 1, 1))
            s[f"{b}.skip.resample_filter"] = FIR.copy()
    return {k: np.asarray(v, np.float32) for k, v in s.items()}


def official_d_state(rng, resolution=16, c_dim=0, channel_base=128, channel_max=16,
                     img_channels=3, architecture="resnet", mapping_layers=8):
    ch = channels(resolution, channel_base, channel_max)
    s = {}

    def conv(key, o, i, k, bias=True):
        s[f"{key}.weight"] = rng.standard_normal((o, i, k, k))
        if bias:
            s[f"{key}.bias"] = 0.1 * rng.standard_normal(o)
        s[f"{key}.resample_filter"] = FIR.copy()

    def dense(key, o, i, lrmul=1.0):
        s[f"{key}.weight"] = rng.standard_normal((o, i)) / lrmul
        s[f"{key}.bias"] = 0.1 * rng.standard_normal(o)

    for r in [2 ** i for i in range(int(np.log2(resolution)), 2, -1)]:
        b = f"b{r}"
        tmp, out = ch[r], ch[r // 2]
        if r == resolution or architecture == "skip":
            conv(f"{b}.fromrgb", tmp, img_channels, 1)
        conv(f"{b}.conv0", tmp, tmp, 3)
        conv(f"{b}.conv1", out, tmp, 3)
        if architecture == "resnet":
            conv(f"{b}.skip", out, tmp, 1, bias=False)
        s[f"{b}.resample_filter"] = FIR.copy()
    c4 = ch[4]
    if architecture == "skip":
        conv("b4.fromrgb", c4, img_channels, 1)
    conv("b4.conv", c4, c4 + 1, 3)
    dense("b4.fc", c4, c4 * 16)
    cmap = c4 if c_dim else 0
    dense("b4.out", cmap or 1, c4)
    if c_dim:
        dense("mapping.embed", cmap, c_dim)
        for i in range(mapping_layers):
            dense(f"mapping.fc{i}", cmap, cmap, lrmul=0.01)
    return {k: np.asarray(v, np.float32) for k, v in s.items()}

#----------------------------------------------------------------------------
# Tests.


@pytest.mark.parametrize("architecture,c_dim", [("skip", 0), ("resnet", 3)])
def test_generator_matches_reference(architecture, c_dim):
    rng = np.random.default_rng(0)
    state = official_g_state(rng, architecture=architecture, c_dim=c_dim)
    G = convert.from_stylegan2_ada_pytorch(state).G
    assert G.synthesis.architecture == architecture and G.c_dim == c_dim
    z = rng.standard_normal((2, 8)).astype(np.float32)
    c = np.eye(3, dtype=np.float32)[[0, 2]] if c_dim else None
    expected = np_generator(state, z.astype(np.float64), c, 16, architecture, 2, psi=0.7)
    ours = G(z, c, truncation_psi=0.7, noise_mode="const").numpy()
    assert ours.shape == (2, 16, 16, 3)
    assert_matches(ours, expected)


def test_generator_fused_modconv_matches_reference(tmp_path):
    """Converted official weights with the official fused (per-sample kernel) modulated conv:
    the reference images, gradients and a SavedModel with a dynamic batch, on every CPU (the
    suite runs with oneDNN on and off: grouped kernels or the im2col fallback)."""
    rng = np.random.default_rng(1)
    state = official_g_state(rng)
    G = convert.from_stylegan2_ada_pytorch(
        state, generator_overrides={"fused_modconv": True}).G
    assert G.synthesis.fused_modconv
    z = rng.standard_normal((2, 8)).astype(np.float32)
    expected = np_generator(state, z.astype(np.float64), None, 16, "skip", 2)
    assert_matches(G(z).numpy(), expected)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(G(z) ** 2)
    grads = tape.gradient(loss, G.trainable_variables)
    assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
    path = export.export_generator(G, str(tmp_path / "export"))
    served = tf.saved_model.load(path).signatures["serving_default"]
    for n in (1, 3):
        zn = rng.standard_normal((n, 8)).astype(np.float32)
        images = served(z=tf.constant(zn), truncation_psi=tf.constant(1.0))["images_float"]
        expected = np_generator(state, zn.astype(np.float64), None, 16, "skip", 2)
        assert_matches(images.numpy(), np.clip(expected, -1, 1))


@pytest.mark.parametrize("architecture,c_dim", [("resnet", 0), ("skip", 0), ("orig", 3)])
def test_discriminator_matches_reference(architecture, c_dim):
    rng = np.random.default_rng(2)
    state = official_d_state(rng, architecture=architecture, c_dim=c_dim)
    D = convert.from_stylegan2_ada_pytorch(state).D
    assert D.architecture == architecture
    images = rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    c = np.eye(3, dtype=np.float32)[[0, 1, 2, 1]] if c_dim else None
    expected = np_discriminator(state, images, c, 16, architecture)
    ours = D(images, c).numpy()
    assert ours.shape == (4, 1)
    assert_matches(ours, expected)


def test_unflipped_up_conv_kernel_changes_the_output():
    rng = np.random.default_rng(3)
    state = official_g_state(rng)
    z = rng.standard_normal((2, 8)).astype(np.float32)
    expected = np_generator(state, z.astype(np.float64), None, 16, "skip", 2)
    G = convert.from_stylegan2_ada_pytorch(state).G
    for block in G.synthesis.blocks[1:]:  # undo the converter's flip of every up-conv
        kernel = block.conv0.conv.kernel
        kernel.assign(kernel.numpy()[::-1, ::-1])
    error = np.abs(G(z).numpy() - expected).max()
    assert error > 1000 * ATOL, error


def test_unpermuted_fc_rows_change_the_logits():
    rng = np.random.default_rng(4)
    state = official_d_state(rng)
    images = rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    D = convert.from_stylegan2_ada_pytorch(state).D
    c = D.b4.in_channels
    D.b4.fc.kernel.assign(state["b4.fc.weight"].T)  # NCHW row order, as without the permutation
    expected = np_discriminator(state, images, None, 16, "resnet")
    assert np.abs(D(images).numpy() - expected).max() > 1000 * ATOL
    assert D.b4.fc.kernel.shape == (16 * c, c)


def test_affine_bias_minus_one_convention():
    rng = np.random.default_rng(5)
    state = official_g_state(rng)
    G = convert.from_stylegan2_ada_pytorch(state).G
    # One float32 rounding of |b - 1| < 5 at most: <= ulp(5) / 2 = 2.4e-7 < 1e-6.
    np.testing.assert_allclose(G.synthesis.b8.conv0.conv.affine.bias.numpy(),
                               state["synthesis.b8.conv0.affine.bias"] - 1.0, atol=1e-6)
    np.testing.assert_array_equal(G.dlatent_avg.numpy(),  # a float32 copy
                                  state["mapping.w_avg"].astype(np.float32))


def test_missing_key_fails_loudly():
    state = official_g_state(np.random.default_rng(6))
    del state["synthesis.b8.conv1.affine.weight"]
    with pytest.raises(ValueError, match=r"missing key 'synthesis\.b8\.conv1\.affine\.weight'"):
        convert.from_stylegan2_ada_pytorch(state)


def test_wrong_shape_fails_loudly():
    state = official_d_state(np.random.default_rng(7))
    state["b8.conv0.weight"] = state["b8.conv0.weight"][:, :, :1]
    with pytest.raises(ValueError, match=r"'b8\.conv0\.weight' has shape"):
        convert.from_stylegan2_ada_pytorch(state)


def test_unexpected_key_fails_loudly():
    state = official_d_state(np.random.default_rng(8))
    state["b8.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unexpected key.*b8.extra.weight"):
        convert.from_stylegan2_ada_pytorch(state)


def test_unsupported_filter_fails_loudly():
    state = official_d_state(np.random.default_rng(9))
    state["b8.conv1.resample_filter"] = np.full((4, 4), 1 / 16, np.float32)
    with pytest.raises(ValueError, match="resample_filter"):
        convert.from_stylegan2_ada_pytorch(state)


def test_prefixed_state_gives_both_networks_and_prefers_g_ema():
    rng = np.random.default_rng(10)
    g, g_ema, d = official_g_state(rng), official_g_state(rng), official_d_state(rng)
    state = {**{f"G.{k}": v for k, v in g.items()}, **{f"G_ema.{k}": v for k, v in g_ema.items()},
             **{f"D.{k}": v for k, v in d.items()}}
    nets = convert.from_stylegan2_ada_pytorch(state)
    np.testing.assert_array_equal(nets.G.dlatent_avg.numpy(),  # a float32 copy
                                  g_ema["mapping.w_avg"].astype(np.float32))
    assert nets.D.resolution == 16
    with pytest.raises(ValueError, match="neither generator"):
        convert.from_stylegan2_ada_pytorch({"foo": np.zeros(1)})


def test_channel_formula_is_inferred():
    state = official_g_state(np.random.default_rng(11), resolution=32, channel_base=256,
                             channel_max=16)
    G = convert.from_stylegan2_ada_pytorch(state).G
    assert G.synthesis.channels == channels(32, 256, 16) == {4: 16, 8: 16, 16: 16, 32: 8}


def test_cli_converts_npz_and_checkpoint_round_trips(tmp_path):
    rng = np.random.default_rng(12)
    g, d = official_g_state(rng), official_d_state(rng)
    npz = tmp_path / "weights.npz"
    np.savez(npz, **{f"G_ema.{k}": v for k, v in g.items()}, **{f"D.{k}": v for k, v in d.items()})
    out = tmp_path / "converted"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "run_convert.py"),
                             f"--network={npz}", f"--outdir={out}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Saved to" in result.stdout
    nets = convert.load_networks(str(out))
    z = rng.standard_normal((2, 8)).astype(np.float32)
    expected = np_generator(g, z.astype(np.float64), None, 16, "skip", 2)
    assert_matches(nets["G"](z).numpy(), expected)
    images = rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
    assert_matches(nets["D"](images).numpy(), np_discriminator(d, images, None, 16, "resnet"))
    # Running it again onto the same directory refuses instead of overwriting.
    again = subprocess.run([sys.executable, os.path.join(ROOT, "run_convert.py"),
                            f"--network={npz}", f"--outdir={out}"],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "already holds networks" in again.stderr


def test_pt_input_without_torch_is_a_clear_error(tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed")
    with pytest.raises(ValueError, match="needs PyTorch"):
        convert.read_state(str(tmp_path / "weights.pt"))


def test_converted_networks_run_under_tf_function():
    state = official_g_state(np.random.default_rng(13))
    G = convert.from_stylegan2_ada_pytorch(state).G
    z = tf.random.normal((2, 8))
    eager = G(z, truncation_psi=0.5).numpy()
    graph = tf.function(lambda z: G(z, truncation_psi=0.5))(z).numpy()
    # Graph rewrites (fused bias/activation) round each op differently: ~eps32 relative per op,
    # ~20 ops deep on |x| < 4: <= 20 * 1.2e-7 * 4 ~ 1e-5.
    np.testing.assert_allclose(graph, eager, atol=1e-5)
    assert isinstance(G, stylegan2.Generator)
