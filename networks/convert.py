"""Import official weights into our networks, and save / load converted networks.

    from networks import convert
    nets = convert.from_stylegan2_ada_pytorch(dict(np.load("ffhq.npz")))
    images = nets.G(z, truncation_psi=0.5)          # float32 NHWC in [-1, 1]
    logits = nets.D(images)                         # (N, 1)
    convert.save_networks("converted/ffhq", G=nets.G, D=nets.D)

Command line (a `.npz` of named arrays; a `.pt`/`.pth` state dict only if torch is installed):

    python run_convert.py --input ffhq.npz --output converted/ffhq

Each importer reads a flat mapping name -> numpy array through `StateReader`, which fails
loudly on a missing key, a wrong shape or a key nothing consumed, infers the architecture from
the shapes, builds our network and assigns every variable (`assign`). Importers for other
official code bases (U-GAT-IT, BigGAN) plug into `IMPORTERS` the same way.

Our checkpoint format (`save_networks` / `load_networks`): a directory with `networks.json`
(per network: class path and `get_config()`) and a `tf.train.Checkpoint` of the networks
(`ckpt-1.*`), restorable into freshly built networks without this module's importers.
"""

import collections
import importlib
import json
import os

import numpy as np
import tensorflow as tf

from networks import layers as L

#----------------------------------------------------------------------------
# Generic machinery (shared by every importer).


class StateReader:
    """Reads a flat state dict once per key, checking shapes; reports unused keys.

    Args:
      state: mapping name -> array-like.
      source: name of the weights' origin, used in error messages.
    """

    def __init__(self, state, source):
        self.state = {str(k): np.asarray(v) for k, v in state.items()}
        self.source = source
        self.used = set()

    def has(self, key):
        return key in self.state

    def shape(self, key):
        return self.take(key, mark=False).shape

    def take(self, key, shape=None, mark=True):
        if key not in self.state:
            raise ValueError(f"{self.source}: missing key '{key}' in the state dict (the weights "
                             "do not match the architecture inferred from the other keys).")
        value = self.state[key]
        if shape is not None and tuple(value.shape) != tuple(shape):
            raise ValueError(f"{self.source}: '{key}' has shape {tuple(value.shape)}, expected "
                             f"{tuple(shape)}.")
        if mark:
            self.used.add(key)
        return value.astype(np.float32) if value.dtype.kind == "f" else value

    def keys_with_prefix(self, prefix):
        return [k for k in self.state if k.startswith(prefix)]

    def check_all_used(self):
        unused = sorted(set(self.state) - self.used)
        if unused:
            shown = ", ".join(unused[:8]) + (" ..." if len(unused) > 8 else "")
            raise ValueError(f"{self.source}: {len(unused)} unexpected key(s) not matched by the "
                             f"inferred architecture: {shown}")


def assign(variable, value, key):
    """variable.assign(value) after an exact shape check naming the source key."""
    value = np.asarray(value, dtype=np.float32)
    if tuple(variable.shape) != value.shape:
        raise ValueError(f"'{key}': converted shape {value.shape} does not fit variable "
                         f"'{variable.path}' of shape {tuple(variable.shape)}.")
    variable.assign(value)


def _solve_fmap(channels, who):
    """fmap_base, fmap_max giving {R: channels} with nf = min(int(2 fmap_base / R), fmap_max)."""
    fmap_max = max(channels.values())
    unclipped = [(r, c) for r, c in channels.items() if c < fmap_max]
    if unclipped:
        r, c = max(unclipped)
        # int(2 * fmap_base / r) == c: any fmap_base in [c r / 2, (c + 1) r / 2).
        fmap_base = c * r / 2
    else:
        fmap_base = fmap_max * max(channels) / 2
    if float(fmap_base).is_integer():
        fmap_base = int(fmap_base)
    for r, c in channels.items():
        if L.num_features(int(r).bit_length() - 2, fmap_base, fmap_max=fmap_max) != c:
            raise ValueError(f"{who}: channel counts {channels} do not follow the official formula "
                             "min(channel_base // R, channel_max); unsupported layout.")
    return fmap_base, fmap_max


def _resolutions(reader, prefix, suffix):
    out = []
    for key in reader.keys_with_prefix(prefix):
        head = key[len(prefix):].split(".", 1)
        if len(head) == 2 and head[0].isdigit() and head[1].startswith(suffix):
            out.append(int(head[0]))
    return sorted(set(out))


def _count_layers(reader, prefix):
    n = 0
    while reader.has(f"{prefix}fc{n}.weight"):
        n += 1
    return n

#----------------------------------------------------------------------------
# stylegan2-ada-pytorch.

_RESAMPLE_FILTER = L.setup_filter((1, 3, 3, 1))


def _conv(w, flip=False):
    """PyTorch OIHW -> HWIO; flip spatially for up-convs (our TF-convention transposed conv)."""
    w = w.transpose(2, 3, 1, 0)
    return w[::-1, ::-1] if flip else w


def _check_filters(reader, prefix):
    for key in reader.keys_with_prefix(prefix):
        if key.endswith("resample_filter"):
            f = reader.take(key)
            if f.shape != _RESAMPLE_FILTER.shape or not np.allclose(f, _RESAMPLE_FILTER, atol=1e-6):
                raise ValueError(f"stylegan2-ada-pytorch: '{key}' is not the [1,3,3,1] FIR filter; "
                                 "other resampling filters are not supported.")


def _load_dense(reader, key, layer, affine=False):
    w = reader.take(f"{key}.weight", (layer.units, layer.kernel.shape[0]))
    assign(layer.kernel, w.T, f"{key}.weight")
    if layer.bias is not None:
        b = reader.take(f"{key}.bias", (layer.units,))
        # Our styles add 1 at run time; the PyTorch affine bias holds it (bias_init=1).
        assign(layer.bias, b - 1.0 if affine else b, f"{key}.bias")


def _load_conv(reader, key, layer, flip=False):
    k, _, i, o = layer.kernel.shape
    w = reader.take(f"{key}.weight", (o, i, k, k))
    assign(layer.kernel, _conv(w, flip), f"{key}.weight")
    if layer.bias is not None:
        assign(layer.bias, reader.take(f"{key}.bias", (o,)), f"{key}.bias")


def _load_mapping(reader, prefix, mapping):
    if mapping.embed is not None:
        _load_dense(reader, f"{prefix}embed", mapping.embed)
    for i, fc in enumerate(mapping.fcs):
        _load_dense(reader, f"{prefix}fc{i}", fc)


def _mapping_config(reader, prefix, who):
    num_layers = _count_layers(reader, prefix)
    if num_layers == 0:
        raise ValueError(f"{who}: no '{prefix}fc0.weight' in the state dict.")
    w_dim = reader.shape(f"{prefix}fc{num_layers - 1}.weight")[0]
    in_features = reader.shape(f"{prefix}fc0.weight")[1]
    c_dim = embed = 0
    if reader.has(f"{prefix}embed.weight"):
        embed, c_dim = reader.shape(f"{prefix}embed.weight")
    if num_layers > 1 and reader.shape(f"{prefix}fc0.weight")[0] != w_dim:
        raise ValueError(f"{who}: mapping hidden width differs from w_dim; unsupported.")
    if c_dim and embed != w_dim:
        raise ValueError(f"{who}: label embedding width {embed} differs from w_dim {w_dim}; "
                         "unsupported.")
    return dict(num_layers=num_layers, w_dim=int(w_dim), z_dim=int(in_features - embed),
                c_dim=int(c_dim))


def _modulated(reader, key, synthesis_layer_conv, flip):
    """Kernel and affine of one modulated conv (SynthesisLayer / ToRGBLayer)."""
    conv = synthesis_layer_conv
    k, _, i, o = conv.kernel.shape
    w = reader.take(f"{key}.weight", (o, i, k, k))
    assign(conv.kernel, _conv(w, flip), f"{key}.weight")
    _load_dense(reader, f"{key}.affine", conv.affine, affine=True)


def _convert_generator(reader, prefix, overrides):
    from networks import stylegan2
    who = "stylegan2-ada-pytorch G"
    m = _mapping_config(reader, f"{prefix}mapping.", who)
    resolutions = _resolutions(reader, f"{prefix}synthesis.b", "conv1.weight")
    if not resolutions or resolutions[0] != 4:
        raise ValueError(f"{who}: no synthesis blocks ('{prefix}synthesis.b4.conv1.weight').")
    resolution = resolutions[-1]
    channels = {r: int(reader.shape(f"{prefix}synthesis.b{r}.conv1.weight")[0])
                for r in resolutions}
    img_channels = int(reader.shape(f"{prefix}synthesis.b{resolution}.torgb.weight")[0])
    if resolution > 4 and reader.has(f"{prefix}synthesis.b4.torgb.weight"):
        architecture = "skip"
    elif resolution > 4 and reader.has(f"{prefix}synthesis.b8.skip.weight"):
        architecture = "resnet"
    else:
        architecture = "orig"
    fmap_base, fmap_max = _solve_fmap(channels, who)
    config = dict(z_dim=m["z_dim"], c_dim=m["c_dim"], w_dim=m["w_dim"], resolution=resolution,
                  img_channels=img_channels, mapping_layers=m["num_layers"], fmap_base=fmap_base,
                  fmap_max=fmap_max, architecture=architecture)
    config.update(overrides)
    G = stylegan2.Generator(**config)

    _load_mapping(reader, f"{prefix}mapping.", G.mapping)
    if reader.has(f"{prefix}mapping.w_avg"):
        assign(G.dlatent_avg, reader.take(f"{prefix}mapping.w_avg", (m["w_dim"],)),
               f"{prefix}mapping.w_avg")
    for block in G.synthesis.blocks:
        key = f"{prefix}synthesis.b{block.resolution}"
        if block.conv0 is None:
            const = reader.take(f"{key}.const", (block.out_channels, 4, 4))
            assign(block.const, const.transpose(1, 2, 0), f"{key}.const")
        layers = [("conv0", block.conv0, True), ("conv1", block.conv1, False)]
        for name, layer, flip in layers:
            if layer is None:
                continue
            _modulated(reader, f"{key}.{name}", layer.conv, flip)
            assign(layer.bias, reader.take(f"{key}.{name}.bias", (layer.filters,)),
                   f"{key}.{name}.bias")
            if layer.noise is not None:
                r = block.resolution
                assign(layer.noise.strength, reader.take(f"{key}.{name}.noise_strength", ()),
                       f"{key}.{name}.noise_strength")
                if reader.has(f"{key}.{name}.noise_const"):
                    assign(layer.noise.noise_const,
                           reader.take(f"{key}.{name}.noise_const", (r, r)),
                           f"{key}.{name}.noise_const")
        if block.torgb is not None:
            _modulated(reader, f"{key}.torgb", block.torgb.conv, False)
            assign(block.torgb.bias, reader.take(f"{key}.torgb.bias", (img_channels,)),
                   f"{key}.torgb.bias")
        if block.skip is not None:
            _load_conv(reader, f"{key}.skip", block.skip, flip=True)
    _check_filters(reader, f"{prefix}synthesis.")
    return G


def _convert_discriminator(reader, prefix, overrides):
    from networks import stylegan2
    who = "stylegan2-ada-pytorch D"
    resolutions = _resolutions(reader, f"{prefix}b", "conv0.weight")
    if not reader.has(f"{prefix}b4.conv.weight"):
        raise ValueError(f"{who}: missing key '{prefix}b4.conv.weight'.")
    resolution = resolutions[-1] if resolutions else 4
    channels = {r: int(reader.shape(f"{prefix}b{r}.conv0.weight")[0]) for r in resolutions}
    channels[4] = int(reader.shape(f"{prefix}b4.conv.weight")[0])
    top = f"{prefix}b{resolution}.fromrgb.weight"
    img_channels = int(reader.shape(top)[1])
    if resolution > 4 and reader.has(f"{prefix}b{resolution // 2}.fromrgb.weight"):
        architecture = "skip"
    elif resolution > 4 and reader.has(f"{prefix}b{resolution}.skip.weight"):
        architecture = "resnet"
    else:
        architecture = "orig"
    mbstd_num_features = int(reader.shape(f"{prefix}b4.conv.weight")[1]) - channels[4]
    c_dim, cmap_dim, mapping_layers = 0, None, 8
    if reader.has(f"{prefix}mapping.fc0.weight"):
        m = _mapping_config(reader, f"{prefix}mapping.", who)
        c_dim, cmap_dim, mapping_layers = m["c_dim"], m["w_dim"], m["num_layers"]
    fmap_base, fmap_max = _solve_fmap(channels, who)
    config = dict(resolution=resolution, img_channels=img_channels, c_dim=c_dim,
                  architecture=architecture, fmap_base=fmap_base, fmap_max=fmap_max,
                  mbstd_num_features=mbstd_num_features, cmap_dim=cmap_dim,
                  mapping_layers=mapping_layers)
    config.update(overrides)
    D = stylegan2.Discriminator(**config)

    for block in D.blocks:
        key = f"{prefix}b{block.resolution}"
        for name in ("fromrgb", "conv0", "conv1", "skip"):
            layer = getattr(block, name)
            if layer is not None:
                _load_conv(reader, f"{key}.{name}", layer)
    epi = D.b4
    if epi.fromrgb is not None:
        _load_conv(reader, f"{prefix}b4.fromrgb", epi.fromrgb)
    _load_conv(reader, f"{prefix}b4.conv", epi.conv)
    c = epi.in_channels
    fc_w = reader.take(f"{prefix}b4.fc.weight", (c, c * 16))
    # PyTorch flattens NCHW (c, h, w); ours flattens NHWC (h, w, c): permute the rows.
    fc_w = fc_w.T.reshape(c, 4, 4, c).transpose(1, 2, 0, 3).reshape(16 * c, c)
    assign(epi.fc.kernel, fc_w, f"{prefix}b4.fc.weight")
    assign(epi.fc.bias, reader.take(f"{prefix}b4.fc.bias", (c,)), f"{prefix}b4.fc.bias")
    _load_dense(reader, f"{prefix}b4.out", epi.out)
    if D.mapping is not None:
        _load_mapping(reader, f"{prefix}mapping.", D.mapping)
    _check_filters(reader, prefix)
    return D


Converted = collections.namedtuple("Converted", ["G", "D"])

_G_PREFIXES = ("G_ema.", "G.")
_D_PREFIXES = ("D.",)


def _split_prefixed(state):
    """{'G': {...}, 'D': {...}} from prefixed keys, or None if no key is prefixed."""
    parts = {"G": {}, "D": {}}
    prefixed = False
    for key, value in state.items():
        for net, prefixes in (("G", _G_PREFIXES), ("D", _D_PREFIXES)):
            match = next((p for p in prefixes if key.startswith(p)), None)
            if match:
                parts[net].setdefault(match, {})[key[len(match):]] = value
                prefixed = True
                break
        else:
            parts.setdefault("other", []).append(key)
    if not prefixed:
        return None
    if parts.get("other"):
        raise ValueError("stylegan2-ada-pytorch: keys without a 'G.', 'G_ema.' or 'D.' prefix in a "
                         f"prefixed state dict: {parts['other'][:5]}")
    g = parts["G"]
    if len(g) > 1:  # both G. and G_ema.: the EMA generator is the one to use (official Gs)
        g = {"G_ema.": g["G_ema."]}
    return {"G": next(iter(g.values()), None), "D": next(iter(parts["D"].values()), None)}


def from_stylegan2_ada_pytorch(state, generator_overrides=None, discriminator_overrides=None):
    """Our StyleGAN2 G and/or D with the weights of a stylegan2-ada-pytorch state dict.

    Args:
      state: mapping name -> numpy array: the `state_dict()` of the official Generator or
        Discriminator (unprefixed; G is recognised by its 'synthesis.' keys), or both with
        prefixes 'G.' or 'G_ema.' and 'D.' (G_ema is taken when both G and G_ema are given).
      generator_overrides, discriminator_overrides: constructor arguments that the state dict
        cannot tell, e.g. conv_clamp=256 (stylegan2-ada-pytorch mixed-precision models),
        mapping_lrmul, mbstd_group_size (default 4), fq_blocks, progressive.

    Returns:
      Converted(G, D), either None when absent. G is called as
      `G(z, labels=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const")` ->
      float32 NHWC images in [-1, 1]; D as `D(images_nhwc, labels=None)` -> logits (N, 1).

    Raises:
      ValueError naming the key on a missing key, a wrong shape, an unexpected key or an
      unsupported variant. Nothing is returned half-converted.

    Conversion (reference "Official weights in stylegan2-ada-pytorch naming"): conv OIHW ->
    HWIO, up-sampling kernels (synthesis conv0) flipped spatially, dense / affine transposed,
    affine biases - 1, D's fc rows permuted from NCHW to NHWC flattening, const CHW -> HWC.
    """
    parts = _split_prefixed(state)
    if parts is None:
        if any(k.startswith("synthesis.") for k in state):
            parts = {"G": state, "D": None}
        elif any(k.startswith("b4.") for k in state):
            parts = {"G": None, "D": state}
        else:
            raise ValueError("stylegan2-ada-pytorch: the state dict has neither generator "
                             "('synthesis.*') nor discriminator ('b4.*') keys.")
    G = D = None
    if parts["G"]:
        reader = StateReader(parts["G"], "stylegan2-ada-pytorch G")
        G = _convert_generator(reader, "", dict(generator_overrides or {}))
        reader.check_all_used()
    if parts["D"]:
        reader = StateReader(parts["D"], "stylegan2-ada-pytorch D")
        D = _convert_discriminator(reader, "", dict(discriminator_overrides or {}))
        reader.check_all_used()
    if G is None and D is None:
        raise ValueError("stylegan2-ada-pytorch: empty state dict.")
    return Converted(G, D)


IMPORTERS = {"stylegan2-ada-pytorch": from_stylegan2_ada_pytorch}

#----------------------------------------------------------------------------
# Reading weight files; our checkpoint format.


def read_state(path):
    """Flat name -> numpy array from a `.npz`, or a `.pt`/`.pth` state dict (needs torch)."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    if path.endswith((".pt", ".pth")):
        try:
            import torch  # optional; never needed for .npz
        except ImportError as e:
            raise ValueError(f"Reading {path} needs PyTorch, which is not installed; dump a .npz "
                             "instead (see README: Importing official StyleGAN2 weights).") from e
        obj = torch.load(path, map_location="cpu", weights_only=True)
        flat = {}

        def visit(prefix, value):
            if isinstance(value, dict):
                for k, v in value.items():
                    visit(f"{prefix}{k}.", v)
            elif hasattr(value, "detach"):
                flat[prefix[:-1]] = value.detach().cpu().numpy()
        visit("", obj)
        return flat
    raise ValueError(f"Unsupported weight file {path!r}: expected .npz (or .pt/.pth with torch).")


def save_networks(directory, **networks):
    """Writes `networks.json` and a tf.train.Checkpoint of the networks (e.g. G=..., D=...)."""
    if not networks:
        raise ValueError("save_networks: give at least one network, e.g. G=G.")
    if os.path.exists(os.path.join(directory, "networks.json")):
        raise ValueError(f"save_networks: {directory} already holds networks; choose a new "
                         "directory (converted networks are never overwritten).")
    os.makedirs(directory, exist_ok=True)
    # The build config (input shapes) lets load_networks create the variables of networks whose
    # build needs shapes not in their config (e.g. a U-GAT-IT generator's input channels).
    spec = {name: {"class": f"{type(net).__module__}.{type(net).__name__}",
                   "config": _jsonable(net.get_config()),
                   "build_config": _jsonable(net.get_build_config())}
            for name, net in networks.items()}
    path = tf.train.Checkpoint(**networks).write(os.path.join(directory, "ckpt"))
    spec_path = os.path.join(directory, "networks.json")
    with open(spec_path + ".tmp", "w") as f:
        json.dump({"checkpoint": os.path.basename(path), "networks": spec}, f, indent=1)
    os.replace(spec_path + ".tmp", spec_path)  # the spec appears only once the weights exist
    return directory


def load_networks(directory):
    """Rebuilds the networks of `save_networks` and restores their weights; dict name -> net."""
    with open(os.path.join(directory, "networks.json")) as f:
        spec = json.load(f)
    networks = {}
    for name, entry in spec["networks"].items():
        module_name, class_name = entry["class"].rsplit(".", 1)
        cls = getattr(importlib.import_module(module_name), class_name)
        config = {k: v for k, v in entry["config"].items()
                  if k not in ("name", "trainable", "dtype")}
        net = cls(**_from_json(config))
        if not net.built:
            # Variables must exist before the read: a checkpoint read into an unbuilt network
            # "matches" nothing yet and restores only when the network is later built.
            if entry.get("build_config"):
                net.build_from_config(entry["build_config"])
            else:
                net.build()
        networks[name] = net
    status = tf.train.Checkpoint(**networks).read(os.path.join(directory, spec["checkpoint"]))
    status.assert_existing_objects_matched().expect_partial()
    return networks


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_json(config):
    # JSON turns tuples into lists and int dict keys into strings; restore what the
    # constructors validate (FQ per-block dicts are keyed by block resolution).
    out = {}
    for k, v in config.items():
        if isinstance(v, dict) and all(str(key).isdigit() for key in v):
            v = {int(key): val for key, val in v.items()}
        elif isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out

#----------------------------------------------------------------------------
# BigGAN-PyTorch / FQ-BigGAN (networks/biggan.py).
#
# State-dict layout (BigGAN.py, layers.py, vq_layer.py of FQ-BigGAN at bc43d45): SN layers hold
# `weight` (+ `bias`) and the buffers `u0` (1, outputs) and `sv0` (1,); conv weights are OIHW,
# linear weights (out, in), embeddings (classes, dim). G: `shared.weight` (shared embedding),
# `linear`, `blocks.<i>.0` (GBlock: bn1, conv1, bn2, conv2, conv_sc; ccbn gain / bias are
# nn.Embedding tables or bias-free SNLinear with a shared embedding, plus stored_mean /
# stored_var), `blocks.<i>.1` (Attention: theta, phi, g, o, gamma), `output_layer.0` (bn: gain,
# bias, stored_mean, stored_var), `output_layer.2` (conv). D: `blocks.<i>.0` (DBlock: conv1,
# conv2, conv_sc), `blocks.<i>.1` (FQ-BigGAN Quantize: embed (C, K), cluster_size (K,),
# embed_avg (C, K)) when block i is quantised, then Attention; `linear`, `embed`.


def _biggan_block_count(reader, kind):
    count = 0
    while reader.has(f"blocks.{count}.0.conv1.weight"):
        count += 1
    if count == 0:
        raise ValueError(f"biggan-pytorch {kind}: no 'blocks.0.0.conv1.weight' in the state dict; "
                         "is this a BigGAN-PyTorch / FQ-BigGAN state dict?")
    return count


def _biggan_width(reader, arch_channels, kind):
    out = int(reader.shape("blocks.0.0.conv1.weight")[0])
    if out % arch_channels[0]:
        raise ValueError(f"biggan-pytorch {kind}: blocks.0.0.conv1 has {out} output channels, "
                         f"not a multiple of {arch_channels[0]} (ch x the first block's "
                         "multiplier); unsupported architecture.")
    return out // arch_channels[0]


def _biggan_base_preset(resolution, num_classes):
    """The official preset closest to the weights (for what a state dict does not hold)."""
    from networks import biggan
    if resolution == 64:
        name = "imagenet64"
    else:
        name = "cifar100" if num_classes == 100 else "cifar10"
    return biggan.PRESETS[name]


def _load_biggan_sn(reader, key, layer):
    """weight (+ bias), u0, sv0 of a BigGAN-PyTorch SN layer into SNConv2D / SNDense /
    SNEmbedding (layer kind told by its kernel rank and class)."""
    kernel = layer.kernel
    if len(kernel.shape) == 4:                          # conv: OIHW -> HWIO
        k, _, i, o = kernel.shape
        value = _conv(reader.take(f"{key}.weight", (o, i, k, k)))
    elif type(layer).__name__ == "SNEmbedding":         # (classes, dim) as it is
        o, i = kernel.shape
        value = reader.take(f"{key}.weight", (o, i))
    else:                                               # linear: (out, in) -> (in, out)
        i, o = kernel.shape
        value = reader.take(f"{key}.weight", (o, i)).T
    assign(kernel, value, f"{key}.weight")
    if getattr(layer, "use_bias", False):
        assign(layer.bias, reader.take(f"{key}.bias", (o,)), f"{key}.bias")
    outputs = layer.sn_u.shape[0]
    assign(layer.sn_u, reader.take(f"{key}.u0", (1, outputs))[0], f"{key}.u0")
    assign(layer.sn_sv, reader.take(f"{key}.sv0", (1,))[0], f"{key}.sv0")


def _load_biggan_bn(reader, key, layer):
    """BigGAN-PyTorch `bn` (gain, bias vectors) or `ccbn` (tables or SN linears) + statistics."""
    from networks.normalization import ConditionalBatchNorm
    channels = layer.channels
    for name in ("stored_mean", "stored_var"):
        assign(getattr(layer, name), reader.take(f"{key}.{name}", (channels,)), f"{key}.{name}")
    if not isinstance(layer, ConditionalBatchNorm):
        for name in ("gain", "bias"):
            assign(getattr(layer, name), reader.take(f"{key}.{name}", (channels,)),
                   f"{key}.{name}")
    elif layer.num_classes is not None:
        for name in ("gain", "bias"):
            assign(getattr(layer, name),
                   reader.take(f"{key}.{name}.weight", (layer.num_classes, channels)),
                   f"{key}.{name}.weight")
    else:
        _load_biggan_sn(reader, f"{key}.gain", layer.gain)
        _load_biggan_sn(reader, f"{key}.bias", layer.bias)


def _load_biggan_attention(reader, key, layer):
    for name in ("theta", "phi", "g", "o"):
        _load_biggan_sn(reader, f"{key}.{name}", getattr(layer, name))
    assign(layer.gamma, reader.take(f"{key}.gamma", ()), f"{key}.gamma")


def _convert_biggan_generator(reader, overrides):
    from networks import biggan
    num_blocks = _biggan_block_count(reader, "G")
    resolution = {len(a["out_channels"]): r for r, a in biggan.G_ARCH.items()}.get(num_blocks)
    if resolution is None:
        raise ValueError(f"biggan-pytorch G: {num_blocks} blocks; supported are the 32x32 "
                         "(3 blocks) and 64x64 (4 blocks) architectures.")
    arch = biggan.G_ARCH[resolution]
    ch = _biggan_width(reader, arch["out_channels"], "G")
    linear_in = int(reader.shape("linear.weight")[1])
    if reader.has("shared.weight"):
        # Bias-free SNLinear(shared_dim + z chunk -> C) gains: weight (C, condition).
        condition = int(reader.shape("blocks.0.0.bn1.gain.weight")[1])
        num_classes, shared_dim = (int(s) for s in reader.shape("shared.weight"))
        chunk = condition - shared_dim
        hier = chunk > 0
        if hier and chunk != linear_in:
            raise ValueError(f"biggan-pytorch G: hierarchical z chunks of {chunk} (from "
                             f"blocks.0.0.bn1.gain.weight) but linear.weight takes {linear_in} "
                             "inputs; unsupported layout.")
        dim_z = chunk * (num_blocks + 1) if hier else linear_in
    else:
        # Without a shared embedding the ccbn gains are nn.Embedding(classes, C) tables.
        num_classes = int(reader.shape("blocks.0.0.bn1.gain.weight")[0])
        shared_dim, hier, dim_z = 0, False, linear_in
    attention = [arch["resolution"][i] for i in range(num_blocks)
                 if reader.has(f"blocks.{i}.1.gamma")]
    base = _biggan_base_preset(resolution, num_classes)
    config = dict(resolution=resolution, num_classes=num_classes, ch=ch, dim_z=dim_z,
                  shared_dim=shared_dim, hier=hier, attention=attention, init=base["init"],
                  sn_epsilon=base["sn_epsilon"])
    config.update(overrides)
    G = biggan.BigGANGenerator(**config)
    G.build()

    if G.shared is not None:
        assign(G.shared.embeddings, reader.take("shared.weight", (num_classes, shared_dim)),
               "shared.weight")
    _load_biggan_sn(reader, "linear", G.linear)
    for index, block in enumerate(G.blocks):
        key = f"blocks.{index}.0"
        _load_biggan_bn(reader, f"{key}.bn1", block.bn1)
        _load_biggan_bn(reader, f"{key}.bn2", block.bn2)
        for name in ("conv1", "conv2", "conv_sc"):
            _load_biggan_sn(reader, f"{key}.{name}", getattr(block, name))
        if index in G.attentions:
            _load_biggan_attention(reader, f"blocks.{index}.1", G.attentions[index])
    _load_biggan_bn(reader, "output_layer.0", G.output_bn)
    _load_biggan_sn(reader, "output_layer.2", G.output_conv)
    return G


def _convert_biggan_discriminator(reader, overrides):
    from networks import biggan
    num_blocks = _biggan_block_count(reader, "D")
    resolution = {len(a["out_channels"]): r for r, a in biggan.D_ARCH.items()}.get(num_blocks)
    if resolution is None:
        raise ValueError(f"biggan-pytorch D: {num_blocks} blocks; supported are the 32x32 "
                         "(4 blocks) and 64x64 (5 blocks) architectures.")
    arch = biggan.D_ARCH[resolution]
    ch = _biggan_width(reader, arch["out_channels"], "D")
    num_classes = int(reader.shape("embed.weight")[0])
    fq_layers = [i for i in range(num_blocks) if reader.has(f"blocks.{i}.1.embed")]
    attention = sorted({arch["resolution"][i] for i in range(num_blocks)
                        if reader.has(f"blocks.{i}.{2 if i in fq_layers else 1}.gamma")})
    base = _biggan_base_preset(resolution, num_classes)
    # Commitment and decay are hyper-parameters, not state: the matching official preset's
    # unless overridden (discriminator_overrides={"fq_kwargs": {...}}).
    sizes = [int(reader.shape(f"blocks.{i}.1.embed")[1]) for i in fq_layers]
    fq_kwargs = {k: v for k, v in base["fq"].items() if k != "layers"}
    fq_kwargs["num_embeddings"] = sizes[0] if len(set(sizes)) == 1 else sizes
    overrides = dict(overrides)
    fq_kwargs.update(overrides.pop("fq_kwargs", {}))
    config = dict(resolution=resolution, num_classes=num_classes, ch=ch, attention=attention,
                  init=base["init"], sn_epsilon=base["sn_epsilon"], fq_layers=fq_layers,
                  fq_kwargs=fq_kwargs if fq_layers else None)
    config.update(overrides)
    D = biggan.BigGANDiscriminator(**config)
    D.build()

    for index, block in enumerate(D.blocks):
        key = f"blocks.{index}"
        for name in ("conv1", "conv2", "conv_sc"):
            layer = getattr(block, name, None)
            if layer is not None:
                _load_biggan_sn(reader, f"{key}.0.{name}", layer)
        after = 1
        if index in D.fq_by_block:
            fq = D.fq_by_block[index]
            K, C = fq.embeddings.shape
            embed = reader.take(f"{key}.1.embed", (C, K))
            assign(fq.embeddings, embed.T, f"{key}.1.embed")
            assign(fq.ema_cluster_size, reader.take(f"{key}.1.cluster_size", (K,)),
                   f"{key}.1.cluster_size")
            assign(fq.ema_embedding_sums, reader.take(f"{key}.1.embed_avg", (C, K)).T,
                   f"{key}.1.embed_avg")
            after = 2
        if index in D.attentions:
            _load_biggan_attention(reader, f"{key}.{after}", D.attentions[index])
    _load_biggan_sn(reader, "linear", D.linear)
    _load_biggan_sn(reader, "embed", D.embed)
    return D


def from_biggan_pytorch(g_state=None, d_state=None, generator_overrides=None,
                        discriminator_overrides=None):
    """Our BigGAN G and/or D with the weights and buffers of BigGAN-PyTorch / FQ-BigGAN.

    Args:
      g_state: the `state_dict()` of the official Generator (G.pth or G_ema.pth) as a mapping
        name -> numpy array, or None.
      d_state: the official (FQ-)Discriminator's `state_dict()` (D.pth), or None.
      generator_overrides, discriminator_overrides: constructor arguments the state dict cannot
        tell (defaults: the official preset of the inferred resolution and class count):
        sn_epsilon (1e-8 CIFAR, 1e-6 ImageNet), bn_epsilon, cross_replica; for D also
        fq_kwargs (commitment_cost, decay, forward; CIFAR-10 1.0 / 0.8, CIFAR-100 10.0 / 0.9,
        ImageNet 0.5 / 0.7).

    Returns:
      Converted(G, D), either None when its state is None. G is called as
      `G(z, labels, training)` with integer class labels; D as
      `D(images_nhwc, labels, training, return_fq)`.

    Raises:
      ValueError naming the key on a missing key, a wrong shape, an unexpected key (e.g. a
      second SN vector `u1`, or an unsupported variant) or an architecture that does not exist
      here. Nothing is returned half-converted.

    Architecture inference: resolution from the block count, ch from block 0's width, classes
    from the class tables, shared embedding / hierarchical z from `shared.weight` and the
    conditional-BN input width, attention from `gamma` keys, FQ layers and dictionary sizes
    from `embed` buffers. Conversion: conv OIHW -> HWIO, linear weights transposed (G's first
    linear keeps PyTorch's (C, 4, 4) output order, networks/biggan.py), SN u0 (1, O) -> sn_u,
    sv0 -> sn_sv, BN stored_mean / stored_var as they are, FQ embed (C, K) and embed_avg
    (C, K) transposed to our (K, C), cluster_size as it is.
    """
    if g_state is None and d_state is None:
        raise ValueError("from_biggan_pytorch: give g_state, d_state or both.")
    G = D = None
    if g_state is not None:
        reader = StateReader(g_state, "biggan-pytorch G")
        G = _convert_biggan_generator(reader, dict(generator_overrides or {}))
        reader.check_all_used()
    if d_state is not None:
        reader = StateReader(d_state, "biggan-pytorch D")
        D = _convert_biggan_discriminator(reader, dict(discriminator_overrides or {}))
        reader.check_all_used()
    return Converted(G, D)


def _from_biggan_pytorch_file(state, generator_overrides=None, discriminator_overrides=None):
    """run_convert.py form: one mapping with 'G.' (or 'G_ema.', preferred) and 'D.' prefixes,
    or an unprefixed single network (G recognised by its 'output_layer.' keys)."""
    parts = {"G": {}, "G_ema": {}, "D": {}}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head not in parts or not rest:
            parts = None
            break
        parts[head][rest] = value
    if parts is None:
        if any(k.startswith("output_layer.") for k in state):
            parts = {"G": state, "G_ema": {}, "D": {}}
        else:
            parts = {"G": {}, "G_ema": {}, "D": state}
    return from_biggan_pytorch(parts["G_ema"] or parts["G"] or None, parts["D"] or None,
                               generator_overrides, discriminator_overrides)


IMPORTERS["biggan-pytorch"] = _from_biggan_pytorch_file

#----------------------------------------------------------------------------
# UGATIT-pytorch (znxlwm/UGATIT-pytorch; networks/ugatit.py).
#
# The official checkpoint (`torch.save({'genA2B': G.state_dict(), ..., 'disLB': ...})`) holds one
# state dict per network. ResnetGenerator: `DownBlock.1` (7x7 conv), `DownBlock.5`, `DownBlock.9`
# (stride-2 convs), `DownBlock.<12+i>.conv_block.{1,5}` (ResnetBlocks), `gap_fc`, `gmp_fc`,
# `conv1x1` (+ bias), `FC.0`, `FC.2`, `gamma`, `beta`, `UpBlock1_<i+1>.{conv1,norm1,conv2,norm2}`
# (adaILN: rho (1, C, 1, 1)), `UpBlock2.{2,7}` (up convs) with ILN `UpBlock2.{3,8}` (rho, gamma,
# beta, each (1, C, 1, 1)), `UpBlock2.11` (output conv); no conv biases besides conv1x1, no
# InstanceNorm parameters. Discriminator: `model.<1+3i>` (spectral-norm convs: weight_orig, bias,
# weight_u (O,), weight_v (I*k*k,)), `gap_fc`, `gmp_fc` (SN, no bias), `conv1x1` (plain, bias),
# `conv` (SN output conv, no bias).

UGATIT_NETWORKS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def _ugatit_channels(reader, key, layer, names):
    """ILN / adaILN parameters (1, C, 1, 1) -> (C,)."""
    for name in names:
        variable = getattr(layer, name)
        c = variable.shape[0]
        assign(variable, reader.take(f"{key}.{name}", (1, c, 1, 1)).reshape(c), f"{key}.{name}")


def _ugatit_spectral(reader, key, layer):
    """torch spectral_norm state: weight_orig (O, I[, k, k]), weight_u (O,), weight_v (I k k,)."""
    if len(layer.kernel.shape) == 4:
        k, _, i, o = layer.kernel.shape
        w = reader.take(f"{key}.weight_orig", (o, i, k, k))
        assign(layer.kernel, _conv(w), f"{key}.weight_orig")
        fan_in = i * k * k
    else:
        i, o = layer.kernel.shape
        assign(layer.kernel, reader.take(f"{key}.weight_orig", (o, i)).T, f"{key}.weight_orig")
        fan_in = i
    assign(layer.sn_u, reader.take(f"{key}.weight_u", (o,)), f"{key}.weight_u")
    assign(layer.sn_v, reader.take(f"{key}.weight_v", (fan_in,)), f"{key}.weight_v")
    if getattr(layer, "bias", None) is not None:
        assign(layer.bias, reader.take(f"{key}.bias", (o,)), f"{key}.bias")


def _convert_ugatit_generator(reader, name, img_size):
    from networks import ugatit
    who = reader.source
    ngf, in_channels = (int(s) for s in reader.shape("DownBlock.1.weight")[:2])
    n_blocks = 0
    while reader.has(f"UpBlock1_{n_blocks + 1}.conv1.weight"):
        n_blocks += 1
    channels = 4 * ngf
    mlp_in = int(reader.shape("FC.0.weight")[1])
    light = mlp_in == channels
    if not light:
        side = int(round((mlp_in / channels) ** 0.5))
        if side * side * channels != mlp_in:
            raise ValueError(f"{who}: 'FC.0.weight' has {mlp_in} inputs, neither light mode "
                             f"({channels}) nor full mode ((img_size / 4)^2 * {channels}).")
        img_size = 4 * side
    output_channels = int(reader.shape("UpBlock2.11.weight")[0])
    G = ugatit.UGATITGenerator(ngf=ngf, n_blocks=n_blocks, light=light, img_size=img_size,
                               output_channels=output_channels, name=name)
    G.build((None, None, None, in_channels) if light else (None, img_size, img_size, in_channels))

    _load_conv(reader, "DownBlock.1", G.conv_in)
    for i, conv in enumerate(G.down_convs):
        _load_conv(reader, f"DownBlock.{5 + 4 * i}", conv)
    for i, block in enumerate(G.down_blocks):
        _load_conv(reader, f"DownBlock.{12 + i}.conv_block.1", block.conv1)
        _load_conv(reader, f"DownBlock.{12 + i}.conv_block.5", block.conv2)
    _load_dense(reader, "gap_fc", G.gap_fc)
    _load_dense(reader, "gmp_fc", G.gmp_fc)
    _load_conv(reader, "conv1x1", G.conv1x1)
    # Full mode: our generator flattens in NCHW order, so FC.0 imports as a plain transpose.
    _load_dense(reader, "FC.0", G.fc[0])
    _load_dense(reader, "FC.2", G.fc[1])
    _load_dense(reader, "gamma", G.gamma)
    _load_dense(reader, "beta", G.beta)
    for i, block in enumerate(G.up_blocks):
        key = f"UpBlock1_{i + 1}"
        _load_conv(reader, f"{key}.conv1", block.conv1)
        _ugatit_channels(reader, f"{key}.norm1", block.norm1, ("rho",))
        _load_conv(reader, f"{key}.conv2", block.conv2)
        _ugatit_channels(reader, f"{key}.norm2", block.norm2, ("rho",))
    for i, (conv, norm) in enumerate(zip(G.up_convs, G.up_norms)):
        _load_conv(reader, f"UpBlock2.{2 + 5 * i}", conv)
        _ugatit_channels(reader, f"UpBlock2.{3 + 5 * i}", norm, ("rho", "gamma", "beta"))
    _load_conv(reader, "UpBlock2.11", G.conv_out)
    return G


def _convert_ugatit_discriminator(reader, name, fq_layers, fq_kwargs):
    from networks import ugatit
    num_convs = 0
    while reader.has(f"model.{1 + 3 * num_convs}.weight_orig"):
        num_convs += 1
    if num_convs < 2:
        raise ValueError(f"{reader.source}: no discriminator convs ('model.1.weight_orig', "
                         "'model.4.weight_orig', ...).")
    ndf, in_channels = (int(s) for s in reader.shape("model.1.weight_orig")[:2])
    D = ugatit.UGATITDiscriminator(ndf=ndf, n_layers=num_convs + 1, fq_layers=fq_layers,
                                   fq_kwargs=fq_kwargs, name=name)
    D.build((None, None, None, in_channels))
    for i, conv in enumerate(D.convs):
        _ugatit_spectral(reader, f"model.{1 + 3 * i}", conv)
    _ugatit_spectral(reader, "gap_fc", D.gap_fc)
    _ugatit_spectral(reader, "gmp_fc", D.gmp_fc)
    _load_conv(reader, "conv1x1", D.conv1x1)
    _ugatit_spectral(reader, "conv", D.conv_out)
    return D


def _split_ugatit(state):
    """{network: state dict} from the checkpoint's nested dicts or 'genA2B.'-prefixed keys."""
    parts = {}
    for key, value in state.items():
        if isinstance(value, dict):
            network, rest = key, None
        else:
            network, _, rest = str(key).partition(".")
        if network not in UGATIT_NETWORKS or rest == "":
            raise ValueError(f"UGATIT-pytorch: key '{key}' belongs to none of the networks "
                             f"{', '.join(UGATIT_NETWORKS)} (expected the official checkpoint "
                             "{'genA2B': state_dict, ...} or keys like "
                             "'genA2B.DownBlock.1.weight').")
        if rest is None:
            parts.setdefault(network, {}).update(value)
        else:
            parts.setdefault(network, {})[rest] = value
    if not parts:
        raise ValueError("UGATIT-pytorch: empty state dict.")
    return parts


def from_ugatit_pytorch(state, img_size=256, fq=None, fq_layers=None, fq_kwargs=None):
    """Our U-GAT-IT networks with the weights of an official UGATIT-pytorch checkpoint.

    Args:
      state: the checkpoint's state dicts: {"genA2B": {name: array}, "genB2A": ..., "disGA":
        ..., "disGB": ..., "disLA": ..., "disLB": ...}, or one flat mapping with keys
        "genA2B.DownBlock.1.weight", ... (what `read_state` makes of the .pt file). Any
        non-empty subset of the six networks.
      img_size: light-mode generators: the size they were trained at (the weights do not tell;
        official 256). Full mode reads it from 'FC.0.weight'.
      fq, fq_layers, fq_kwargs: FQ for the global discriminators (disGA, disGB), as
        `networks.ugatit.make_ugatit` (preset "official" / "paper", placement, arguments); fresh
        dictionaries, since the official checkpoint has none. Default: no FQ.

    Returns:
      dict network name -> network: generators (UGATITGenerator) are called on NHWC images in
      [-1, 1] and return (image, cam_logit, heatmap); discriminators (UGATITDiscriminator)
      return (output, cam_logit, heatmap). Architecture (ngf, n_blocks, light / full, n_layers,
      ndf) is inferred from the shapes.

    Raises:
      ValueError naming the key on a missing key, a wrong shape, an unexpected key or a key of
      no known network. Nothing is returned half-converted.

    Conversion: conv weight OIHW -> HWIO, linear weight transposed, rho / ILN gamma / beta
    (1, C, 1, 1) -> (C,); spectral norm keeps weight_orig as the kernel and weight_u, weight_v
    as the stored vectors in PyTorch's ordering (W_mat = kernel.transpose(3, 2, 0, 1) reshaped
    to (O, -1)).
    """
    from networks import ugatit
    layers, kwargs = ugatit.fq_preset(fq) if fq is not None else ((), {})
    layers = layers if fq_layers is None else tuple(fq_layers)
    kwargs = kwargs if fq_kwargs is None else dict(fq_kwargs)
    nets = {}
    for name, part in _split_ugatit(state).items():
        reader = StateReader(part, f"UGATIT-pytorch {name}")
        if name.startswith("gen"):
            nets[name] = _convert_ugatit_generator(reader, name, img_size)
        elif name in ("disGA", "disGB"):
            nets[name] = _convert_ugatit_discriminator(reader, name, layers, kwargs)
        else:
            nets[name] = _convert_ugatit_discriminator(reader, name, (), {})
        reader.check_all_used()
    return {name: nets[name] for name in UGATIT_NETWORKS if name in nets}


UGATITConverted = collections.namedtuple("UGATITConverted", UGATIT_NETWORKS,
                                         defaults=(None,) * len(UGATIT_NETWORKS))


def _from_ugatit_pytorch_file(state, generator_overrides=None, discriminator_overrides=None):
    """run_convert.py form: generator_overrides may hold img_size, discriminator_overrides fq,
    fq_layers, fq_kwargs (for disGA / disGB)."""
    g = dict(generator_overrides or {})
    d = dict(discriminator_overrides or {})
    unknown = sorted(set(g) - {"img_size"}) + sorted(set(d) - {"fq", "fq_layers", "fq_kwargs"})
    if unknown:
        raise ValueError(f"UGATIT-pytorch: {', '.join(unknown)} does not apply to U-GAT-IT "
                         "weights.")
    return UGATITConverted(**from_ugatit_pytorch(state, **g, **d))


IMPORTERS["ugatit-pytorch"] = _from_ugatit_pytorch_file
