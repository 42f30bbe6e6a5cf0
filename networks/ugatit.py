"""U-GAT-IT (Kim et al., ICLR 2020) networks with feature quantization in the global
discriminators (FQ-U-GAT-IT).

Behaviour to match: `../shared/reference/ugatit.md` (numerical reference: the official PyTorch
code, znxlwm/UGATIT-pytorch). Reads top-down: padding and plain layers with PyTorch's default
init, the residual blocks, CAM, generator, discriminator, FQ presets and the six-network factory.
Layout NHWC; weights map from PyTorch by conv weight.permute(2, 3, 1, 0) and linear weight.T;
spectral-norm vectors keep PyTorch's ordering (`weight_u`, `weight_v`).

Conventions the trainers rely on:
- G(images, training) -> (images, cam_logit (N, 2), heatmap (N, H/4, W/4, 1)). The generator has
  no batch statistics or spectral norm, so `training` changes nothing; it is accepted for
  uniformity. After every generator optimiser step the trainer calls `G.clip_rho()` (the
  official RhoClipper: rho of every AdaILN / ILN clipped to [0, 1]).
- D(images, training, return_fq) -> (output (N, h, w, 1), cam_logit (N, 2), heatmap
  (N, h', w', 1)); with return_fq=True, ((output, cam_logit, heatmap), lookups) with lookups
  aligned with `D.fq_layers`. Each D evaluation in training mode runs one power iteration per
  spectral-norm layer (the official D is evaluated twice in the D step and once in the G step).
- Under tf.distribute every replica keeps identical spectral-norm vectors (see
  networks/normalization.py); instance / layer-instance norms are per sample, so N replicas equal
  one device with the global batch.
"""

import keras
import numpy as np
import tensorflow as tf

from fq_keras import FeatureQuantization
from networks.layers import leaky_relu, upscale2d
from networks.normalization import (AdaptiveLayerInstanceNorm, LayerInstanceNorm, SNConv2D,
                                    SNDense, fresh_initializer, instance_norm,
                                    pytorch_bias_initializer, pytorch_kernel_initializer,
                                    track_layers)

# Official FQ-U-GAT-IT dictionary size per discriminator conv index: K = 2^[5,6,7,7,7,7][i].
OFFICIAL_NUM_EMBEDDINGS = (32, 64, 128, 128, 128, 128)

# FQ placement and FeatureQuantization arguments for the global discriminators.
# official: FQ-U-GAT-IT TF code, `--quantization_layer 123`: after the LeakyReLU of convs 1, 2, 3
#   (128, 256, 512 channels at 64^2, 32^2, 16^2 for 256^2 input), K = 64, 128, 128, commitment
#   2.0, decay 0.85, zero-debiased EMA, dictionary N(0, 1), quantised tensor not fed forward.
# paper: one FQ on the 256-channel features (after conv 2), K = 2^10, decay 0.8, with the paper's
#   loss beta * ||sg(e) - h||^2, beta = 0.25 (the trainer's weight is alpha = 1.0) and the
#   quantised features fed forward.
FQ_PRESETS = {
    "official": dict(layers=(1, 2, 3), num_embeddings=(64, 128, 128), commitment_cost=2.0,
                     decay=0.85),
    "paper": dict(layers=(2,), num_embeddings=1024, commitment_cost=0.25, decay=0.8,
                  forward="quantized"),
}

#----------------------------------------------------------------------------
# Padding and plain layers.


def reflect_pad(x, p):
    """ReflectionPad2d(p) on NHWC."""
    return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")


def conv2d(filters, kernel_size, in_channels, strides=1, use_bias=False, name=None):
    """Conv2d without padding and with PyTorch's default init (U(+-1/sqrt(fan_in)))."""
    fan_in = kernel_size * kernel_size * in_channels
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding="valid", use_bias=use_bias, name=name,
        kernel_initializer=pytorch_kernel_initializer(),
        bias_initializer=pytorch_bias_initializer(fan_in))


def dense(units, name=None):
    """Linear without bias, PyTorch's default init."""
    return keras.layers.Dense(units, use_bias=False, name=name,
                              kernel_initializer=pytorch_kernel_initializer())


#----------------------------------------------------------------------------
# Blocks.


@keras.saving.register_keras_serializable(package="networks")
class ResnetBlock(keras.layers.Layer):
    """x + IN(conv3(pad1(relu(IN(conv3(pad1(x))))))), no biases (encoder bottleneck).

    Input shape: (N, H, W, C), H, W >= 2. Output: same.
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.conv1 = conv2d(channels, 3, channels, name="conv1")
        self.norm1 = instance_norm("norm1")
        self.conv2 = conv2d(channels, 3, channels, name="conv2")
        self.norm2 = instance_norm("norm2")
        padded = (input_shape[0], None, None, channels)
        for layer in (self.conv1, self.norm1, self.conv2, self.norm2):
            layer.build(padded)

    def call(self, inputs):
        h = tf.nn.relu(self.norm1(self.conv1(reflect_pad(inputs, 1))))
        h = self.norm2(self.conv2(reflect_pad(h, 1)))
        return inputs + h

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="networks")
class ResnetAdaILNBlock(keras.layers.Layer):
    """x + AdaILN(conv3(pad1(relu(AdaILN(conv3(pad1(x)), gamma, beta)))), gamma, beta).

    Input: x (N, H, W, C), gamma and beta (N, C); call(x, gamma, beta). Output: like x.
    """

    def build(self, input_shape):
        channels = int(input_shape[-1])
        self.conv1 = conv2d(channels, 3, channels, name="conv1")
        self.norm1 = AdaptiveLayerInstanceNorm(name="norm1")
        self.conv2 = conv2d(channels, 3, channels, name="conv2")
        self.norm2 = AdaptiveLayerInstanceNorm(name="norm2")
        padded = (input_shape[0], None, None, channels)
        for layer in (self.conv1, self.norm1, self.conv2, self.norm2):
            layer.build(padded)

    def call(self, inputs, gamma, beta):
        h = tf.nn.relu(self.norm1(self.conv1(reflect_pad(inputs, 1)), gamma, beta))
        h = self.norm2(self.conv2(reflect_pad(h, 1)), gamma, beta)
        return inputs + h

    def compute_output_shape(self, input_shape):
        return input_shape


def class_activation_map(x, gap_fc, gmp_fc, gap_weight, gmp_weight):
    """CAM attention of U-GAT-IT (Eq. 1-2) on NHWC features.

    gap_logit = gap_fc(mean_HW x), gmp_logit = gmp_fc(max_HW x); the features are re-weighted
    per channel by the fc weights: concat[x * w_gap, x * w_gmp] (2C channels, gap first).

    Args:
      x: (N, H, W, C). gap_fc / gmp_fc: callables (N, C) -> (N, 1).
      gap_weight / gmp_weight: (C,) weights used for the re-weighting (the raw weights, also in
        the spectrally normalised discriminator, as the official code).
    Returns:
      (features (N, H, W, 2C), cam_logit (N, 2)).
    """
    gap_logit = gap_fc(tf.reduce_mean(x, axis=[1, 2]))
    gmp_logit = gmp_fc(tf.reduce_max(x, axis=[1, 2]))
    gap = x * tf.cast(gap_weight, x.dtype)
    gmp = x * tf.cast(gmp_weight, x.dtype)
    return tf.concat([gap, gmp], axis=-1), tf.concat([gap_logit, gmp_logit], axis=-1)

#----------------------------------------------------------------------------
# The CAM heatmap as the official code shows it (`cam()` of its training strips and test phase).


def jet_colormap(values):
    """uint8 (...) -> float32 (..., 3) RGB in [0, 1], the JET map of cv2.COLORMAP_JET
    (MATLAB jet: dark blue, blue, cyan, yellow, red, dark red; piecewise linear)."""
    x = np.asarray(values, np.float32) / 255.0
    channels = [np.clip(1.5 - np.abs(4.0 * x - c), 0.0, 1.0) for c in (3.0, 2.0, 1.0)]
    return np.stack(channels, axis=-1)


def jet_table():
    """uint8 (256, 3): jet_colormap of every uint8 level, as cam_heatmap rounds it."""
    return np.uint8(np.rint(255 * jet_colormap(np.arange(256))))


def cam_heatmap(heatmap, size, table=None):
    """The official `cam()` in TensorFlow ops (tf.function-safe; strips, translation, export).

    Args:
      heatmap: float (N, h, w, 1), the generator's channel-summed attention features.
      size: output side S.
      table: jet_table() (passed in so that a traced function holds it once).
    Returns:
      uint8 (N, S, S, 3): per image x <- (x - min) / (max - min) (0 where the map is
      constant), uint8(255 x) (truncation, as np.uint8), bilinear resize to S x S, round,
      JET colours.
    """
    table = jet_table() if table is None else table
    x = tf.cast(heatmap, tf.float32)
    x = x - tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
    peak = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
    x = tf.where(peak > 0, x / tf.where(peak > 0, peak, 1.0), 0.0)
    levels = tf.cast(tf.cast(255.0 * x, tf.uint8), tf.float32)
    resized = tf.image.resize(levels, [size, size], "bilinear")
    index = tf.cast(tf.clip_by_value(tf.math.rint(resized), 0.0, 255.0), tf.int32)
    return tf.gather(tf.constant(table), index[..., 0])


#----------------------------------------------------------------------------
# Generator.


@keras.saving.register_keras_serializable(package="networks")
class UGATITGenerator(keras.Model):
    """U-GAT-IT ResnetGenerator with CAM and AdaILN.

    Encoder: pad3, conv7 -> IN -> ReLU; 2 x [pad1, conv3 stride 2, IN, ReLU] (ngf -> 4 ngf);
    n_blocks ResnetBlocks. CAM (plain linear gap_fc / gmp_fc, conv1x1 2C -> C with bias, ReLU),
    heatmap = channel sum. MLP (no biases) -> gamma, beta. Decoder: n_blocks ResnetAdaILNBlocks;
    2 x [nearest x2, pad1, conv3, ILN, ReLU]; pad3, conv7 -> output_channels, tanh. No conv
    biases except conv1x1.

    Args:
      ngf: base width (64). n_blocks: residual blocks on each side (4 in U-GAT-IT).
      light: True = the MLP sees avgpool(x) (C values; 10.59M parameters at ngf=64, any image
        size); False = full mode: the MLP sees x flattened, (img_size/4)^2 * 4 ngf values
        (1,048,576 at 256^2: 268M parameters in that layer, 278.96M in total), so images must be
        img_size x img_size.
      img_size: image size of full mode (divisible by 4); ignored in light mode.
      output_channels: 3.

    The full-mode flatten is in NCHW order (channel-major), as PyTorch's x.view(N, -1): the
    first MLP weight of an official checkpoint then imports as a plain transpose.

    Call: G(images (N, H, W, C_in) in [-1, 1], training=None) ->
      (images (N, H, W, output_channels), cam_logit (N, 2), heatmap (N, H/4, W/4, 1)).
      H and W divisible by 4 and >= 8.
    """

    def __init__(self, ngf=64, n_blocks=4, light=True, img_size=256, output_channels=3,
                 **kwargs):
        super().__init__(**kwargs)
        for name, value in (("ngf", ngf), ("img_size", img_size),
                            ("output_channels", output_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UGATITGenerator: {name} must be a positive integer, got {value!r}.")
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"UGATITGenerator: n_blocks must be an integer >= 0, got {n_blocks!r}.")
        if not light and (img_size % 4 or img_size < 8):
            raise ValueError(f"UGATITGenerator: full mode needs img_size divisible by 4 and >= 8, "
                             f"got {img_size}.")
        self.ngf = ngf
        self.n_blocks = n_blocks
        self.light = bool(light)
        self.img_size = img_size
        self.output_channels = output_channels
        channels = 4 * ngf
        self.channels = channels

        self.conv_in = None  # created in build (needs the input channel count)
        self.norm_in = instance_norm("norm_in")
        track_layers(self, "down_convs", [conv2d(ngf * 2 ** (i + 1), 3, ngf * 2 ** i, strides=2,
                                                 name=f"down_conv{i}") for i in range(2)],
                     "down_conv")
        track_layers(self, "down_norms", [instance_norm(f"down_norm{i}") for i in range(2)],
                     "down_norm")
        track_layers(self, "down_blocks", [ResnetBlock(name=f"resblock{i}")
                                           for i in range(n_blocks)], "resblock")
        self.gap_fc = dense(1, "gap_fc")
        self.gmp_fc = dense(1, "gmp_fc")
        self.conv1x1 = conv2d(channels, 1, 2 * channels, use_bias=True, name="conv1x1")
        track_layers(self, "fc", [dense(channels, "fc0"), dense(channels, "fc1")], "fc")
        self.gamma = dense(channels, "gamma")
        self.beta = dense(channels, "beta")
        track_layers(self, "up_blocks", [ResnetAdaILNBlock(name=f"adailn_block{i}")
                                         for i in range(n_blocks)], "adailn_block")
        track_layers(self, "up_convs", [conv2d(channels // 2 ** (i + 1), 3, channels // 2 ** i,
                                               name=f"up_conv{i}") for i in range(2)], "up_conv")
        track_layers(self, "up_norms", [LayerInstanceNorm(name=f"up_norm{i}") for i in range(2)],
                     "up_norm")
        self.conv_out = conv2d(output_channels, 7, ngf, name="conv_out")

    def _check_images_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(f"UGATITGenerator: images must be NHWC, got shape {tuple(shape)}.")
        h, w = shape[1], shape[2]
        for s in (h, w):
            if s is not None and (s % 4 or s < 8):
                raise ValueError(f"UGATITGenerator: image height and width must be divisible by 4 "
                                 f"and >= 8, got {h}x{w}.")
        if not self.light and (h, w) != (self.img_size, self.img_size):
            raise ValueError(f"UGATITGenerator: full mode was built for {self.img_size}x"
                             f"{self.img_size} images (its MLP input is the flattened features), "
                             f"got {h}x{w}. Use light=True for other sizes.")

    def build(self, images_shape):
        self._check_images_shape(images_shape)
        batch, in_channels = images_shape[0], int(images_shape[-1])
        ngf, channels = self.ngf, self.channels
        self.conv_in = conv2d(ngf, 7, in_channels, name="conv_in")
        self.conv_in.build((batch, None, None, in_channels))
        self.norm_in.build((batch, None, None, ngf))
        for i in range(2):
            self.down_convs[i].build((batch, None, None, ngf * 2 ** i))
            self.down_norms[i].build((batch, None, None, ngf * 2 ** (i + 1)))
        feature_shape = (batch, None, None, channels)
        for block in self.down_blocks + self.up_blocks:
            block.build(feature_shape)
        self.gap_fc.build((batch, channels))
        self.gmp_fc.build((batch, channels))
        self.conv1x1.build((batch, None, None, 2 * channels))
        mlp_in = channels if self.light else (self.img_size // 4) ** 2 * channels
        self.fc[0].build((batch, mlp_in))
        self.fc[1].build((batch, channels))
        self.gamma.build((batch, channels))
        self.beta.build((batch, channels))
        for i in range(2):
            self.up_convs[i].build((batch, None, None, channels // 2 ** i))
            self.up_norms[i].build((batch, None, None, channels // 2 ** (i + 1)))
        self.conv_out.build((batch, None, None, ngf))
        self.built = True

    def call(self, images, training=None):
        x, cam_logit, heatmap = self.encode(images)
        gamma, beta = self.adaptive_params(x)
        return self.decode(x, gamma, beta), cam_logit, heatmap

    def encode(self, images):
        """Encoder and CAM: (features (N, H/4, W/4, 4 ngf) after conv1x1 + ReLU, cam_logit
        (N, 2), heatmap (N, H/4, W/4, 1))."""
        self._check_images_shape(images.shape)
        if not self.built:
            self.build(tuple(images.shape))
        x = tf.nn.relu(self.norm_in(self.conv_in(reflect_pad(images, 3))))
        for conv, norm in zip(self.down_convs, self.down_norms):
            x = tf.nn.relu(norm(conv(reflect_pad(x, 1))))
        for block in self.down_blocks:
            x = block(x)
        x, cam_logit = class_activation_map(x, self.gap_fc, self.gmp_fc,
                                            self.gap_fc.kernel[:, 0], self.gmp_fc.kernel[:, 0])
        x = tf.nn.relu(self.conv1x1(x))
        return x, cam_logit, tf.reduce_sum(x, axis=-1, keepdims=True)

    def adaptive_params(self, x):
        """AdaILN (gamma, beta), each (N, 4 ngf), from the encoder features by the MLP."""
        if self.light:
            mlp_in = tf.reduce_mean(x, axis=[1, 2])
        else:
            # NCHW flatten order (see class docstring).
            mlp_in = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [tf.shape(x)[0], -1])
        h = tf.nn.relu(self.fc[1](tf.nn.relu(self.fc[0](mlp_in))))
        return self.gamma(h), self.beta(h)

    def decode(self, x, gamma, beta):
        """AdaILN residual blocks and up-sampling: images (N, H, W, output_channels)."""
        for block in self.up_blocks:
            x = block(x, gamma, beta)
        for conv, norm in zip(self.up_convs, self.up_norms):
            x = upscale2d(x)
            x = tf.nn.relu(norm(conv(reflect_pad(x, 1))))
        return tf.tanh(self.conv_out(reflect_pad(x, 3)))

    def rho_layers(self):
        """Every AdaILN / ILN layer (the ones holding a rho)."""
        return ([b.norm1 for b in self.up_blocks] + [b.norm2 for b in self.up_blocks]
                + list(self.up_norms))

    def clip_rho(self):
        """Clip every rho to [0, 1]; call after each generator optimiser step (works inside
        tf.function and in a tf.distribute replica context)."""
        for layer in self.rho_layers():
            layer.clip_rho()

    def get_config(self):
        return {"name": self.name, "ngf": self.ngf, "n_blocks": self.n_blocks,
                "light": self.light, "img_size": self.img_size,
                "output_channels": self.output_channels}

#----------------------------------------------------------------------------
# Discriminator.


def min_discriminator_size(n_layers):
    """Smallest image size a U-GAT-IT discriminator accepts: its n_layers - 2 stride-2 convs
    leave floor(size / 2^(n_layers-2)) pixels, and the two stride-1 layers after them need
    >= 2 pixels each for the reflection padding, so that must be >= 3."""
    return 3 * 2 ** (n_layers - 2)


def max_discriminator_layers(size):
    """Largest n_layers whose discriminator accepts size x size images (7 needs >= 96)."""
    n = 3
    while min_discriminator_size(n + 1) <= size:
        n += 1
    return n


@keras.saving.register_keras_serializable(package="networks")
class UGATITDiscriminator(keras.Model):
    """U-GAT-IT discriminator (global: n_layers=7, local: n_layers=5) with CAM and optional FQ.

    Convs i = 0..n_layers-2, all spectrally normalised (PyTorch semantics), 4x4 with bias after
    reflection padding 1, each followed by LeakyReLU(0.2): convs 0..n_layers-3 stride 2 with
    ndf * 2^i channels, conv n_layers-2 stride 1 with ndf * 2^(n_layers-2). CAM: SN gap_fc /
    gmp_fc (no bias; the re-weighting uses their raw kernels, the logits W/sigma), plain conv1x1
    2C -> C with bias, LeakyReLU(0.2), heatmap = channel sum. Output: pad 1, SN conv 4x4 -> 1,
    no bias.

    Args:
      ndf: base width (64). n_layers: 7 (global) or 5 (local); >= 3.
      fq_layers: conv indices after whose LeakyReLU an FQ layer sits (official global D:
        (1, 2, 3)); valid indices 0..n_layers-2, anything else raises ValueError.
      fq_kwargs: FeatureQuantization arguments. `num_embeddings` may be an int, one value per
        FQ layer, or absent (the official 2^[5,6,7,7,7,7][i]). Defaults: commitment_cost 2.0,
        decay 0.85, N(0, 1) dictionary (official FQ-U-GAT-IT), zero-debiased EMA,
        forward="continuous".

    Call: D(images (N, H, W, C), training=None, return_fq=False) -> (output (N, h, w, 1),
      cam_logit (N, 2), heatmap (N, h + 1, w + 1, 1)); with return_fq ((...), lookups).
      H, W >= min_discriminator_size(n_layers) (96 global, 24 local). At 256^2: global output
      6x6 (53.13M parameters), local 30x30 (3.29M).
    """

    def __init__(self, ndf=64, n_layers=7, fq_layers=(), fq_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        for name, value, minimum in (("ndf", ndf, 1), ("n_layers", n_layers, 3)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"UGATITDiscriminator: {name} must be an integer >= {minimum}, "
                                 f"got {value!r}.")
        self.ndf = ndf
        self.n_layers = n_layers
        num_convs = n_layers - 1
        fq_layers = tuple(int(i) for i in fq_layers)
        bad = [i for i in fq_layers if not 0 <= i < num_convs]
        if bad or len(set(fq_layers)) != len(fq_layers):
            raise ValueError(f"UGATITDiscriminator: fq_layers {list(fq_layers)} must be distinct conv "
                             f"indices of this n_layers={n_layers} discriminator; valid: "
                             f"{list(range(num_convs))}.")
        self.fq_layer_indices = tuple(sorted(fq_layers))
        self.fq_kwargs = dict(fq_kwargs or {})
        sizes = self.fq_kwargs.get("num_embeddings")
        if sizes is None:
            sizes = {i: OFFICIAL_NUM_EMBEDDINGS[min(i, 5)] for i in fq_layers}
        elif isinstance(sizes, (list, tuple)):
            if len(sizes) != len(fq_layers):
                raise ValueError(f"UGATITDiscriminator: fq_kwargs['num_embeddings'] has "
                                 f"{len(sizes)} values for {len(fq_layers)} FQ layers.")
            sizes = dict(zip(fq_layers, sizes))
        else:
            sizes = {i: sizes for i in fq_layers}

        self.conv_channels = [ndf * 2 ** i for i in range(num_convs)]
        track_layers(self, "convs", [SNConv2D(c, 4, strides=2 if i < num_convs - 1 else 1,
                                              use_bias=True, sn_mode="pytorch", name=f"conv{i}")
                                     for i, c in enumerate(self.conv_channels)], "conv")
        fq_by_conv = {}
        for i in self.fq_layer_indices:
            layer_kwargs = {k: v for k, v in self.fq_kwargs.items() if k != "num_embeddings"}
            layer_kwargs.setdefault("commitment_cost", 2.0)
            layer_kwargs.setdefault("decay", 0.85)
            layer_kwargs["embeddings_initializer"] = fresh_initializer(layer_kwargs.get(
                "embeddings_initializer", keras.initializers.RandomNormal(stddev=1.0)))
            fq_by_conv[i] = FeatureQuantization(sizes[i], name=f"fq{i}", **layer_kwargs)
        track_layers(self, "fq_by_conv", fq_by_conv, "fq")
        # The discriminator's FQ layers in order (fq_keras.update_dictionaries takes this list).
        object.__setattr__(self, "fq_layers", [fq_by_conv[i] for i in self.fq_layer_indices])
        channels = self.conv_channels[-1]
        self.gap_fc = SNDense(1, use_bias=False, sn_mode="pytorch", name="gap_fc")
        self.gmp_fc = SNDense(1, use_bias=False, sn_mode="pytorch", name="gmp_fc")
        self.conv1x1 = conv2d(channels, 1, 2 * channels, use_bias=True, name="conv1x1")
        self.conv_out = SNConv2D(1, 4, use_bias=False, sn_mode="pytorch", name="conv_out")

    def _check_images_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(f"UGATITDiscriminator: images must be NHWC, got shape {tuple(shape)}.")
        minimum = min_discriminator_size(self.n_layers)
        for s in (shape[1], shape[2]):
            if s is not None and s < minimum:
                raise ValueError(
                    f"UGATITDiscriminator(n_layers={self.n_layers}) needs images of at least "
                    f"{minimum}x{minimum}, got {shape[1]}x{shape[2]}: the reflection padding "
                    f"of its last layers needs >= 2 pixels. Use larger images or fewer layers "
                    f"(n_layers <= {max_discriminator_layers(min(d for d in shape[1:3] if d))}).")

    def build(self, images_shape):
        self._check_images_shape(images_shape)
        batch, channels = images_shape[0], int(images_shape[-1])
        for i, conv in enumerate(self.convs):
            conv.build((batch, None, None, channels))
            channels = self.conv_channels[i]
            if i in self.fq_by_conv:
                self.fq_by_conv[i].build((batch, None, None, channels))
        self.gap_fc.build((batch, channels))
        self.gmp_fc.build((batch, channels))
        self.conv1x1.build((batch, None, None, 2 * channels))
        self.conv_out.build((batch, None, None, channels))
        self.built = True

    def call(self, images, training=None, return_fq=False):
        self._check_images_shape(images.shape)
        training = bool(training)
        x = images
        lookups = []
        for i, conv in enumerate(self.convs):
            x = leaky_relu(conv(reflect_pad(x, 1), training=training))
            if i in self.fq_by_conv:
                x, lookup = self.fq_by_conv[i](x, return_lookup=True)
                lookups.append(lookup)

        def gap_fc(h):
            return self.gap_fc(h, training=training)

        def gmp_fc(h):
            return self.gmp_fc(h, training=training)

        # Official quirk: the re-weighting uses the raw weights (weight_orig), the logits W/sigma.
        x, cam_logit = class_activation_map(x, gap_fc, gmp_fc, self.gap_fc.kernel[:, 0],
                                            self.gmp_fc.kernel[:, 0])
        x = leaky_relu(self.conv1x1(x))
        heatmap = tf.reduce_sum(x, axis=-1, keepdims=True)
        out = self.conv_out(reflect_pad(x, 1), training=training)
        outputs = (out, cam_logit, heatmap)
        return (outputs, lookups) if return_fq else outputs

    def get_config(self):
        fq_kwargs = {k: (keras.initializers.serialize(keras.initializers.get(v))
                         if k == "embeddings_initializer" else v)
                     for k, v in self.fq_kwargs.items()}
        return {"name": self.name, "ndf": self.ndf, "n_layers": self.n_layers,
                "fq_layers": list(self.fq_layer_indices), "fq_kwargs": fq_kwargs}

#----------------------------------------------------------------------------
# The six networks.


def fq_preset(name):
    """(fq_layers, fq_kwargs) of a preset in FQ_PRESETS ("official" or "paper")."""
    if name not in FQ_PRESETS:
        raise ValueError(f"U-GAT-IT: unknown FQ preset {name!r}; choose one of {sorted(FQ_PRESETS)}.")
    kwargs = dict(FQ_PRESETS[name])
    return kwargs.pop("layers"), kwargs


def make_ugatit(light=True, img_size=256, ngf=64, ndf=64, n_blocks=4, fq="official",
                fq_layers=None, fq_kwargs=None, global_layers=7, local_layers=5):
    """The six U-GAT-IT networks under the official checkpoint names.

    Args:
      light, img_size, ngf, n_blocks: generator arguments. ndf: discriminator width.
      fq: FQ preset name for the two global discriminators ("official", "paper"), or None for
        the U-GAT-IT baseline. The local discriminators never quantise.
      fq_layers, fq_kwargs: override the preset's placement / arguments.
      global_layers, local_layers: n_layers of the discriminators (official 7 and 5; the global
        one needs >= 96x96 images, `max_discriminator_layers(size)` gives what fits smaller ones).

    Returns:
      dict genA2B, genB2A (UGATITGenerator), disGA, disGB (global, n_layers=7, each with its own
      dictionaries), disLA, disLB (local, n_layers=5).
    """
    layers, kwargs = fq_preset(fq) if fq is not None else ((), {})
    layers = layers if fq_layers is None else tuple(fq_layers)
    kwargs = kwargs if fq_kwargs is None else dict(fq_kwargs)
    nets = {}
    for name in ("genA2B", "genB2A"):
        nets[name] = UGATITGenerator(ngf=ngf, n_blocks=n_blocks, light=light, img_size=img_size,
                                     name=name)
    for name in ("disGA", "disGB"):
        nets[name] = UGATITDiscriminator(ndf=ndf, n_layers=global_layers, fq_layers=layers,
                                         fq_kwargs=kwargs, name=name)
    for name in ("disLA", "disLB"):
        nets[name] = UGATITDiscriminator(ndf=ndf, n_layers=local_layers, name=name)
    return nets
