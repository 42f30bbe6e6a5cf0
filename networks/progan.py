"""ProGAN (Karras et al., ICLR 2018): progressively grown G and D, NHWC.

Official tkarras/progressive_growing_of_gans `G_paper` / `D_paper`: pixel norm after every
generator convolution, equalized learning rate (gain sqrt(2) in the weights, leaky ReLU 0.2),
fused up/down-sampling convolutions, minibatch stddev in D's 4x4 block. The progressive
discriminator here is also StyleGAN v1's `D_basic` (`networks.stylegan.Discriminator` sets its
blur, label projection and fused-scale rule). Behaviour per `../shared/reference/stylegan.md`.

Progressive growing. A stage is the static Python int `resolution` (G's argument; D reads it
from the images' static shape); `lod` is a float tensor that may change every step without
retracing. Within stage S of a network of resolution R, lod lies in [log2 R - log2 S,
log2 R - log2 S + 1], and with t = clip(lod - (log2 R - log2 S), 0, 1):

    G: out = lerp(ToRGB_S(x_S), upscale2d(ToRGB_{S/2}(x_{S/2})), t)          (nearest upscale)
    D: x = lerp(block_S(FromRGB_S(img)), FromRGB_{S/2}(downscale2d(img)), t) (2x2 average)

exactly the official `lerp_clip` fade (the official linear structure's other lerps are clipped
to 0 inside that lod range). At t = 1 the output equals the previous stage's network (G's
upscaled); at t = 0 the stage's own. Only layers up to S are traced, so an S x S stage costs
an S x S network. `lod=None` means t = 0.

Layouts: NHWC; the 4x4 dense of G reshapes to (4, 4, C) (official NCHW: (C, 4, 4)), and D's
dense flattens NHWC; both are re-orderings of randomly initialised weights.
"""

import math

import keras
import tensorflow as tf

from networks import layers as L

LABEL_MODES = ("auxiliary", "projection")
# There is no official FQ-ProGAN; the defaults follow FQ-StyleGAN v1 (fq-official.md).
FQ_DEFAULTS = {"fq_blocks": (8,), "fq_num_embeddings": 1024, "fq_decay": 0.8,
               "fq_commitment_cost": 5.0}


def nf(stage, fmap_base=8192, fmap_decay=1.0, fmap_max=512):
    """Official ProGAN / StyleGAN v1 width: min(int(fmap_base / 2^(stage * decay)), fmap_max)."""
    return L.num_features(stage, fmap_base, fmap_decay, 1, fmap_max)



def _fused(fused_scale, resolution):
    """Official fused_scale: True / False, or 'auto' = fused when the block works at >= 128."""
    if fused_scale == "auto":
        return resolution >= 128
    return bool(fused_scale)

#----------------------------------------------------------------------------
# Generator.


@keras.saving.register_keras_serializable(package="networks.progan")
class GeneratorBlock(keras.layers.Layer):
    """G block at resolution R; each conv -> bias -> act -> pixel norm.

    4x4: [pixel-norm latents] -> dense 16C (gain sqrt(2)/4, as the Theano original) -> reshape
    (4, 4, C) -> bias -> act -> PN -> conv 3x3 -> PN. R > 4: up-conv 3x3 (fused transposed conv,
    or nearest + conv) -> PN -> conv 3x3 -> PN.
    """

    def __init__(self, resolution, channels, latent_features=0, normalize_latents=True,
                 use_wscale=True, use_pixelnorm=True, pixelnorm_epsilon=1e-8,
                 activation="lrelu", fused_scale=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.resolution = int(resolution)
        self.channels = int(channels)
        self.latent_features = int(latent_features)
        self.normalize_latents = bool(normalize_latents)
        self.use_pixelnorm = bool(use_pixelnorm)
        self.pixelnorm_epsilon = float(pixelnorm_epsilon)
        self.activation = activation
        conv = dict(gain=L.SQRT2, use_wscale=use_wscale, activation=activation)
        if self.resolution == 4:
            self.dense = L.EqualizedDense(16 * channels, gain=L.SQRT2 / 4, use_wscale=use_wscale,
                                          use_bias=False, name="dense")
            self.conv = L.EqualizedConv2D(channels, 3, name="conv", **conv)
        else:
            self.conv0 = L.EqualizedConv2D(channels, 3, up=True, fused_scale=fused_scale,
                                           name="conv0_up", **conv)
            self.conv1 = L.EqualizedConv2D(channels, 3, name="conv1", **conv)
        self._config = dict(resolution=resolution, channels=channels,
                            latent_features=latent_features, normalize_latents=normalize_latents,
                            use_wscale=use_wscale, use_pixelnorm=use_pixelnorm,
                            pixelnorm_epsilon=pixelnorm_epsilon, activation=activation,
                            fused_scale=fused_scale)

    def build(self, input_shape):
        if self.resolution == 4:
            self.dense.build((None, self.latent_features))
            self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros",
                                        dtype="float32")
            self.conv.build((None, 4, 4, self.channels))
        else:
            self.conv0.build(input_shape)
            self.conv1.build((None, self.resolution, self.resolution, self.channels))

    def _pn(self, x):
        return L.pixel_norm(x, self.pixelnorm_epsilon) if self.use_pixelnorm else x

    def call(self, x):
        if self.resolution == 4:
            if self.normalize_latents:
                x = L.pixel_norm(tf.cast(x, tf.float32), self.pixelnorm_epsilon)
            x = tf.reshape(self.dense(x), [-1, 4, 4, self.channels])
            x = self._pn(L.bias_act(x, tf.convert_to_tensor(self.bias), self.activation))
            return self._pn(self.conv(x))
        return self._pn(self.conv1(self._pn(self.conv0(x))))

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config


@keras.saving.register_keras_serializable(package="networks.progan")
class Generator(keras.Model):
    """ProGAN generator: `G(latents, labels=None, lod=None, resolution=None)` -> float32 NHWC
    images (N, S, S, img_channels), S = resolution (stage; default the full resolution), linear
    output (the official G has no tanh; data lie in [-1, 1]).

    Args:
      resolution: final resolution R (power of two >= 4).
      img_channels: output channels.
      c_dim: label size; labels are concatenated to the latents (official).
      latent_size: default nf(0) = 512.
      fmap_base, fmap_decay, fmap_max: widths nf(stage) = min(fmap_base / 2^stage, fmap_max);
        a layer at resolution r has nf(log2 r - 1) channels.
      normalize_latents, use_wscale, use_pixelnorm, pixelnorm_epsilon, use_leakyrelu,
        fused_scale: official switches (defaults: the paper).
    """

    def __init__(self, resolution=1024, img_channels=3, c_dim=0, latent_size=None,
                 fmap_base=8192, fmap_decay=1.0, fmap_max=512, normalize_latents=True,
                 use_wscale=True, use_pixelnorm=True, pixelnorm_epsilon=1e-8, use_leakyrelu=True,
                 fused_scale=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.log2_resolution = L.check_resolution(resolution)
        self.resolution = int(resolution)
        self.img_channels = L.check_int(img_channels, "Generator: img_channels", 1)
        self.c_dim = L.check_int(c_dim, "Generator: c_dim", 0)
        widths = dict(fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max)
        self.latent_size = nf(0, **widths) if latent_size is None else L.check_int(
            latent_size, "Generator: latent_size", 1)
        self.z_dim = self.latent_size
        self._config = dict(resolution=resolution, img_channels=img_channels, c_dim=c_dim,
                            latent_size=latent_size, fmap_base=fmap_base, fmap_decay=fmap_decay,
                            fmap_max=fmap_max, normalize_latents=normalize_latents,
                            use_wscale=use_wscale, use_pixelnorm=use_pixelnorm,
                            pixelnorm_epsilon=pixelnorm_epsilon, use_leakyrelu=use_leakyrelu,
                            fused_scale=fused_scale)
        activation = "lrelu" if use_leakyrelu else "relu"
        self.block_resolutions = [2 ** r for r in range(2, self.log2_resolution + 1)]
        self.channels = {r: nf(int(math.log2(r)) - 1, **widths) for r in self.block_resolutions}
        self.blocks, self.torgbs = [], []
        for r in self.block_resolutions:
            block = GeneratorBlock(
                r, self.channels[r], self.latent_size + self.c_dim, normalize_latents,
                use_wscale, use_pixelnorm, pixelnorm_epsilon, activation, fused_scale,
                name=f"b{r}")
            torgb = L.EqualizedConv2D(img_channels, 1, gain=1.0, use_wscale=use_wscale,
                                      name=f"torgb{r}")
            setattr(self, f"b{r}", block)
            setattr(self, f"torgb{r}", torgb)
            self.blocks.append(block)
            self.torgbs.append(torgb)
        self.build()

    def build(self, input_shape=None):
        for r, block, torgb in zip(self.block_resolutions, self.blocks, self.torgbs):
            block.build((None, r // 2, r // 2, self.channels.get(r // 2, 0)))
            torgb.build((None, r, r, self.channels[r]))
        self.built = True

    def call(self, latents, labels=None, lod=None, resolution=None):
        stage = L.check_stage(resolution, self.resolution, True, "progan.Generator")
        x = tf.cast(latents, tf.float32)
        if self.c_dim:
            if labels is None:
                raise ValueError(f"progan.Generator: labels (N, {self.c_dim}) are required.")
            x = tf.concat([x, tf.cast(labels, tf.float32)], axis=1)
        elif labels is not None:
            raise ValueError("progan.Generator: labels given to an unconditional network.")
        prev = None
        for block, torgb in zip(self.blocks, self.torgbs):
            if block.resolution > stage:
                break
            prev = x
            x = block(x)
        out = tf.cast(self.torgbs[self.block_resolutions.index(stage)](x), tf.float32)
        if lod is not None and stage > 4:
            low = tf.cast(self.torgbs[self.block_resolutions.index(stage // 2)](prev), tf.float32)
            t = L.fade_coefficient(lod, self.resolution, stage)
            out = L.lerp_clip(out, L.upscale2d(low), t)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config

#----------------------------------------------------------------------------
# Discriminator (ProGAN D_paper; StyleGAN v1 D_basic via options).


@keras.saving.register_keras_serializable(package="networks.progan")
class DiscriminatorBlock(keras.layers.Layer):
    """D block R (R >= 8): takes R x R, outputs R/2 x R/2.

    conv0 3x3 (nf(log2 R - 1)) -> act; then the down-conv to nf(log2 R - 2):
      ProGAN: fused conv_downscale -> act, or conv -> act -> 2x2 average;
      StyleGAN v1 (blur): blur -> fused conv_downscale or conv -> 2x2 average -> bias -> act.
    """

    def __init__(self, resolution, in_channels, out_channels, use_wscale=True,
                 activation="lrelu", fused_scale=True, blur_filter=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.resolution = int(resolution)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.blur_filter = None if blur_filter is None else tuple(blur_filter)
        self.fused = _fused(fused_scale, resolution)
        # ProGAN's non-fused path averages after the activation; StyleGAN's before the bias.
        self.downscale_after_act = not self.fused and self.blur_filter is None
        conv = dict(gain=L.SQRT2, use_wscale=use_wscale, activation=activation)
        self.conv0 = L.EqualizedConv2D(in_channels, 3, name="conv0", **conv)
        self.conv1 = L.EqualizedConv2D(out_channels, 3, down=not self.downscale_after_act,
                                       fused_scale=self.fused, name="conv1_down", **conv)
        self._config = dict(resolution=resolution, in_channels=in_channels,
                            out_channels=out_channels, use_wscale=use_wscale,
                            activation=activation, fused_scale=fused_scale,
                            blur_filter=blur_filter)

    def build(self, input_shape=None):
        shape = (None, self.resolution, self.resolution, self.in_channels)
        self.conv0.build(shape)
        self.conv1.build(shape)

    def call(self, x):
        x = self.conv0(x)
        if self.blur_filter is not None:
            x = L.blur2d(x, self.blur_filter)
        x = self.conv1(x)
        return L.downscale2d(x) if self.downscale_after_act else x

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config


@keras.saving.register_keras_serializable(package="networks.progan")
class DiscriminatorEpilogue(keras.layers.Layer):
    """4x4 block: minibatch stddev -> conv 3x3 nf(1) -> dense nf(0) -> dense out (gain 1)."""

    def __init__(self, in_channels, hidden_channels, out_units, use_wscale=True,
                 activation="lrelu", mbstd_group_size=4, mbstd_num_features=1, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.in_channels = int(in_channels)
        self.hidden_channels = int(hidden_channels)
        self.out_units = int(out_units)
        self.mbstd = L.MinibatchStddev(mbstd_group_size, mbstd_num_features, name="mbstd") \
            if mbstd_group_size > 1 else None
        act = dict(gain=L.SQRT2, use_wscale=use_wscale, activation=activation)
        self.conv = L.EqualizedConv2D(in_channels, 3, name="conv", **act)
        self.dense0 = L.EqualizedDense(hidden_channels, name="dense0", **act)
        self.dense1 = L.EqualizedDense(out_units, gain=1.0, use_wscale=use_wscale, name="dense1")
        self._config = dict(in_channels=in_channels, hidden_channels=hidden_channels,
                            out_units=out_units, use_wscale=use_wscale, activation=activation,
                            mbstd_group_size=mbstd_group_size,
                            mbstd_num_features=mbstd_num_features)

    def build(self, input_shape=None):
        extra = self.mbstd.num_features if self.mbstd is not None else 0
        self.conv.build((None, 4, 4, self.in_channels + extra))
        self.dense0.build((None, 16 * self.in_channels))
        self.dense1.build((None, self.hidden_channels))

    def call(self, x):
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.dense0(self.conv(x))
        return tf.cast(self.dense1(x), tf.float32)

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config


@keras.saving.register_keras_serializable(package="networks.progan")
class Discriminator(keras.Model):
    """ProGAN discriminator with progressive growing and FQ blocks.

    `D(images, labels=None, lod=None, return_fq=False, return_label_logits=False)`: images
    float NHWC (N, S, S, C), S (the stage) read from the static shape -> float32 logits (N, 1).
    Extra outputs, in this order when requested: label logits (N, c_dim) (AC-GAN head of the
    official ProGAN, label_mode="auxiliary"), FQ lookups (see below).

    FQ: `fq_blocks` names blocks by input resolution (block R: R x R -> R/2 x R/2); the FQ
    layer quantises the block's output before the fade (as the official FQ-StyleGAN's
    recursive structure), so it runs exactly when its block runs: at stage S the lookups are
    those of `D.active_fq_layers(S)` (blocks <= S), in order (high to low resolution). Feed
    them to `fq_keras.update_dictionaries(D.active_fq_layers(S), real, fake)`. Valid blocks:
    R, R/2, ..., 8.

    Args:
      resolution, img_channels, c_dim: input resolution, channels, label size.
      fmap_base, fmap_decay, fmap_max: widths (see `nf`).
      use_wscale, use_leakyrelu: official switches.
      mbstd_group_size, mbstd_num_features: minibatch stddev (4, 1; group <= 1 disables);
        the (per-replica) batch must be divisible by min(group size, batch).
      fused_scale: True (ProGAN), False, or 'auto' (fused for blocks >= 128, StyleGAN v1).
      blur_filter: None (ProGAN) or (1, 2, 1) (StyleGAN v1: blur before each down-conv).
      label_mode: "auxiliary" (ProGAN: 1 + c_dim outputs, labels not an input) or "projection"
        (StyleGAN v1 LabelSwitch: max(c_dim, 1) outputs, logit = sum(out * labels)).
      fq_blocks, fq_num_embeddings, fq_decay, fq_commitment_cost, fq_forward, fq_zero_debias:
        FeatureQuantization per block (a value or a dict keyed by block).
    """

    def __init__(self, resolution=1024, img_channels=3, c_dim=0, fmap_base=8192,
                 fmap_decay=1.0, fmap_max=512, use_wscale=True, use_leakyrelu=True,
                 mbstd_group_size=4, mbstd_num_features=1, fused_scale=True, blur_filter=None,
                 label_mode="auxiliary", fq_blocks=(), fq_num_embeddings=1024, fq_decay=0.8,
                 fq_commitment_cost=5.0, fq_forward="continuous", fq_zero_debias=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.log2_resolution = L.check_resolution(resolution)
        self.resolution = int(resolution)
        self.img_channels = L.check_int(img_channels, "Discriminator: img_channels", 1)
        self.c_dim = L.check_int(c_dim, "Discriminator: c_dim", 0)
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}.")
        if fused_scale not in (True, False, "auto"):
            raise ValueError(f"fused_scale must be True, False or 'auto', got {fused_scale!r}.")
        self.label_mode = label_mode
        self._config = dict(
            resolution=resolution, img_channels=img_channels, c_dim=c_dim, fmap_base=fmap_base,
            fmap_decay=fmap_decay, fmap_max=fmap_max, use_wscale=use_wscale,
            use_leakyrelu=use_leakyrelu, mbstd_group_size=mbstd_group_size,
            mbstd_num_features=mbstd_num_features, fused_scale=fused_scale,
            blur_filter=None if blur_filter is None else tuple(blur_filter),
            label_mode=label_mode, fq_num_embeddings=fq_num_embeddings, fq_decay=fq_decay,
            fq_commitment_cost=fq_commitment_cost, fq_forward=fq_forward,
            fq_zero_debias=fq_zero_debias)
        widths = dict(fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max)
        activation = "lrelu" if use_leakyrelu else "relu"
        all_res = [2 ** r for r in range(2, self.log2_resolution + 1)]
        self.channels = {r: nf(int(math.log2(r)) - 1, **widths) for r in all_res}
        self.block_resolutions = all_res[:0:-1]  # R, R/2, ..., 8
        self.fromrgbs = {}
        for r in all_res:
            layer = L.EqualizedConv2D(self.channels[r], 1, gain=L.SQRT2, use_wscale=use_wscale,
                                      activation=activation, name=f"fromrgb{r}")
            setattr(self, f"fromrgb{r}", layer)
            self.fromrgbs[r] = layer
        self.blocks = []
        for r in self.block_resolutions:
            block = DiscriminatorBlock(r, self.channels[r], self.channels[r // 2], use_wscale,
                                       activation, fused_scale, blur_filter, name=f"b{r}")
            setattr(self, f"b{r}", block)
            self.blocks.append(block)
        out_units = 1 + self.c_dim if label_mode == "auxiliary" else max(self.c_dim, 1)
        self.b4 = DiscriminatorEpilogue(self.channels[4], nf(0, **widths), out_units, use_wscale,
                                        activation, mbstd_group_size, mbstd_num_features,
                                        name="b4")
        self.fq_blocks, self.fq_layers = L.make_fq_layers(
            fq_blocks, self.block_resolutions,
            {r: self.channels[r // 2] for r in self.block_resolutions}, fq_num_embeddings,
            fq_decay, fq_commitment_cost, fq_forward, fq_zero_debias)
        self._fq_by_block = dict(zip(self.fq_blocks, self.fq_layers))
        self._config["fq_blocks"] = self.fq_blocks
        self.build()

    def build(self, input_shape=None):
        for r, layer in self.fromrgbs.items():
            layer.build((None, r, r, self.img_channels))
        for block in self.blocks:
            block.build()
        self.b4.build()
        self.built = True

    def active_fq_layers(self, resolution=None):
        """FQ layers that run for inputs of `resolution` (default full), in lookup order."""
        resolution = self.resolution if resolution is None else resolution
        return [fq for b, fq in zip(self.fq_blocks, self.fq_layers) if b <= resolution]

    def call(self, images, labels=None, lod=None, return_fq=False, return_label_logits=False):
        if images.shape.rank != 4 or images.shape[-1] != self.img_channels:
            raise ValueError(f"Discriminator: images must be (N, S, S, {self.img_channels}), "
                             f"got shape {tuple(images.shape)}.")
        stage = L.check_stage(images.shape[1], self.resolution, True, type(self).__name__)
        self._check_labels(labels, return_label_logits)
        img = tf.cast(images, self.compute_dtype)
        x = self.fromrgbs[stage](img)
        lookups = []
        for block in self.blocks:
            if block.resolution > stage:
                continue
            x = block(x)
            fq = self._fq_by_block.get(block.resolution)
            if fq is not None:
                x, lookup = fq(x, return_lookup=True)
                lookups.append(lookup)
            if lod is not None and block.resolution == stage:
                low = self.fromrgbs[stage // 2](L.downscale2d(img))
                x = L.lerp_clip(x, low, L.fade_coefficient(lod, self.resolution, stage))
        out = self.b4(x)
        if self.label_mode == "projection":
            logits = out if not self.c_dim else tf.reduce_sum(
                out * tf.cast(labels, tf.float32), axis=1, keepdims=True)
            outputs = [logits]
        else:
            outputs = [out[:, :1]] + ([out[:, 1:]] if return_label_logits else [])
        if return_fq:
            outputs.append(lookups)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _check_labels(self, labels, return_label_logits):
        name = type(self).__name__
        if self.label_mode == "auxiliary":
            if labels is not None:
                raise ValueError(f"{name}: the auxiliary-classifier D predicts labels and does not "
                                 "take them; use return_label_logits=True.")
            if return_label_logits and not self.c_dim:
                raise ValueError(f"{name}: return_label_logits needs c_dim > 0.")
        else:
            if return_label_logits:
                raise ValueError(f"{name}: return_label_logits needs label_mode='auxiliary'.")
            if self.c_dim and labels is None:
                raise ValueError(f"{name}: labels (N, {self.c_dim}) are required.")
            if not self.c_dim and labels is not None:
                raise ValueError(f"{name}: labels given to an unconditional network (c_dim=0).")

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config
