"""BigGAN (Brock et al., ICLR 2019) with feature quantization, as FQ-BigGAN / BigGAN-PyTorch.

Behaviour to match: `../shared/reference/biggan.md`. Reads top-down: architecture tables and
presets, self-attention, the generator and discriminator residual blocks, the two networks.
Layout is NHWC; weights keep PyTorch's semantics so BigGAN-PyTorch / FQ-BigGAN state dicts map
onto them by transposition only (conv weight.permute(2, 3, 1, 0), linear weight.T, embedding
tables as they are, SN u0 and BN stored_mean / stored_var unchanged).

Conventions the trainers rely on:
- `G(z, labels, training)` and `D(images, labels, training, return_fq)` take **integer class
  labels** (N,), not one-hot vectors; the official code also passes class indices (one-hot
  dataset labels are converted with argmax by the caller).
- `training=True` is PyTorch's `.train()`: batch statistics in the batch norms (running
  statistics updated), spectral-norm u updated. `False` is `.eval()`. BigGAN samples for metrics
  from G_ema in train mode (batch statistics): pass `training=True` to sample that way.
- Batch norm under tf.distribute: each replica normalises with its own batch statistics, as
  BigGAN-PyTorch without `--cross_replica` (so N replicas do NOT equal one device for G's
  outputs); running statistics are updated from moments all-reduced over replicas and stay
  identical everywhere. `cross_replica=True` synchronises the normalisation too.
- Spectral-norm u vectors are updated in every training forward (of G and of D, as the
  official code) and stay identical across replicas (see networks/normalization.py).
- FQ: `D.fq_layers` holds the FeatureQuantization layers, `D.fq_layer_indices` the D blocks they
  follow; `D(..., return_fq=True)` returns (logits, lookups) with lookups aligned with
  `D.fq_layers`. The quantised tensor is not fed forward by default (official code); the EMA
  dictionary update is the trainer's job, once per D step (fq_keras.update_dictionaries).
"""

import keras
import tensorflow as tf

from fq_keras import FeatureQuantization
from networks.layers import unfused_relu
from networks.normalization import (BatchNorm, ConditionalBatchNorm, SNConv2D, SNDense,
                                    SNEmbedding, fresh_initializer, track_layers)

# Channel multipliers per block (times `ch`), as BigGAN-PyTorch's G_arch / D_arch.
G_ARCH = {
    32: dict(in_channels=(4, 4, 4), out_channels=(4, 4, 4), resolution=(8, 16, 32)),
    64: dict(in_channels=(16, 16, 8, 4), out_channels=(16, 8, 4, 2), resolution=(8, 16, 32, 64)),
}
# D's first in_channels is the 3 image channels; resolution is each block's output resolution
# (BigGAN-PyTorch lists 16 for all four CIFAR blocks; attention looks it up).
D_ARCH = {
    32: dict(out_channels=(4, 4, 4, 4), downsample=(True, True, False, False),
             resolution=(16, 16, 16, 16)),
    64: dict(out_channels=(1, 2, 4, 8, 16), downsample=(True, True, True, True, False),
             resolution=(32, 16, 8, 4, 4)),
}

INITS = ("N02", "ortho")

# Architecture and FQ presets of the official launch scripts (scripts/launch_C10.sh,
# launch_C100.sh, launch_I64_bs128x4.sh). `fq` holds the D's FQ placement and
# FeatureQuantization arguments: PyTorch EMA variant (no zero debiasing, m_0 = initial
# dictionary), dictionary initialised N(0, 1), quantised tensor not fed forward.
PRESETS = {
    "cifar10": dict(
        resolution=32, num_classes=10, ch=64, dim_z=128, shared_dim=0, hier=False,
        attention=(), init="N02", sn_epsilon=1e-8,
        fq=dict(layers=(0, 1, 2, 3), num_embeddings=1024, commitment_cost=1.0, decay=0.8)),
    "cifar100": dict(
        resolution=32, num_classes=100, ch=64, dim_z=128, shared_dim=0, hier=False,
        attention=(), init="N02", sn_epsilon=1e-8,
        fq=dict(layers=(0, 1, 2, 3), num_embeddings=64, commitment_cost=10.0, decay=0.9)),
    "imagenet64": dict(
        resolution=64, num_classes=1000, ch=64, dim_z=120, shared_dim=128, hier=True,
        attention=(32,), init="ortho", sn_epsilon=1e-6,
        fq=dict(layers=(2,), num_embeddings=1024, commitment_cost=0.5, decay=0.7)),
}


def kernel_initializer(init):
    """A fresh weight initializer: "N02" = N(0, 0.02), "ortho" = orthogonal (gain 1).

    Keras' Orthogonal flattens a (k, k, I, O) kernel to (k*k*I, O) and PyTorch's orthogonal_
    flattens (O, I, k, k) to (O, I*k*k): the same orthogonality up to a transpose and a row
    permutation.
    """
    if init == "N02":
        return keras.initializers.RandomNormal(stddev=0.02)
    if init == "ortho":
        return keras.initializers.Orthogonal()
    raise ValueError(f"BigGAN: init must be one of {INITS}, got {init!r}.")


def make_biggan(preset="cifar10", fq=True, **overrides):
    """(generator, discriminator) of a preset, e.g. make_biggan("cifar100", fq=False).

    Args:
      preset: a key of PRESETS.
      fq: True = the preset's FQ layers and arguments; False = the BigGAN baseline (no FQ).
      **overrides: architecture arguments replacing the preset's (e.g. ch=8 for a small test
        network, num_classes=5); `fq_layers` / `fq_kwargs` override the FQ settings.
    """
    if preset not in PRESETS:
        raise ValueError(f"make_biggan: unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    config = dict(PRESETS[preset])
    fq_preset = dict(config.pop("fq"))
    fq_layers = overrides.pop("fq_layers", fq_preset.pop("layers") if fq else ())
    fq_kwargs = overrides.pop("fq_kwargs", fq_preset)
    config.update(overrides)
    shared = ("resolution", "num_classes", "ch", "attention", "init", "sn_epsilon",
              "cross_replica")
    g_keys = shared + ("dim_z", "shared_dim", "hier", "bn_epsilon")
    unknown = set(config) - set(g_keys)
    if unknown:
        raise ValueError(f"make_biggan: unknown arguments {sorted(unknown)}; valid: {sorted(g_keys)}.")
    generator = BigGANGenerator(**{k: v for k, v in config.items() if k in g_keys})
    discriminator = BigGANDiscriminator(
        **{k: v for k, v in config.items() if k in shared and k != "cross_replica"},
        fq_layers=fq_layers, fq_kwargs=fq_kwargs)
    return generator, discriminator


def _check_attention(attention, resolutions, owner):
    attention = tuple(int(a) for a in attention)
    bad = [a for a in attention if a not in resolutions]
    if bad:
        raise ValueError(f"{owner}: attention resolutions {bad} do not exist in this network; "
                         f"valid: {sorted(set(resolutions))}.")
    return attention

#----------------------------------------------------------------------------
# Blocks.


@keras.saving.register_keras_serializable(package="networks")
class Attention(keras.layers.Layer):
    """SA-GAN self-attention as released in BigGAN-PyTorch (`layers.Attention`).

    theta = conv1x1(x) (C/8); phi = maxpool2(conv1x1(x)) (C/8); g = maxpool2(conv1x1(x)) (C/2);
    beta = softmax(theta phi^T) over the pooled positions; out = x + gamma * conv1x1(beta g),
    all 1x1 convs spectrally normalised without bias, gamma a learned scalar initialised to 0.

    Input shape: (N, H, W, C), H and W even, C divisible by 8. Output: same.
    """

    def __init__(self, init="N02", sn_epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.init = init
        self.sn_epsilon = float(sn_epsilon)
        kernel_initializer(init)  # validates

    def build(self, input_shape):
        channels = int(input_shape[-1])
        if channels % 8:
            raise ValueError(f"Attention '{self.name}': channels must be divisible by 8, got "
                             f"{channels}.")
        self.channels = channels

        def conv(filters, name):
            return SNConv2D(filters, 1, use_bias=False, sn_mode="biggan",
                            sn_epsilon=self.sn_epsilon, name=name,
                            kernel_initializer=kernel_initializer(self.init))

        self.theta = conv(channels // 8, "theta")
        self.phi = conv(channels // 8, "phi")
        self.g = conv(channels // 2, "g")
        self.o = conv(channels, "o")
        for layer in (self.theta, self.phi, self.g):
            layer.build(input_shape)
        self.o.build(tuple(input_shape[:-1]) + (channels // 2,))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, inputs, training=None):
        shape = tf.shape(inputs)
        n, h, w = shape[0], shape[1], shape[2]
        theta = self.theta(inputs, training=training)
        phi = tf.nn.max_pool2d(self.phi(inputs, training=training), 2, 2, "VALID")
        g = tf.nn.max_pool2d(self.g(inputs, training=training), 2, 2, "VALID")
        theta = tf.reshape(theta, [n, -1, self.channels // 8])    # [N, HW, C/8]
        phi = tf.reshape(phi, [n, -1, self.channels // 8])        # [N, HW/4, C/8]
        g = tf.reshape(g, [n, -1, self.channels // 2])            # [N, HW/4, C/2]
        logits = tf.matmul(tf.cast(theta, tf.float32), tf.cast(phi, tf.float32), transpose_b=True)
        beta = tf.cast(tf.nn.softmax(logits, axis=-1), g.dtype)   # [N, HW, HW/4]
        o = tf.reshape(tf.matmul(beta, g), [n, h, w, self.channels // 2])
        return inputs + tf.cast(self.gamma, inputs.dtype) * self.o(o, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"init": self.init, "sn_epsilon": self.sn_epsilon})
        return config


@keras.saving.register_keras_serializable(package="networks")
class GBlock(keras.layers.Layer):
    """Generator residual block (BigGAN-PyTorch `GBlock`), always upsampling by 2:

        h = conv2(relu(ccbn2(conv1(up(relu(ccbn1(x, y)))), y)))      3x3 SN convs
        out = h + conv_sc(up(x))                                      1x1 SN conv

    Args:
      out_channels: output channels.
      num_classes: class count when y is int labels (CIFAR); None when y is a float condition
        vector (shared embedding, optionally with a z chunk).
      init, sn_epsilon, bn_epsilon, cross_replica: as the generator.

    Input: x (N, H, W, C_in), y (N,) int or (N, D) float; call(x, y, training).
    Output: (N, 2H, 2W, out_channels).
    """

    def __init__(self, out_channels, num_classes=None, init="N02", sn_epsilon=1e-8,
                 bn_epsilon=1e-5, cross_replica=False, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.num_classes = num_classes
        self.init = init
        self.sn_epsilon = float(sn_epsilon)
        self.bn_epsilon = float(bn_epsilon)
        self.cross_replica = bool(cross_replica)
        kernel_initializer(init)

    def build(self, inputs_shape, condition_shape=None):
        in_channels = int(inputs_shape[-1])
        sn = dict(sn_mode="biggan", sn_epsilon=self.sn_epsilon)

        def conv(filters, k, name):
            return SNConv2D(filters, k, padding="same", name=name,
                            kernel_initializer=kernel_initializer(self.init), **sn)

        def ccbn(name):
            return ConditionalBatchNorm(num_classes=self.num_classes, epsilon=self.bn_epsilon,
                                        cross_replica=self.cross_replica, name=name,
                                        embeddings_initializer=kernel_initializer(self.init),
                                        sn_kwargs=sn)

        up_shape = (inputs_shape[0], None, None, in_channels)
        self.bn1 = ccbn("bn1")
        self.bn1.build(inputs_shape, condition_shape)
        self.conv1 = conv(self.out_channels, 3, "conv1")
        self.conv1.build(up_shape)
        out_shape = (inputs_shape[0], None, None, self.out_channels)
        self.bn2 = ccbn("bn2")
        self.bn2.build(out_shape, condition_shape)
        self.conv2 = conv(self.out_channels, 3, "conv2")
        self.conv2.build(out_shape)
        # BigGAN: learnable_sc = in != out or upsample; these blocks always upsample.
        self.conv_sc = conv(self.out_channels, 1, "conv_sc")
        self.conv_sc.build(up_shape)

    def call(self, inputs, condition, training=None):
        h = tf.nn.relu(self.bn1(inputs, condition, training=training))
        h = _upsample2(h)
        x = _upsample2(inputs)
        h = self.conv1(h, training=training)
        h = tf.nn.relu(self.bn2(h, condition, training=training))
        h = self.conv2(h, training=training)
        return h + self.conv_sc(x, training=training)

    def get_config(self):
        config = super().get_config()
        config.update({"out_channels": self.out_channels, "num_classes": self.num_classes,
                       "init": self.init, "sn_epsilon": self.sn_epsilon,
                       "bn_epsilon": self.bn_epsilon, "cross_replica": self.cross_replica})
        return config


def _upsample2(x):
    """Nearest-neighbour x2 (F.interpolate(scale_factor=2), nearest)."""
    x = tf.repeat(x, 2, axis=1)
    return tf.repeat(x, 2, axis=2)


def _avgpool2(x):
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


@keras.saving.register_keras_serializable(package="networks")
class DBlock(keras.layers.Layer):
    """Discriminator residual block (BigGAN-PyTorch `DBlock`, wide: hidden = out channels).

    preactivation (blocks 1+):  h = conv2(relu(conv1(relu(x)))) [-> avgpool2]
                                shortcut = conv_sc(x) [-> avgpool2]  (conv_sc only when the
                                channel count changes or the block downsamples)
    first block (no preact.):   h = conv2(relu(conv1(x))) -> avgpool2
                                shortcut = conv_sc(avgpool2(x))

    Input: (N, H, W, C_in). Output: (N, H/2 or H, W/2 or W, out_channels).
    """

    def __init__(self, out_channels, downsample=True, preactivation=True, init="N02",
                 sn_epsilon=1e-8, **kwargs):
        super().__init__(**kwargs)
        self.out_channels = int(out_channels)
        self.downsample = bool(downsample)
        self.preactivation = bool(preactivation)
        self.init = init
        self.sn_epsilon = float(sn_epsilon)
        kernel_initializer(init)

    def build(self, input_shape):
        in_channels = int(input_shape[-1])

        def conv(filters, k, name, shape):
            layer = SNConv2D(filters, k, padding="same", sn_mode="biggan",
                             sn_epsilon=self.sn_epsilon, name=name,
                             kernel_initializer=kernel_initializer(self.init))
            layer.build(shape)
            return layer

        hidden_shape = tuple(input_shape[:-1]) + (self.out_channels,)
        self.conv1 = conv(self.out_channels, 3, "conv1", input_shape)
        self.conv2 = conv(self.out_channels, 3, "conv2", hidden_shape)
        self.learnable_sc = in_channels != self.out_channels or self.downsample
        if self.learnable_sc:
            self.conv_sc = conv(self.out_channels, 1, "conv_sc", input_shape)

    def _shortcut(self, x, training):
        if self.preactivation:
            if self.learnable_sc:
                x = self.conv_sc(x, training=training)
            if self.downsample:
                x = _avgpool2(x)
        else:
            if self.downsample:
                x = _avgpool2(x)
            if self.learnable_sc:
                x = self.conv_sc(x, training=training)
        return x

    def call(self, inputs, training=None):
        # The input is the previous block's residual sum, which the shortcut reads too.
        h = unfused_relu(inputs) if self.preactivation else inputs
        h = self.conv1(h, training=training)
        h = self.conv2(tf.nn.relu(h), training=training)
        if self.downsample:
            h = _avgpool2(h)
        return h + self._shortcut(inputs, training)

    def get_config(self):
        config = super().get_config()
        config.update({"out_channels": self.out_channels, "downsample": self.downsample,
                       "preactivation": self.preactivation, "init": self.init,
                       "sn_epsilon": self.sn_epsilon})
        return config

#----------------------------------------------------------------------------
# Networks.


@keras.saving.register_keras_serializable(package="networks")
class BigGANGenerator(keras.Model):
    """BigGAN generator: SN linear -> GBlocks (class-conditional BN) [+ attention] -> BN -> ReLU
    -> SN conv 3x3 -> tanh.

    Args:
      resolution: output resolution, 32 (CIFAR) or 64 (ImageNet 64^2).
      num_classes: number of classes.
      ch: channel width multiplier (64 in the official configurations).
      dim_z: latent size. With `hier` it is rounded down to a multiple of the number of blocks
        + 1 (BigGAN-PyTorch does the same); `self.dim_z` holds the value z must have.
      shared_dim: 0 = no shared embedding (CIFAR: each conditional BN has its own per-class
        gain/bias tables); > 0 = one shared class embedding (plain, N02/ortho init, not SN) of
        this size feeding SN linear gain/bias projections in every conditional BN.
      hier: hierarchical z: z is split into len(blocks) + 1 chunks; the first feeds the linear
        layer, chunk i+1 is concatenated with the shared embedding for block i. Needs
        shared_dim > 0.
      attention: resolutions after whose block a self-attention layer is added (ImageNet: (32,)).
      init: "N02" (N(0, 0.02), CIFAR) or "ortho" (ImageNet) for all conv/linear/embedding
        weights; biases keep PyTorch's default init.
      sn_epsilon: spectral-norm epsilon (1e-8 CIFAR, 1e-6 ImageNet).
      bn_epsilon: batch-norm epsilon (1e-5).
      cross_replica: synchronised batch norm across replicas (default False, as the official).

    Call: G(z, labels, training) with z (N, dim_z) float and labels (N,) int class indices.
    Output: images (N, resolution, resolution, 3) in [-1, 1].
    `G.synthesize(z, condition, training)` takes the class condition directly (the shared
    embedding vectors, or int labels without a shared embedding), e.g. for class interpolation.
    """

    def __init__(self, resolution=32, num_classes=10, ch=64, dim_z=128, shared_dim=0,
                 hier=False, attention=(), init="N02", sn_epsilon=1e-8, bn_epsilon=1e-5,
                 cross_replica=False, **kwargs):
        super().__init__(**kwargs)
        if resolution not in G_ARCH:
            raise ValueError(f"BigGANGenerator: resolution must be one of {sorted(G_ARCH)}, got "
                             f"{resolution!r}.")
        for name, value in (("num_classes", num_classes), ("ch", ch), ("dim_z", dim_z)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BigGANGenerator: {name} must be a positive integer, got {value!r}.")
        if isinstance(shared_dim, bool) or not isinstance(shared_dim, int) or shared_dim < 0:
            raise ValueError(f"BigGANGenerator: shared_dim must be an integer >= 0, got {shared_dim!r}.")
        if hier and not shared_dim:
            raise ValueError("BigGANGenerator: hier=True needs a shared embedding (shared_dim > 0), "
                             "as in BigGAN-PyTorch (--hier with --G_shared).")
        kernel_initializer(init)
        arch = G_ARCH[resolution]
        self.resolution = resolution
        self.num_classes = num_classes
        self.ch = ch
        self.shared_dim = shared_dim
        self.hier = bool(hier)
        self.attention = _check_attention(attention, arch["resolution"], "BigGANGenerator")
        self.init = init
        self.sn_epsilon = float(sn_epsilon)
        self.bn_epsilon = float(bn_epsilon)
        self.cross_replica = bool(cross_replica)
        self.bottom_width = 4
        num_blocks = len(arch["out_channels"])
        self.num_slots = num_blocks + 1 if self.hier else 1
        self.z_chunk_size = dim_z // self.num_slots if self.hier else 0
        if self.hier and self.z_chunk_size < 1:
            raise ValueError(f"BigGANGenerator: dim_z={dim_z} is too small to split into "
                             f"{self.num_slots} chunks.")
        self.dim_z = self.z_chunk_size * self.num_slots if self.hier else dim_z
        self._requested_dim_z = dim_z

        sn = dict(sn_mode="biggan", sn_epsilon=self.sn_epsilon)
        self.in_channels = [ch * m for m in arch["in_channels"]]
        self.out_channels = [ch * m for m in arch["out_channels"]]
        if shared_dim:
            self.shared = keras.layers.Embedding(
                num_classes, shared_dim, embeddings_initializer=kernel_initializer(init),
                name="shared")
        else:
            self.shared = None
        self.linear = SNDense(self.in_channels[0] * self.bottom_width ** 2, name="linear",
                              kernel_initializer=kernel_initializer(init), **sn)
        block_classes = None if shared_dim else num_classes
        blocks, attentions = [], {}
        for index, (out_ch, res) in enumerate(zip(self.out_channels, arch["resolution"])):
            blocks.append(GBlock(out_ch, num_classes=block_classes, init=init,
                                      sn_epsilon=sn_epsilon, bn_epsilon=bn_epsilon,
                                      cross_replica=cross_replica, name=f"block{index}"))
            if res in self.attention:
                attentions[index] = Attention(init=init, sn_epsilon=sn_epsilon,
                                              name=f"attention{index}")
        track_layers(self, "blocks", blocks, "block")
        track_layers(self, "attentions", attentions, "attention")
        self.output_bn = BatchNorm(epsilon=bn_epsilon, cross_replica=cross_replica,
                                   name="output_bn")
        self.output_conv = SNConv2D(3, 3, padding="same", name="output_conv",
                                    kernel_initializer=kernel_initializer(init), **sn)

    def build(self, z_shape=None, labels_shape=None):
        batch = None
        condition_shape = None
        if self.shared_dim:
            condition_shape = (batch, self.shared_dim + self.z_chunk_size)
            self.shared.build((batch,))
        self.linear.build((batch, self.z_chunk_size if self.hier else self.dim_z))
        h_shape = (batch, self.bottom_width, self.bottom_width, self.in_channels[0])
        for index, block in enumerate(self.blocks):
            block.build(h_shape, condition_shape)
            size = h_shape[1] * 2
            h_shape = (batch, size, size, self.out_channels[index])
            if index in self.attentions:
                self.attentions[index].build(h_shape)
        self.output_bn.build(h_shape)
        self.output_conv.build(h_shape)
        self.built = True

    def call(self, z, labels, training=None):
        labels = tf.cast(labels, tf.int32)
        condition = self.shared(labels) if self.shared is not None else labels
        return self.synthesize(z, condition, training=training)

    def synthesize(self, z, condition, training=None):
        """Images from z and the class condition (shared-embedding vectors (N, shared_dim), or
        int labels (N,) without a shared embedding)."""
        training = bool(training)
        z = tf.convert_to_tensor(z)
        if z.shape[-1] is not None and z.shape[-1] != self.dim_z:
            raise ValueError(f"BigGANGenerator: z must have {self.dim_z} features, got shape "
                             f"{tuple(z.shape)}.")
        if self.hier:
            chunks = tf.split(z, self.num_slots, axis=-1)
            z = chunks[0]
            conditions = [tf.concat([tf.cast(condition, z.dtype), c], axis=-1)
                          for c in chunks[1:]]
        else:
            conditions = [condition] * len(self.blocks)
        h = self.linear(z, training=training)
        # PyTorch views the linear output as (N, C, 4, 4); keeping that order lets the linear
        # weight import as a plain transpose.
        h = tf.reshape(h, [-1, self.in_channels[0], self.bottom_width, self.bottom_width])
        h = tf.transpose(h, [0, 2, 3, 1])
        for index, block in enumerate(self.blocks):
            h = block(h, conditions[index], training=training)
            if index in self.attentions:
                h = self.attentions[index](h, training=training)
        h = tf.nn.relu(self.output_bn(h, training=training))
        return tf.tanh(self.output_conv(h, training=training))

    def get_config(self):
        return {"name": self.name, "resolution": self.resolution,
                "num_classes": self.num_classes, "ch": self.ch,
                "dim_z": self._requested_dim_z, "shared_dim": self.shared_dim,
                "hier": self.hier, "attention": list(self.attention), "init": self.init,
                "sn_epsilon": self.sn_epsilon, "bn_epsilon": self.bn_epsilon,
                "cross_replica": self.cross_replica}


@keras.saving.register_keras_serializable(package="networks")
class BigGANDiscriminator(keras.Model):
    """BigGAN projection discriminator with FQ after chosen blocks (FQ-BigGAN).

    h = DBlocks(x) [FQ after block i for i in fq_layers, before that block's attention];
    h = sum_{H,W} relu(h);  out = SNLinear(h) + sum(SNEmbedding(y) * h).

    Args:
      resolution: 32 (CIFAR: 4 blocks of 4*ch channels, downsampling 32 -> 16 -> 8 -> 8 -> 8) or
        64 (ImageNet: 5 blocks of ch, 2ch, 4ch, 8ch, 16ch, 64 -> 32 -> 16 -> 8 -> 4 -> 4).
      num_classes, ch, attention, init, sn_epsilon: as the generator.
      fq_layers: indices of the D blocks followed by an FQ layer (0-based, as FQ-BigGAN's
        --discrete_layer). An index not in the network raises ValueError.
      fq_kwargs: FeatureQuantization arguments; `num_embeddings` may be one int or one per FQ
        layer. Defaults: zero_debias=False (PyTorch EMA), N(0, 1) dictionary init,
        forward="continuous" (the quantised tensor is not fed forward).

    Call: D(images, labels, training=None, return_fq=False); images (N, R, R, 3), labels (N,)
      int. Output: logits (N, 1); with return_fq=True, (logits, lookups), lookups a list of
      FeatureQuantization.lookup results aligned with `self.fq_layers`.
    """

    def __init__(self, resolution=32, num_classes=10, ch=64, attention=(), init="N02",
                 sn_epsilon=1e-8, fq_layers=(), fq_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        if resolution not in D_ARCH:
            raise ValueError(f"BigGANDiscriminator: resolution must be one of {sorted(D_ARCH)}, "
                             f"got {resolution!r}.")
        for name, value in (("num_classes", num_classes), ("ch", ch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BigGANDiscriminator: {name} must be a positive integer, got "
                                 f"{value!r}.")
        kernel_initializer(init)
        arch = D_ARCH[resolution]
        self.resolution = resolution
        self.num_classes = num_classes
        self.ch = ch
        self.attention = _check_attention(attention, arch["resolution"], "BigGANDiscriminator")
        self.init = init
        self.sn_epsilon = float(sn_epsilon)
        self.out_channels = [ch * m for m in arch["out_channels"]]
        num_blocks = len(self.out_channels)

        fq_layers = tuple(int(i) for i in fq_layers)
        bad = [i for i in fq_layers if not 0 <= i < num_blocks]
        if bad or len(set(fq_layers)) != len(fq_layers):
            raise ValueError(f"BigGANDiscriminator: fq_layers {list(fq_layers)} must be distinct "
                             f"block indices of this {resolution}x{resolution} discriminator; "
                             f"valid: {list(range(num_blocks))}.")
        self.fq_layer_indices = tuple(sorted(fq_layers))
        self.fq_kwargs = dict(fq_kwargs or {})
        sizes = self.fq_kwargs.get("num_embeddings", 1024)
        if isinstance(sizes, (list, tuple)):
            if len(sizes) != len(self.fq_layer_indices):
                raise ValueError(f"BigGANDiscriminator: fq_kwargs['num_embeddings'] has "
                                 f"{len(sizes)} values for {len(self.fq_layer_indices)} FQ layers.")
            sizes = dict(zip(fq_layers, sizes))
        else:
            sizes = {i: sizes for i in self.fq_layer_indices}

        sn = dict(sn_mode="biggan", sn_epsilon=self.sn_epsilon)
        blocks, attentions, fq_by_block = [], {}, {}
        for index, out_ch in enumerate(self.out_channels):
            blocks.append(DBlock(out_ch, downsample=arch["downsample"][index],
                                      preactivation=index > 0, init=init, sn_epsilon=sn_epsilon,
                                      name=f"block{index}"))
            if index in self.fq_layer_indices:
                layer_kwargs = {k: v for k, v in self.fq_kwargs.items() if k != "num_embeddings"}
                layer_kwargs.setdefault("zero_debias", False)
                layer_kwargs.setdefault("embeddings_initializer",
                                        keras.initializers.RandomNormal(stddev=1.0))
                layer_kwargs["embeddings_initializer"] = fresh_initializer(
                    layer_kwargs["embeddings_initializer"])
                fq_by_block[index] = FeatureQuantization(sizes[index], name=f"fq{index}",
                                                         **layer_kwargs)
            if arch["resolution"][index] in self.attention:
                attentions[index] = Attention(init=init, sn_epsilon=sn_epsilon,
                                              name=f"attention{index}")
        track_layers(self, "blocks", blocks, "block")
        track_layers(self, "attentions", attentions, "attention")
        track_layers(self, "fq_by_block", fq_by_block, "fq")
        # The discriminator's FQ layers in order (fq_keras.update_dictionaries takes this list).
        object.__setattr__(self, "fq_layers", [fq_by_block[i] for i in self.fq_layer_indices])
        self.linear = SNDense(1, name="linear", kernel_initializer=kernel_initializer(init), **sn)
        self.embed = SNEmbedding(num_classes, self.out_channels[-1], name="embed",
                                 embeddings_initializer=kernel_initializer(init), **sn)

    def build(self, images_shape=None, labels_shape=None):
        batch = None
        size = self.resolution
        h_shape = (batch, size, size, 3)
        for index, block in enumerate(self.blocks):
            block.build(h_shape)
            if block.downsample:
                size //= 2
            h_shape = (batch, size, size, self.out_channels[index])
            if index in self.fq_by_block:
                self.fq_by_block[index].build(h_shape)
            if index in self.attentions:
                self.attentions[index].build(h_shape)
        self.linear.build((batch, self.out_channels[-1]))
        self.embed.build()
        self.built = True

    def call(self, images, labels, training=None, return_fq=False):
        training = bool(training)
        h = images
        lookups = []
        for index, block in enumerate(self.blocks):
            h = block(h, training=training)
            if index in self.fq_by_block:
                h, lookup = self.fq_by_block[index](h, return_lookup=True)
                lookups.append(lookup)
            if index in self.attentions:
                h = self.attentions[index](h, training=training)
        # h is the last block's residual sum, which an FQ look-up may read too.
        h = tf.reduce_sum(unfused_relu(h), axis=[1, 2])                    # [N, C]
        out = self.linear(h, training=training)                            # [N, 1]
        projection = self.embed(tf.cast(labels, tf.int32), training=training)
        out = out + tf.reduce_sum(projection * h, axis=1, keepdims=True)
        return (out, lookups) if return_fq else out

    def get_config(self):
        fq_kwargs = {k: (keras.initializers.serialize(keras.initializers.get(v))
                         if k == "embeddings_initializer" else v)
                     for k, v in self.fq_kwargs.items()}
        return {"name": self.name, "resolution": self.resolution,
                "num_classes": self.num_classes, "ch": self.ch,
                "attention": list(self.attention), "init": self.init,
                "sn_epsilon": self.sn_epsilon, "fq_layers": list(self.fq_layer_indices),
                "fq_kwargs": fq_kwargs}
