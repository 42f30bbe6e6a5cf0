"""StyleGAN2 (Karras et al., CVPR 2020): mapping, synthesis (skip / resnet / orig) and
discriminator (resnet / skip / orig), NHWC, with FQ blocks and optional progressive growing.

Structure and parameter names follow stylegan2-ada-pytorch `training/networks.py` (so that
`networks.convert` maps its state dict one to one): `G.mapping.fc{i}`, `G.mapping.embed`,
`G.synthesis.b{R}.{const, conv0, conv1, torgb, skip}`, `D.b{R}.{fromrgb, conv0, conv1, skip}`,
`D.b4.{fromrgb, conv, fc, out}`, `D.mapping`. Behaviour per `../shared/reference/stylegan.md`.
Differences from the PyTorch code, all exact reparametrisations: NHWC / HWIO layouts, the
affine (style) bias is stored around 0 with 1 added at run time (TF convention), and up-sampling
kernels are stored spatially flipped (TF `upsample_conv_2d` convention); the converter handles
all three.

Channels: a layer at resolution R has nf(log2 R - 1) = clip(int(fmap_base / (R / 2)),
fmap_min, fmap_max) channels (official TF formula; stylegan2-ada-pytorch writes
channel_base = 2 * fmap_base). config-e: fmap_base 8192; config-f: 16384.
"""

import math

import keras
import tensorflow as tf

from fq_keras.style_quantization import StyleQuantization
from networks import layers as L
from networks.stylegan import StyleGenerator

ARCHITECTURES = ("orig", "skip", "resnet")
RESAMPLE_KERNEL = (1, 3, 3, 1)
PRESETS = {
    # fmap_base of the official TF configs (Table 1 of the paper). Gamma (R1) is a trainer
    # setting: config-e 100 (FFHQ; also the FQ-StyleGAN2 run), config-f 10.
    "config-e": {"fmap_base": 8192, "fmap_max": 512},
    "config-f": {"fmap_base": 16384, "fmap_max": 512},
}
# Official FQ-StyleGAN2 (FFHQ, config-e, `--discrete_layer 45 --decay 0.8 --commitment_cost 0.25`).
# fq_num_embeddings None = the official K per block (`official_num_embeddings`).
FQ_DEFAULTS = {"fq_blocks": (16, 32), "fq_num_embeddings": None, "fq_decay": 0.8,
               "fq_commitment_cost": 0.25}


def official_num_embeddings(block):
    """Dictionary size K of the official FQ-StyleGAN2 after block `block` (input resolution):
    64 for blocks >= 128, 128 below (`res_dictsz_mapping` of D_stylegan2_quant in FQ-GAN's
    FQ-StyleGAN/training/networks_stylegan2.py, keyed by log2 of the block resolution)."""
    return 64 if block >= 128 else 128


def channels_per_resolution(resolution, fmap_base=16384, fmap_max=512, fmap_min=1):
    """{R: channels} for R = 4 .. resolution (official nf(log2 R - 1))."""
    log2 = L.check_resolution(resolution)
    return {2 ** r: L.num_features(r - 1, fmap_base, 1.0, fmap_min, fmap_max)
            for r in range(2, log2 + 1)}




#----------------------------------------------------------------------------
# Mapping network.


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class MappingNetwork(keras.layers.Layer):
    """z (and labels) -> w; stylegan2-ada-pytorch `MappingNetwork`, always float32.

        x = normalize_2nd_moment(z);  y = normalize_2nd_moment(embed(c));  x = concat(x, y)
        x = fc_{num_layers-1}(... fc_0(x))      each: equalized LR, lrmul, lrelu * sqrt(2)

    Args:
      z_dim: latent size (0 = none, as the discriminator's label mapping).
      c_dim: label size (0 = unconditional).
      w_dim: output size.
      num_ws: broadcast the output to (N, num_ws, w_dim); None = return (N, w_dim).
      num_layers: fully connected layers (8).
      embed_features: label embedding size (default w_dim).
      layer_features: hidden width (default w_dim).
      lrmul: learning-rate multiplier of the fc layers (0.01); the embedding uses 1.

    Call: `mapping(z, labels=None)`.
    """

    def __init__(self, z_dim=512, c_dim=0, w_dim=512, num_ws=None, num_layers=8,
                 embed_features=None, layer_features=None, lrmul=0.01, **kwargs):
        kwargs.setdefault("autocast", False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.z_dim = L.check_int(z_dim, "MappingNetwork: z_dim", 0)
        self.c_dim = L.check_int(c_dim, "MappingNetwork: c_dim", 0)
        if self.z_dim == 0 and self.c_dim == 0:
            raise ValueError("MappingNetwork: z_dim and c_dim cannot both be 0.")
        self.w_dim = L.check_int(w_dim, "MappingNetwork: w_dim", 1)
        self.num_ws = None if num_ws is None else L.check_int(num_ws, "MappingNetwork: num_ws", 1)
        self.num_layers = L.check_int(num_layers, "MappingNetwork: num_layers", 1)
        self.embed_features = self.w_dim if embed_features is None else L.check_int(
            embed_features, "MappingNetwork: embed_features", 1)
        self.layer_features = self.w_dim if layer_features is None else L.check_int(
            layer_features, "MappingNetwork: layer_features", 1)
        self.lrmul = float(lrmul)
        if self.c_dim == 0:
            self.embed_features = 0
        self.embed = L.EqualizedDense(self.embed_features, dtype="float32", name="embed") \
            if self.c_dim else None
        features = [self.z_dim + self.embed_features] + \
            [self.layer_features] * (self.num_layers - 1) + [self.w_dim]
        self.fcs = []
        for i in range(self.num_layers):
            fc = L.EqualizedDense(features[i + 1], lrmul=self.lrmul, activation="lrelu",
                                  activation_gain=L.SQRT2, dtype="float32", name=f"fc{i}")
            setattr(self, f"fc{i}", fc)
            self.fcs.append(fc)
        self._features = features

    def build(self, z_shape=None, labels_shape=None):
        if self.embed is not None:
            self.embed.build((None, self.c_dim))
        for fc, fan_in in zip(self.fcs, self._features[:-1]):
            fc.build((None, fan_in))

    def call(self, z, labels=None):
        parts = []
        if self.z_dim:
            if z is None:
                raise ValueError("MappingNetwork: z is required (z_dim > 0).")
            parts.append(L.pixel_norm(tf.cast(z, tf.float32)))
        if self.c_dim:
            if labels is None:
                raise ValueError(f"MappingNetwork: labels (N, {self.c_dim}) are required for a "
                                 "conditional network.")
            parts.append(L.pixel_norm(self.embed(tf.cast(labels, tf.float32))))
        elif labels is not None:
            raise ValueError("MappingNetwork: labels given to an unconditional network (c_dim=0).")
        x = parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)
        for fc in self.fcs:
            x = fc(x)
        if self.num_ws is not None:
            x = tf.tile(x[:, tf.newaxis], [1, self.num_ws, 1])
        return x

    def get_config(self):
        config = super().get_config()
        config.update(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                      num_layers=self.num_layers, embed_features=self.embed_features or None,
                      layer_features=self.layer_features, lrmul=self.lrmul)
        return config

#----------------------------------------------------------------------------
# Synthesis network.


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class SynthesisLayer(keras.layers.Layer):
    """Modulated 3x3 conv (optionally 2x up) -> + noise * strength -> + bias -> lrelu * sqrt(2).

    Call: `layer(x, w, noise_mode, seed_generator, gain=1.0)`; x (N, R', R', I), w (N, w_dim).
    """

    def __init__(self, filters, resolution, up=False, kernel_size=3, use_noise=True,
                 resample_kernel=RESAMPLE_KERNEL, conv_clamp=None, fused_modconv=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.resolution = int(resolution)
        self.up = bool(up)
        self.kernel_size = int(kernel_size)
        self.use_noise = bool(use_noise)
        self.resample_kernel = tuple(resample_kernel)
        self.conv_clamp = conv_clamp
        self.fused_modconv = bool(fused_modconv)
        self.conv = L.ModulatedConv2D(filters, kernel_size, up=up, resample_kernel=resample_kernel,
                                      fused=fused_modconv, name="conv")
        self.noise = L.NoiseInput(per_channel=False, name="noise") if use_noise else None

    def build(self, x_shape, w_shape):
        self.conv.build(x_shape, w_shape)
        out_shape = (None, self.resolution, self.resolution, self.filters)
        if self.noise is not None:
            self.noise.build(out_shape)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros",
                                    dtype="float32")

    def call(self, x, w, noise_mode="random", seed_generator=None, gain=1.0):
        # lrelu(conv * d + noise + b) * g as lrelu(conv * (d g) + noise g + b g): the gain
        # scales the (N, C) coefficients, the noise strength and the bias (L.fold_gain).
        scale, gain_left = L.fold_gain("lrelu", L.SQRT2 * gain)
        x = self.conv(x, w, gain=scale)
        if self.noise is not None:
            x = self.noise(x, noise_mode=noise_mode, seed_generator=seed_generator, gain=scale)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        bias = tf.convert_to_tensor(self.bias)
        if scale != 1:
            bias = bias * scale
        return L.bias_act(x, bias, "lrelu", gain_left, clamp)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, resolution=self.resolution, up=self.up,
                      kernel_size=self.kernel_size, use_noise=self.use_noise,
                      resample_kernel=self.resample_kernel, conv_clamp=self.conv_clamp,
                      fused_modconv=self.fused_modconv)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class ToRGBLayer(keras.layers.Layer):
    """Modulated 1x1 conv without demodulation, + bias, linear; float32 output."""

    def __init__(self, img_channels, conv_clamp=None, fused_modconv=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.img_channels = int(img_channels)
        self.conv_clamp = conv_clamp
        self.fused_modconv = bool(fused_modconv)
        self.conv = L.ModulatedConv2D(img_channels, 1, demodulate=False, fused=fused_modconv,
                                      name="conv")

    def build(self, x_shape, w_shape):
        self.conv.build(x_shape, w_shape)
        self.bias = self.add_weight(name="bias", shape=(self.img_channels,), initializer="zeros",
                                    dtype="float32")

    def call(self, x, w):
        x = self.conv(x, w)
        x = L.bias_act(x, tf.convert_to_tensor(self.bias), clamp=self.conv_clamp)
        return tf.cast(x, tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(img_channels=self.img_channels, conv_clamp=self.conv_clamp,
                      fused_modconv=self.fused_modconv)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class SynthesisBlock(keras.layers.Layer):
    """One resolution of the synthesis network (stylegan2-ada-pytorch `SynthesisBlock`).

    4x4 (in_channels = 0): learned const (4, 4, C) ~ N(0, 1) -> conv1.
    R > 4: conv0 (up) -> conv1; 'resnet' adds skip = 1x1 up-conv (no bias), and the sum is
    scaled by sqrt(1/2). ToRGB in every block for 'skip' (image = upsample(image) + ToRGB(x)),
    only in the last block for 'orig' and 'resnet'.

    Call: `block(x, img, ws, noise_mode, seed_generator)` with ws (N, num_conv + num_torgb,
    w_dim) -> (x, img); img is float32 or None.
    """

    def __init__(self, in_channels, out_channels, resolution, img_channels=3, w_dim=512,
                 architecture="skip", is_last=False, resample_kernel=RESAMPLE_KERNEL,
                 conv_clamp=None, fused_modconv=False, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.resolution = int(resolution)
        self.img_channels = int(img_channels)
        self.w_dim = int(w_dim)
        self.architecture = L.check_choice(architecture, ARCHITECTURES, "architecture")
        self.is_last = bool(is_last)
        self.resample_kernel = tuple(resample_kernel)
        self.conv_clamp = conv_clamp
        self.fused_modconv = bool(fused_modconv)
        layer_kwargs = dict(resample_kernel=resample_kernel, conv_clamp=conv_clamp,
                            fused_modconv=fused_modconv)
        self.conv0 = None
        self.skip = None
        if self.in_channels:
            self.conv0 = SynthesisLayer(out_channels, resolution, up=True, name="conv0",
                                        **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, resolution, name="conv1", **layer_kwargs)
        self.torgb = ToRGBLayer(img_channels, conv_clamp, fused_modconv, name="torgb") \
            if (is_last or architecture == "skip") else None
        if self.in_channels and architecture == "resnet":
            self.skip = L.EqualizedConv2D(out_channels, 1, up=True, resample_kernel=resample_kernel,
                                          use_bias=False, name="skip")
        self.num_conv = 2 if self.in_channels else 1
        self.num_torgb = 1 if self.torgb is not None else 0

    def build(self, x_shape=None, img_shape=None, ws_shape=None):
        r = self.resolution
        w_shape = (None, self.w_dim)
        if self.in_channels:
            x_in = (None, r // 2, r // 2, self.in_channels)
            self.conv0.build(x_in, w_shape)
            if self.skip is not None:
                self.skip.build(x_in)
        else:
            self.const = self.add_weight(
                name="const", shape=(r, r, self.out_channels),
                initializer=keras.initializers.RandomNormal(stddev=1.0), dtype="float32")
        x_out = (None, r, r, self.out_channels)
        self.conv1.build(x_out, w_shape)
        if self.torgb is not None:
            self.torgb.build(x_out, w_shape)

    def call(self, x, img, ws, noise_mode="random", seed_generator=None):
        noise = dict(noise_mode=noise_mode, seed_generator=seed_generator)
        if not self.in_channels:
            batch = tf.shape(ws)[0]
            x = tf.tile(tf.cast(self.const, self.compute_dtype)[tf.newaxis], [batch, 1, 1, 1])
            x = self.conv1(x, ws[:, 0], **noise)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x, ws[:, 0], **noise)
            x = self.conv1(x, ws[:, 1], gain=math.sqrt(0.5), **noise)
            x = y + x
        else:
            x = self.conv0(x, ws[:, 0], **noise)
            x = self.conv1(x, ws[:, 1], **noise)
        if img is not None:
            img = L.upsample_2d(img, self.resample_kernel)
        if self.torgb is not None:
            y = self.torgb(x, ws[:, self.num_conv])
            img = y if img is None else img + y
        return x, img

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, out_channels=self.out_channels,
                      resolution=self.resolution, img_channels=self.img_channels,
                      w_dim=self.w_dim, architecture=self.architecture, is_last=self.is_last,
                      resample_kernel=self.resample_kernel, conv_clamp=self.conv_clamp,
                      fused_modconv=self.fused_modconv)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class SynthesisNetwork(keras.layers.Layer):
    """dlatents (N, num_ws, w_dim) -> float32 images (N, R, R, img_channels).

    Block b{R} uses dlatents [k, k + num_conv + num_torgb) where k counts the convolutions of
    the blocks before it, so a ToRGB shares its w with the next block's conv0 (official).
    num_ws = 2 log2(R) - 2.

    Progressive growing (progressive=True, architecture 'skip' only): `resolution` (static
    Python int) selects the stage: only blocks up to it run, and the output is that
    resolution. `lod` (tensor; log2(R) - log2(stage) <= lod <= that + 1) fades the last block
    in: image = upsample(image_{stage/2}) + (1 - t) * ToRGB_stage(x), t = clip(lod - (log2 R -
    log2 stage), 0, 1). At t = 0 this is the stage's fixed network; at t = 1 it is the previous
    stage's output, FIR-upsampled.

    Call: `synthesis(dlatents, noise_mode="random", lod=None, resolution=None)`.
    Random noise comes from `self.seed_generator` (seeded with `noise_seed`).
    """

    def __init__(self, w_dim=512, resolution=1024, img_channels=3, fmap_base=16384,
                 fmap_max=512, fmap_min=1, architecture="skip", resample_kernel=RESAMPLE_KERNEL,
                 conv_clamp=None, fused_modconv=False, progressive=False, noise_seed=None,
                 **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.log2_resolution = L.check_resolution(resolution)
        self.w_dim = L.check_int(w_dim, "SynthesisNetwork: w_dim", 1)
        self.resolution = int(resolution)
        self.img_channels = L.check_int(img_channels, "SynthesisNetwork: img_channels", 1)
        self.fmap_base, self.fmap_max, self.fmap_min = fmap_base, int(fmap_max), int(fmap_min)
        self.architecture = L.check_choice(architecture, ARCHITECTURES, "architecture")
        self.resample_kernel = tuple(resample_kernel)
        self.conv_clamp = conv_clamp
        self.fused_modconv = bool(fused_modconv)
        self.progressive = bool(progressive)
        self.noise_seed = noise_seed
        if self.progressive and architecture != "skip":
            raise ValueError("SynthesisNetwork: progressive growing needs architecture='skip' "
                             f"(every block has a ToRGB), got {architecture!r}.")
        self.channels = channels_per_resolution(resolution, fmap_base, fmap_max, fmap_min)
        self.block_resolutions = [2 ** r for r in range(2, self.log2_resolution + 1)]
        self.blocks = []
        self.num_ws = 0
        for r in self.block_resolutions:
            block = SynthesisBlock(
                self.channels[r // 2] if r > 4 else 0, self.channels[r], r, img_channels, w_dim,
                architecture, is_last=(r == self.resolution), resample_kernel=resample_kernel,
                conv_clamp=conv_clamp, fused_modconv=fused_modconv, name=f"b{r}")
            setattr(self, f"b{r}", block)
            self.blocks.append(block)
            self.num_ws += block.num_conv
        self.num_ws += self.blocks[-1].num_torgb
        self.seed_generator = keras.random.SeedGenerator(noise_seed, name="noise_seed_generator")

    def build(self, dlatents_shape=None):
        for block in self.blocks:
            block.build()

    def call(self, dlatents, noise_mode="random", lod=None, resolution=None):
        stage = L.check_stage(resolution, self.resolution, self.progressive, "SynthesisNetwork")
        if lod is not None and not self.progressive:
            raise ValueError("SynthesisNetwork: lod given to a fixed-resolution network; build it "
                             "with progressive=True.")
        dlatents = tf.cast(dlatents, tf.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks:
            if block.resolution > stage:
                break
            ws = dlatents[:, w_idx:w_idx + block.num_conv + block.num_torgb]
            prev_img = img
            x, img = block(x, img, ws, noise_mode=noise_mode, seed_generator=self.seed_generator)
            w_idx += block.num_conv
        if self.progressive and lod is not None and stage > 4:
            # img = up(prev) + ToRGB(x); fade the new ToRGB out as t goes to 1.
            upsampled = L.upsample_2d(prev_img, self.resample_kernel)
            t = L.fade_coefficient(lod, self.resolution, stage)
            img = upsampled + (img - upsampled) * (1.0 - t)
        return img

    def get_config(self):
        config = super().get_config()
        config.update(w_dim=self.w_dim, resolution=self.resolution,
                      img_channels=self.img_channels, fmap_base=self.fmap_base,
                      fmap_max=self.fmap_max, fmap_min=self.fmap_min,
                      architecture=self.architecture, resample_kernel=self.resample_kernel,
                      conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                      progressive=self.progressive, noise_seed=self.noise_seed)
        return config

#----------------------------------------------------------------------------
# Generator.


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class Generator(StyleGenerator):
    """StyleGAN2 generator: `G(z, labels=None, truncation_psi=1.0, truncation_cutoff=None,
    noise_mode="const", lod=None, resolution=None)` -> float32 NHWC images in [-1, 1].

    `G.mapping` and `G.synthesis` are callable separately (see `StyleGenerator` for the
    trainer's use: dlatent average, style mixing, truncation, path length).

    Args:
      z_dim, c_dim, w_dim: latent, label and intermediate-latent sizes (512, 0, 512).
      resolution: output resolution R (power of two >= 4).
      img_channels: output channels (3).
      mapping_layers, mapping_lrmul: mapping depth (8) and learning-rate multiplier (0.01).
      fmap_base, fmap_max, fmap_min: channel formula (config-f: 16384, 512, 1; config-e 8192).
      architecture: 'skip' (official), 'resnet' or 'orig'.
      resample_kernel: FIR kernel (1, 3, 3, 1).
      conv_clamp: clamp activations to +-conv_clamp (stylegan2-ada-pytorch uses 256 with
        mixed precision); None = off (official TF models).
      fused_modconv: per-sample modulated kernels, as the official grouped convolution.
      progressive: allow `resolution` / `lod` stages (architecture 'skip').
      seed: seeds the noise and style-mixing RNGs (None = random).
      sq_num_codes: SQ-GAN style quantization: codebook entries K; 0 = off (plain StyleGAN2).
      sq_code_dim, sq_hyperspherical, sq_commitment_cost, sq_uniformity_temperature: the
        `fq_keras.StyleQuantization` settings (4, True, 0.25, 2.0); sq_code_dim must divide
        w_dim.

    Style quantization (SQ-GAN): `G.sq` (a `StyleQuantization` layer, or None) sits between
    mapping and synthesis. `G(z, ...)` computes w = mapping(z), truncates it in the continuous
    W space (dlatent_avg is the average of the continuous w), then quantises every dlatent row
    and synthesises: images = synthesis(sq(truncate(mapping(z)))). Each row is quantised on its
    own, so quantising w before the broadcast to num_ws layers (what the trainer does) equals
    quantising the broadcast dlatents. `G.synthesis` itself never quantises: the trainer and
    the export call `G.sq` explicitly.
    """

    def __init__(self, z_dim=512, c_dim=0, w_dim=512, resolution=1024, img_channels=3,
                 mapping_layers=8, mapping_lrmul=0.01, fmap_base=16384, fmap_max=512,
                 fmap_min=1, architecture="skip", resample_kernel=RESAMPLE_KERNEL,
                 conv_clamp=None, fused_modconv=False, progressive=False, seed=None,
                 sq_num_codes=0, sq_code_dim=4, sq_hyperspherical=True, sq_commitment_cost=0.25,
                 sq_uniformity_temperature=2.0, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.z_dim = L.check_int(z_dim, "Generator: z_dim", 1)
        self.c_dim = L.check_int(c_dim, "Generator: c_dim", 0)
        self.w_dim = L.check_int(w_dim, "Generator: w_dim", 1)
        self.resolution = int(resolution)
        self.seed = seed
        self._config = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, resolution=resolution,
            img_channels=img_channels, mapping_layers=mapping_layers, mapping_lrmul=mapping_lrmul,
            fmap_base=fmap_base, fmap_max=fmap_max, fmap_min=fmap_min, architecture=architecture,
            resample_kernel=tuple(resample_kernel), conv_clamp=conv_clamp,
            fused_modconv=fused_modconv, progressive=progressive, seed=seed,
            sq_num_codes=sq_num_codes, sq_code_dim=sq_code_dim,
            sq_hyperspherical=sq_hyperspherical, sq_commitment_cost=sq_commitment_cost,
            sq_uniformity_temperature=sq_uniformity_temperature)
        self.synthesis = SynthesisNetwork(
            w_dim, resolution, img_channels, fmap_base, fmap_max, fmap_min, architecture,
            resample_kernel, conv_clamp, fused_modconv, progressive, noise_seed=seed,
            name="synthesis")
        self.num_ws = self.synthesis.num_ws
        self.progressive = self.synthesis.progressive
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws,
                                      num_layers=mapping_layers, lrmul=mapping_lrmul,
                                      name="mapping")
        self.sq = None
        if L.check_int(sq_num_codes, "Generator: sq_num_codes", 0):
            code_dim = L.check_int(sq_code_dim, "Generator: sq_code_dim", 1)
            if self.w_dim % code_dim:
                raise ValueError(f"Generator: sq_code_dim {code_dim} does not divide w_dim "
                                 f"{self.w_dim}; choose a divisor of w_dim (SQ-GAN: 4).")
            self.sq = StyleQuantization(
                num_codes=int(sq_num_codes), code_dim=code_dim, hyperspherical=sq_hyperspherical,
                commitment_cost=sq_commitment_cost,
                uniformity_temperature=sq_uniformity_temperature, name="sq")
        self._init_style_state(seed)
        self.build()

    def build(self, input_shape=None):
        self.mapping.build()
        self.synthesis.build()
        if self.sq is not None:
            self.sq.build((None, self.w_dim))
        self.built = True

    def call(self, z, labels=None, truncation_psi=1.0, truncation_cutoff=None,
             noise_mode="const", lod=None, resolution=None):
        """z (N, z_dim), labels (N, c_dim) or None -> float32 images (N, R, R, C) in [-1, 1]:
        synthesis(sq(truncate(mapping(z)))), without sq when style quantization is off.

        noise_mode: "const" (stored noise maps, deterministic), "random", "none".
        lod / resolution: progressive growing (see the synthesis network).
        """
        dlatents = self.mapping(z, labels)
        dlatents = self.truncate(dlatents, truncation_psi, truncation_cutoff)
        if self.sq is not None:
            dlatents = self.sq(dlatents)
        return self.synthesis(dlatents, noise_mode=noise_mode, lod=lod, resolution=resolution)

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config

#----------------------------------------------------------------------------
# Discriminator.


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class DiscriminatorBlock(keras.layers.Layer):
    """Block b{R}: takes R x R, outputs R/2 x R/2 (stylegan2-ada-pytorch `DiscriminatorBlock`).

    FromRGB (1x1, lrelu) when first or 'skip'; conv0 3x3 (tmp) -> conv1 3x3 down (out), FIR
    [1,3,3,1]; 'resnet': skip = 1x1 down-conv without bias, (x + skip) / sqrt(2) (written as
    gains sqrt(1/2) on both paths). 'skip' also downsamples the image for the next block.

    Call: `block(x, img)` -> (x, img); x None for the first block.
    """

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels=3,
                 architecture="resnet", first=False, resample_kernel=RESAMPLE_KERNEL,
                 conv_clamp=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.tmp_channels = int(tmp_channels)
        self.out_channels = int(out_channels)
        self.resolution = int(resolution)
        self.img_channels = int(img_channels)
        self.architecture = L.check_choice(architecture, ARCHITECTURES, "architecture")
        self.first = bool(first)
        self.resample_kernel = tuple(resample_kernel)
        self.conv_clamp = conv_clamp
        act = dict(activation="lrelu", activation_gain=L.SQRT2, clamp=conv_clamp)
        self.fromrgb = L.EqualizedConv2D(tmp_channels, 1, name="fromrgb", **act) \
            if (first or architecture == "skip") else None
        self.conv0 = L.EqualizedConv2D(tmp_channels, 3, name="conv0", **act)
        self.conv1 = L.EqualizedConv2D(out_channels, 3, down=True, resample_kernel=resample_kernel,
                                       name="conv1", **act)
        self.skip = L.EqualizedConv2D(out_channels, 1, down=True, resample_kernel=resample_kernel,
                                      use_bias=False, name="skip") \
            if architecture == "resnet" else None

    def build(self, x_shape=None, img_shape=None):
        r = self.resolution
        if self.fromrgb is not None:
            self.fromrgb.build((None, r, r, self.img_channels))
        x_in = (None, r, r, self.tmp_channels)
        self.conv0.build(x_in)
        self.conv1.build(x_in)
        if self.skip is not None:
            self.skip.build(x_in)

    def call(self, x, img):
        if self.fromrgb is not None:
            y = self.fromrgb(img)
            x = y if x is None else x + tf.cast(y, x.dtype)
            skip = self.architecture == "skip"
            img = L.downsample_2d(img, self.resample_kernel) if skip else None
        if self.skip is not None:
            y = self.skip(x, gain=math.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=math.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, tmp_channels=self.tmp_channels,
                      out_channels=self.out_channels, resolution=self.resolution,
                      img_channels=self.img_channels, architecture=self.architecture,
                      first=self.first, resample_kernel=self.resample_kernel,
                      conv_clamp=self.conv_clamp)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class DiscriminatorEpilogue(keras.layers.Layer):
    """Block b4: [FromRGB for 'skip'] -> minibatch stddev -> conv 3x3 -> fc -> out.

    out has 1 unit, or cmap_dim for a conditional D, whose logit is then the projection
    sum(out * cmap) / sqrt(cmap_dim) (stylegan2-ada-pytorch). The fc input is the NHWC flatten
    of the 4x4 map (the PyTorch weight is NCHW-flattened; the converter permutes its rows).
    """

    def __init__(self, in_channels, img_channels=3, architecture="resnet", cmap_dim=0,
                 mbstd_group_size=4, mbstd_num_features=1, conv_clamp=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.img_channels = int(img_channels)
        self.architecture = L.check_choice(architecture, ARCHITECTURES, "architecture")
        self.cmap_dim = int(cmap_dim)
        self.mbstd_group_size = int(mbstd_group_size)
        self.mbstd_num_features = int(mbstd_num_features)
        self.conv_clamp = conv_clamp
        act = dict(activation="lrelu", activation_gain=L.SQRT2)
        self.fromrgb = L.EqualizedConv2D(in_channels, 1, name="fromrgb", clamp=conv_clamp, **act) \
            if architecture == "skip" else None
        self.mbstd = L.MinibatchStddev(mbstd_group_size, mbstd_num_features, name="mbstd") \
            if mbstd_num_features > 0 and mbstd_group_size > 0 else None
        self.conv = L.EqualizedConv2D(in_channels, 3, name="conv", clamp=conv_clamp, **act)
        self.fc = L.EqualizedDense(in_channels, name="fc", **act)
        self.out = L.EqualizedDense(self.cmap_dim or 1, name="out")

    def build(self, x_shape=None, img_shape=None, cmap_shape=None):
        c = self.in_channels
        if self.fromrgb is not None:
            self.fromrgb.build((None, 4, 4, self.img_channels))
        extra = self.mbstd_num_features if self.mbstd is not None else 0
        self.conv.build((None, 4, 4, c + extra))
        self.fc.build((None, 4 * 4 * c))
        self.out.build((None, c))

    def call(self, x, img, cmap=None):
        if self.fromrgb is not None:
            y = self.fromrgb(img)
            x = y if x is None else x + tf.cast(y, x.dtype)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x)
        x = tf.cast(self.out(x), tf.float32)
        if self.cmap_dim:
            x = tf.reduce_sum(x * cmap, axis=1, keepdims=True) * (1.0 / math.sqrt(self.cmap_dim))
        return x

    def get_config(self):
        config = super().get_config()
        config.update(in_channels=self.in_channels, img_channels=self.img_channels,
                      architecture=self.architecture, cmap_dim=self.cmap_dim,
                      mbstd_group_size=self.mbstd_group_size,
                      mbstd_num_features=self.mbstd_num_features, conv_clamp=self.conv_clamp)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan2")
class Discriminator(keras.Model):
    """StyleGAN2 discriminator with optional feature quantization (FQ-StyleGAN2).

    `D(images, labels=None, lod=None, return_fq=False)`: images float NHWC (N, R', R', C) in
    [-1, 1] -> float32 logits (N, 1); with return_fq=True -> (logits, lookups), lookups being
    the `FeatureQuantization.lookup` results of the FQ layers that ran, in the order of
    `D.active_fq_layers(R')` (== `D.fq_layers` at full resolution). R' = R unless progressive.

    FQ (`fq_blocks`): blocks are named by input resolution; block R takes R x R and its FQ layer
    quantises the R/2 x R/2 output (before the next block; official `--discrete_layer`).
    `fq_blocks=(16, 32)` quantises the 8x8 and 16x16 features. Valid blocks: R, R/2, ..., 8.
    With the default forward="continuous" the logits do not depend on FQ (official code); the
    trainer adds `fq_keras.fq_loss(lookups, ...)` and calls
    `fq_keras.update_dictionaries(D.active_fq_layers(res), real_lookups, fake_lookups)`.

    Progressive growing (progressive=True, architecture 'skip'): the stage is the static size of
    `images`; blocks above it do not run and neither do their FQ layers. `lod` fades the first
    block out: x = (1 - t) * block_stage(fromrgb(img)) (after its FQ layer), so at t = 1 the next
    block sees only its own FromRGB of the FIR-downsampled image, i.e. the previous stage's
    network.

    Args:
      resolution, img_channels, c_dim: input resolution, channels, label size.
      architecture: 'resnet' (official config-e/f), 'skip' or 'orig'.
      fmap_base, fmap_max, fmap_min: channel formula (see module docstring).
      mbstd_group_size, mbstd_num_features: minibatch stddev (4, 1); the (per-replica) batch
        must be divisible by min(group size, batch).
      cmap_dim: label projection size (default: 4x4 width); mapping_layers: layers of the label
        mapping (8, lrmul 0.01).
      resample_kernel, conv_clamp: as the generator.
      progressive: allow smaller input stages (architecture 'skip').
      fq_blocks: iterable of block resolutions to quantise; () = baseline.
      fq_num_embeddings, fq_decay, fq_commitment_cost, fq_forward, fq_zero_debias: FQ settings
        (a value or a dict keyed by block); official FQ-StyleGAN2: None (K per block,
        `official_num_embeddings`: 64 for blocks >= 128, 128 below), 0.8, 0.25, "continuous",
        True.
    """

    def __init__(self, resolution=1024, img_channels=3, c_dim=0, architecture="resnet",
                 fmap_base=16384, fmap_max=512, fmap_min=1, mbstd_group_size=4,
                 mbstd_num_features=1, cmap_dim=None, mapping_layers=8,
                 resample_kernel=RESAMPLE_KERNEL, conv_clamp=None, progressive=False,
                 fq_blocks=(), fq_num_embeddings=None, fq_decay=0.8, fq_commitment_cost=0.25,
                 fq_forward="continuous", fq_zero_debias=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.log2_resolution = L.check_resolution(resolution)
        self.resolution = int(resolution)
        self.img_channels = L.check_int(img_channels, "Discriminator: img_channels", 1)
        self.c_dim = L.check_int(c_dim, "Discriminator: c_dim", 0)
        self.architecture = L.check_choice(architecture, ARCHITECTURES, "architecture")
        self.progressive = bool(progressive)
        if self.resolution < 8 and architecture != "skip":
            raise ValueError("Discriminator: resolution 4 needs architecture='skip' (the 4x4 "
                             "block has a FromRGB only then).")
        if self.progressive and architecture != "skip":
            raise ValueError("Discriminator: progressive growing needs architecture='skip' "
                             f"(every block has a FromRGB), got {architecture!r}.")
        self.channels = channels_per_resolution(resolution, fmap_base, fmap_max, fmap_min)
        self.cmap_dim = 0 if not self.c_dim else (
            self.channels[4] if cmap_dim is None else L.check_int(cmap_dim, "cmap_dim", 1))
        self.resample_kernel = tuple(resample_kernel)
        self._config = dict(
            resolution=resolution, img_channels=img_channels, c_dim=c_dim,
            architecture=architecture, fmap_base=fmap_base, fmap_max=fmap_max, fmap_min=fmap_min,
            mbstd_group_size=mbstd_group_size, mbstd_num_features=mbstd_num_features,
            cmap_dim=cmap_dim, mapping_layers=mapping_layers,
            resample_kernel=tuple(resample_kernel), conv_clamp=conv_clamp,
            progressive=progressive, fq_num_embeddings=fq_num_embeddings, fq_decay=fq_decay,
            fq_commitment_cost=fq_commitment_cost, fq_forward=fq_forward,
            fq_zero_debias=fq_zero_debias)
        self.block_resolutions = [2 ** r for r in range(self.log2_resolution, 2, -1)]
        self.blocks = []
        for r in self.block_resolutions:
            block = DiscriminatorBlock(
                self.channels[r] if r < resolution else 0, self.channels[r], self.channels[r // 2],
                r, img_channels, architecture, first=(r == resolution),
                resample_kernel=resample_kernel, conv_clamp=conv_clamp, name=f"b{r}")
            setattr(self, f"b{r}", block)
            self.blocks.append(block)
        self.mapping = MappingNetwork(0, self.c_dim, self.cmap_dim, None, mapping_layers,
                                      name="mapping") if self.c_dim else None
        self.b4 = DiscriminatorEpilogue(
            self.channels[4], img_channels, architecture, self.cmap_dim, mbstd_group_size,
            mbstd_num_features, conv_clamp, name="b4")
        if fq_num_embeddings is None:
            fq_num_embeddings = {r: official_num_embeddings(r) for r in self.block_resolutions}
        self.fq_blocks, self.fq_layers = L.make_fq_layers(
            fq_blocks, self.block_resolutions, {r: self.channels[r // 2] for r in
                                                self.block_resolutions},
            fq_num_embeddings, fq_decay, fq_commitment_cost, fq_forward, fq_zero_debias)
        self._fq_by_block = dict(zip(self.fq_blocks, self.fq_layers))
        self._config["fq_blocks"] = self.fq_blocks
        self.build()

    def build(self, input_shape=None):
        for block in self.blocks:
            block.build()
        if self.mapping is not None:
            self.mapping.build()
        self.b4.build()
        self.built = True

    def active_fq_layers(self, resolution=None):
        """FQ layers that run for inputs of `resolution` (default full), in lookup order."""
        resolution = self.resolution if resolution is None else resolution
        return [fq for b, fq in zip(self.fq_blocks, self.fq_layers) if b <= resolution]

    def call(self, images, labels=None, lod=None, return_fq=False):
        if images.shape.rank != 4 or images.shape[-1] != self.img_channels:
            raise ValueError(f"Discriminator: images must be (N, H, W, {self.img_channels}), got "
                             f"shape {tuple(images.shape)}.")
        stage = L.check_stage(images.shape[1], self.resolution, self.progressive, "Discriminator")
        if lod is not None and not self.progressive:
            raise ValueError("Discriminator: lod given to a fixed-resolution network; build it "
                             "with progressive=True.")
        cmap = None
        if self.c_dim:
            if labels is None:
                raise ValueError(f"Discriminator: labels (N, {self.c_dim}) are required.")
            cmap = self.mapping(None, labels)
        elif labels is not None:
            raise ValueError("Discriminator: labels given to an unconditional network (c_dim=0).")
        img = tf.cast(images, self.compute_dtype)
        x = None
        lookups = []
        for block in self.blocks:
            if block.resolution > stage:
                continue
            x, img = block(x, img)
            fq = self._fq_by_block.get(block.resolution)
            if fq is not None:
                x, lookup = fq(x, return_lookup=True)
                lookups.append(lookup)
            if self.progressive and lod is not None and block.resolution == stage:
                x = x * tf.cast(1.0 - L.fade_coefficient(lod, self.resolution, stage), x.dtype)
        logits = self.b4(x, img, cmap)
        return (logits, lookups) if return_fq else logits

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config
