"""StyleGAN (Karras et al., CVPR 2019): style-based generator and D_basic, NHWC, with
progressive growing; and `StyleGenerator`, the mapping/synthesis surface shared with StyleGAN2.

Behaviour per `../shared/reference/stylegan.md` (official NVlabs/stylegan, TF1).
"""

import keras
import numpy as np
import tensorflow as tf

from networks import layers as L
from networks import progan

NOISE_MODES = L.NOISE_MODES

#----------------------------------------------------------------------------
# Shared generator surface (StyleGAN v1 and StyleGAN2).


class StyleGenerator(keras.Model):
    """Mapping z -> w (broadcast to every layer) and synthesis w -> image, callable separately.

    Subclasses create, in `__init__`, `self.mapping` (`mapping(z, labels=None)` -> dlatents
    (N, num_ws, w_dim), float32) and `self.synthesis` (`synthesis(dlatents, noise_mode, lod,
    resolution)` -> float32 NHWC images in [-1, 1]), and set z_dim, c_dim, w_dim, num_ws,
    resolution; then call `_init_style_state(seed)`.

    What a trainer uses (the official training step, built from these pieces):
      ws = G.mapping(z, labels)                         # (N, num_ws, w_dim)
      G.update_dlatent_avg(ws, beta=0.995)              # training only
      ws = G.mix_styles(ws, G.mapping(z2, labels), num_active_layers=G.num_layers_at(res))
      images = G.synthesis(ws, noise_mode="random", lod=lod, resolution=res)
    and at inference `G(z, labels, truncation_psi=0.7, truncation_cutoff=8)` (v1) or
    `G(z, labels, truncation_psi=0.5)` (v2). Path-length regularisation differentiates
    `G.synthesis(ws)` with respect to ws directly.

    State: `dlatent_avg` (w_dim,) float32, non-trainable, the moving average of w used by the
    truncation trick; `mixing_seed_generator`, the seeded RNG of style mixing; the synthesis
    network owns the noise RNG (`synthesis.seed_generator`).
    """

    def _init_style_state(self, seed):
        self.dlatent_avg = self.add_weight(
            name="dlatent_avg", shape=(self.w_dim,), initializer="zeros", trainable=False,
            dtype="float32", aggregation="only_first_replica")
        self.mixing_seed_generator = keras.random.SeedGenerator(
            None if seed is None else seed + 1, name="mixing_seed_generator")

    def num_layers_at(self, resolution=None):
        """Number of dlatents the synthesis uses up to `resolution` (all of them by default).

        Style mixing draws its cutoff below this number (official cur_layers =
        num_layers - 2 * floor(lod)).
        """
        if resolution is None:
            return self.num_ws
        return min(2 * L.check_resolution(resolution) - 2, self.num_ws)

    def update_dlatent_avg(self, dlatents, beta=0.995):
        """dlatent_avg <- lerp(mean_batch(w), dlatent_avg, beta); returns the new average.

        Inside a tf.distribute replica context the batch mean is all-reduced first, so every
        replica keeps the same average (that of the global batch).
        """
        batch_avg = tf.reduce_mean(tf.cast(dlatents[:, 0], tf.float32), axis=0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            batch_avg = context.all_reduce(tf.distribute.ReduceOp.MEAN, batch_avg)
        new_avg = L.lerp(batch_avg, tf.convert_to_tensor(self.dlatent_avg), beta)
        self.dlatent_avg.assign(new_avg)
        return new_avg

    def truncate(self, dlatents, truncation_psi=1.0, truncation_cutoff=None):
        """Truncation trick: w <- lerp(dlatent_avg, w, psi) on layers < cutoff (all if None)."""
        if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
            return dlatents
        if truncation_cutoff is not None and truncation_cutoff <= 0:
            return dlatents
        layer_idx = np.arange(self.num_ws)[np.newaxis, :, np.newaxis]
        cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
        psi = tf.cast(truncation_psi, tf.float32)
        coefs = tf.where(layer_idx < cutoff, psi, tf.ones_like(psi))
        return L.lerp(tf.convert_to_tensor(self.dlatent_avg), dlatents, coefs)

    def mix_styles(self, dlatents, dlatents2, num_active_layers=None, prob=0.9):
        """Style mixing regularisation: layers >= cutoff take their w from dlatents2.

        With probability `prob` the cutoff is uniform in [1, num_active_layers), else it is
        num_active_layers (no mixing among the active layers). One cutoff per minibatch, drawn
        from `mixing_seed_generator`, as the official code.
        """
        n = self.num_ws if num_active_layers is None else int(num_active_layers)
        if n < 2:
            return dlatents
        random_cutoff = keras.random.randint((), 1, n, seed=self.mixing_seed_generator)
        use_mixing = keras.random.uniform((), seed=self.mixing_seed_generator) < prob
        cutoff = tf.where(use_mixing, random_cutoff, n)
        layer_idx = tf.range(self.num_ws)[tf.newaxis, :, tf.newaxis]
        return tf.where(layer_idx < cutoff, dlatents, dlatents2)

    def call(self, z, labels=None, truncation_psi=1.0, truncation_cutoff=None,
             noise_mode="const", lod=None, resolution=None):
        """z (N, z_dim), labels (N, c_dim) or None -> float32 images (N, R, R, C) in [-1, 1].

        noise_mode: "const" (stored noise maps, deterministic), "random" (training), "none".
        lod / resolution: progressive growing (see the synthesis network).
        """
        dlatents = self.mapping(z, labels)
        dlatents = self.truncate(dlatents, truncation_psi, truncation_cutoff)
        return self.synthesis(dlatents, noise_mode=noise_mode, lod=lod, resolution=resolution)

#----------------------------------------------------------------------------
# StyleGAN v1 mapping network.


@keras.saving.register_keras_serializable(package="networks.stylegan")
class MappingNetwork(keras.layers.Layer):
    """StyleGAN v1 `G_mapping`, float32: z (and labels) -> w broadcast to (N, num_ws, w_dim).

        x = z, or concat(z, labels @ E) with E (c_dim, z_dim) ~ N(0, 1) (plain, no wscale)
        x = pixel_norm(x);  x = 8 x [dense (gain sqrt(2), lrmul 0.01) -> bias * lrmul -> lrelu]

    Call: `mapping(z, labels=None)`.
    """

    def __init__(self, z_dim=512, c_dim=0, w_dim=512, num_ws=18, num_layers=8,
                 mapping_fmaps=512, lrmul=0.01, normalize_latents=True, **kwargs):
        kwargs.setdefault("autocast", False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        self.num_ws, self.num_layers = int(num_ws), int(num_layers)
        self.mapping_fmaps, self.lrmul = int(mapping_fmaps), float(lrmul)
        self.normalize_latents = bool(normalize_latents)
        self.fcs = []
        for i in range(self.num_layers):
            units = self.w_dim if i == self.num_layers - 1 else self.mapping_fmaps
            fc = L.EqualizedDense(units, gain=L.SQRT2, lrmul=self.lrmul, activation="lrelu",
                                  dtype="float32", name=f"dense{i}")
            setattr(self, f"dense{i}", fc)
            self.fcs.append(fc)

    def build(self, z_shape=None, labels_shape=None):
        if self.c_dim:
            self.label_embedding = self.add_weight(
                name="label_embedding", shape=(self.c_dim, self.z_dim),
                initializer=keras.initializers.RandomNormal(stddev=1.0), dtype="float32")
        fan_in = self.z_dim * (2 if self.c_dim else 1)
        for fc in self.fcs:
            fc.build((None, fan_in))
            fan_in = fc.units

    def call(self, z, labels=None):
        x = tf.cast(z, tf.float32)
        if self.c_dim:
            if labels is None:
                raise ValueError(f"MappingNetwork: labels (N, {self.c_dim}) are required.")
            y = tf.matmul(tf.cast(labels, tf.float32), tf.convert_to_tensor(self.label_embedding))
            x = tf.concat([x, y], axis=1)
        elif labels is not None:
            raise ValueError("MappingNetwork: labels given to an unconditional network (c_dim=0).")
        if self.normalize_latents:
            x = L.pixel_norm(x)
        for fc in self.fcs:
            x = fc(x)
        return tf.tile(x[:, tf.newaxis], [1, self.num_ws, 1])

    def get_config(self):
        config = super().get_config()
        config.update(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                      num_layers=self.num_layers, mapping_fmaps=self.mapping_fmaps,
                      lrmul=self.lrmul, normalize_latents=self.normalize_latents)
        return config

#----------------------------------------------------------------------------
# StyleGAN v1 synthesis network.


@keras.saving.register_keras_serializable(package="networks.stylegan")
class LayerEpilogue(keras.layers.Layer):
    """noise (per-channel strength) -> bias -> lrelu -> AdaIN(instance norm, style of w_i)."""

    def __init__(self, channels, resolution, use_noise=True, use_wscale=True, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.channels, self.resolution = int(channels), int(resolution)
        self.use_noise, self.use_wscale = bool(use_noise), bool(use_wscale)
        self.noise = L.NoiseInput(per_channel=True, name="noise") if use_noise else None
        self.adain = L.AdaIN(use_wscale=use_wscale, name="style_mod")

    def build(self, x_shape=None, w_shape=None):
        shape = (None, self.resolution, self.resolution, self.channels)
        if self.noise is not None:
            self.noise.build(shape)
        self.bias = self.add_weight(name="bias", shape=(self.channels,), initializer="zeros",
                                    dtype="float32")
        self.adain.build(shape, w_shape)

    def call(self, x, w, noise_mode="random", seed_generator=None):
        if self.noise is not None:
            x = self.noise(x, noise_mode=noise_mode, seed_generator=seed_generator)
        x = L.bias_act(tf.cast(x, self.compute_dtype), tf.convert_to_tensor(self.bias), "lrelu")
        return self.adain(x, w)

    def get_config(self):
        config = super().get_config()
        config.update(channels=self.channels, resolution=self.resolution,
                      use_noise=self.use_noise, use_wscale=self.use_wscale)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan")
class SynthesisBlock(keras.layers.Layer):
    """Resolution R of `G_synthesis`, two layers (dlatents 2 log2 R - 4 and - 3).

    4x4: const (4, 4, C) init ones -> epilogue; conv 3x3 -> epilogue. R > 4: up-conv 3x3
    (fused when R >= 128 with fused_scale='auto', else nearest + conv) -> blur [1,2,1] ->
    epilogue; conv 3x3 -> epilogue. Convs: gain sqrt(2), no bias (the epilogue adds it).
    """

    def __init__(self, resolution, in_channels, channels, w_dim=512, use_noise=True,
                 use_wscale=True, fused_scale="auto", blur_filter=(1, 2, 1), **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.resolution, self.in_channels, self.channels = int(resolution), int(in_channels), \
            int(channels)
        self.w_dim = int(w_dim)
        self.blur_filter = None if blur_filter is None else tuple(blur_filter)
        self._config = dict(resolution=resolution, in_channels=in_channels, channels=channels,
                            w_dim=w_dim, use_noise=use_noise, use_wscale=use_wscale,
                            fused_scale=fused_scale, blur_filter=self.blur_filter)
        conv = dict(gain=L.SQRT2, use_wscale=use_wscale, use_bias=False)
        epi = dict(use_noise=use_noise, use_wscale=use_wscale)
        fused = resolution >= 128 if fused_scale == "auto" else bool(fused_scale)
        self.conv0 = None if resolution == 4 else L.EqualizedConv2D(
            channels, 3, up=True, fused_scale=fused, name="conv0_up", **conv)
        self.epilogue0 = LayerEpilogue(channels, resolution, name="epilogue0", **epi)
        self.conv1 = L.EqualizedConv2D(channels, 3, name="conv1" if resolution > 4 else "conv",
                                       **conv)
        self.epilogue1 = LayerEpilogue(channels, resolution, name="epilogue1", **epi)

    def build(self, x_shape=None, ws_shape=None):
        r, c = self.resolution, self.channels
        if self.conv0 is None:
            self.const = self.add_weight(name="const", shape=(4, 4, c), initializer="ones",
                                         dtype="float32")
        else:
            self.conv0.build((None, r // 2, r // 2, self.in_channels))
        w_shape = (None, self.w_dim)
        self.epilogue0.build((None, r, r, c), w_shape)
        self.conv1.build((None, r, r, c))
        self.epilogue1.build((None, r, r, c), w_shape)

    def call(self, x, ws, noise_mode="random", seed_generator=None):
        noise = dict(noise_mode=noise_mode, seed_generator=seed_generator)
        if self.conv0 is None:
            x = tf.tile(tf.cast(self.const, self.compute_dtype)[tf.newaxis],
                        [tf.shape(ws)[0], 1, 1, 1])
        else:
            x = self.conv0(x)
            if self.blur_filter is not None:
                x = L.blur2d(x, self.blur_filter)
        x = self.epilogue0(x, ws[:, 0], **noise)
        return self.epilogue1(self.conv1(x), ws[:, 1], **noise)

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config


@keras.saving.register_keras_serializable(package="networks.stylegan")
class SynthesisNetwork(keras.layers.Layer):
    """StyleGAN v1 `G_synthesis`: dlatents (N, 2 log2 R - 2, w_dim) -> float32 images.

    Call: `synthesis(dlatents, noise_mode="random", lod=None, resolution=None)` -> (N, S, S, C)
    for stage S (default R). Progressive growing as ProGAN (`networks.progan` docstring):
    out = lerp_clip(ToRGB_S(x_S), upscale2d(ToRGB_{S/2}(x_{S/2})), lod - (log2 R - log2 S)).
    Random noise comes from `self.seed_generator`.
    """

    def __init__(self, w_dim=512, resolution=1024, img_channels=3, fmap_base=8192,
                 fmap_decay=1.0, fmap_max=512, use_noise=True, use_wscale=True,
                 fused_scale="auto", blur_filter=(1, 2, 1), noise_seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.log2_resolution = L.check_resolution(resolution)
        self.w_dim, self.resolution, self.img_channels = int(w_dim), int(resolution), \
            int(img_channels)
        self._config = dict(w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                            fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max,
                            use_noise=use_noise, use_wscale=use_wscale, fused_scale=fused_scale,
                            blur_filter=None if blur_filter is None else tuple(blur_filter),
                            noise_seed=noise_seed)
        self.block_resolutions = [2 ** r for r in range(2, self.log2_resolution + 1)]
        self.channels = {r: L.num_features(r.bit_length() - 2, fmap_base, fmap_decay, 1, fmap_max)
                         for r in self.block_resolutions}
        self.num_ws = 2 * self.log2_resolution - 2
        self.blocks, self.torgbs = [], []
        for r in self.block_resolutions:
            block = SynthesisBlock(r, self.channels.get(r // 2, 0), self.channels[r], w_dim,
                                   use_noise, use_wscale, fused_scale, blur_filter, name=f"b{r}")
            torgb = L.EqualizedConv2D(img_channels, 1, gain=1.0, use_wscale=use_wscale,
                                      name=f"torgb{r}")
            setattr(self, f"b{r}", block)
            setattr(self, f"torgb{r}", torgb)
            self.blocks.append(block)
            self.torgbs.append(torgb)
        self.seed_generator = keras.random.SeedGenerator(noise_seed, name="noise_seed_generator")

    def build(self, dlatents_shape=None):
        for block, torgb in zip(self.blocks, self.torgbs):
            block.build()
            torgb.build((None, block.resolution, block.resolution, block.channels))

    def call(self, dlatents, noise_mode="random", lod=None, resolution=None):
        stage = L.check_stage(resolution, self.resolution, True, "stylegan.SynthesisNetwork")
        dlatents = tf.cast(dlatents, tf.float32)
        x = prev = None
        for i, block in enumerate(self.blocks):
            if block.resolution > stage:
                break
            prev = x
            x = block(x, dlatents[:, 2 * i:2 * i + 2], noise_mode=noise_mode,
                      seed_generator=self.seed_generator)
        index = self.block_resolutions.index(stage)
        out = tf.cast(self.torgbs[index](x), tf.float32)
        if lod is not None and stage > 4:
            low = tf.cast(self.torgbs[index - 1](prev), tf.float32)
            t = L.fade_coefficient(lod, self.resolution, stage)
            out = L.lerp_clip(out, L.upscale2d(low), t)
        return out

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config

#----------------------------------------------------------------------------
# StyleGAN v1 generator and discriminator.


@keras.saving.register_keras_serializable(package="networks.stylegan")
class Generator(StyleGenerator):
    """StyleGAN v1 generator (`G_style`): `G(z, labels=None, truncation_psi=1.0,
    truncation_cutoff=None, noise_mode="const", lod=None, resolution=None)` -> float32 NHWC
    images (N, S, S, img_channels). Official inference: truncation_psi=0.7,
    truncation_cutoff=8 (never during training or metrics).

    Args:
      z_dim, c_dim, w_dim: latent (512), label (0) and dlatent (512) sizes.
      resolution, img_channels: final resolution R and output channels.
      mapping_layers, mapping_fmaps, mapping_lrmul: mapping depth (8), width (512), lrmul (0.01).
      fmap_base, fmap_decay, fmap_max: synthesis widths nf(stage) (8192, 1, 512).
      use_noise: noise inputs; fused_scale: 'auto' (fused up-conv at >= 128), True, False;
      blur_filter: (1, 2, 1) after each up-conv, None = off.
      seed: seeds the noise and style-mixing RNGs (None = random).
    """

    def __init__(self, z_dim=512, c_dim=0, w_dim=512, resolution=1024, img_channels=3,
                 mapping_layers=8, mapping_fmaps=512, mapping_lrmul=0.01, fmap_base=8192,
                 fmap_decay=1.0, fmap_max=512, use_noise=True, fused_scale="auto",
                 blur_filter=(1, 2, 1), seed=None, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.z_dim, self.c_dim, self.w_dim = int(z_dim), int(c_dim), int(w_dim)
        if self.z_dim < 1 or self.w_dim < 1 or self.c_dim < 0:
            raise ValueError("stylegan.Generator: z_dim and w_dim must be >= 1, c_dim >= 0.")
        self.resolution = int(resolution)
        self.progressive = True
        self._config = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, resolution=resolution,
                            img_channels=img_channels, mapping_layers=mapping_layers,
                            mapping_fmaps=mapping_fmaps, mapping_lrmul=mapping_lrmul,
                            fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max,
                            use_noise=use_noise, fused_scale=fused_scale,
                            blur_filter=None if blur_filter is None else tuple(blur_filter),
                            seed=seed)
        self.synthesis = SynthesisNetwork(w_dim, resolution, img_channels, fmap_base, fmap_decay,
                                          fmap_max, use_noise, True, fused_scale, blur_filter,
                                          noise_seed=seed, name="synthesis")
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers,
                                      mapping_fmaps, mapping_lrmul, name="mapping")
        self._init_style_state(seed)
        self.build()

    def build(self, input_shape=None):
        self.mapping.build()
        self.synthesis.build()
        self.built = True

    def get_config(self):
        config = super().get_config()
        config.update(self._config)
        return config


FQ_DEFAULTS = {"fq_blocks": (8,), "fq_num_embeddings": 1024, "fq_decay": 0.8,
               "fq_commitment_cost": 5.0}  # official FQ-StyleGAN v1 (fq-official.md)


@keras.saving.register_keras_serializable(package="networks.stylegan")
class Discriminator(progan.Discriminator):
    """StyleGAN v1 `D_basic`: ProGAN's progressive D with a [1,2,1] blur before every
    down-conv, fused down-convs for blocks >= 128 ('auto') and label projection
    (LabelSwitch: logit = sum(out * labels) over max(c_dim, 1) outputs).

    `D(images, labels=None, lod=None, return_fq=False)`; see `progan.Discriminator` for the
    stage / lod / FQ contract. Official FQ-StyleGAN v1: fq_blocks=(8,) (the 4x4 x nf(1)
    features out of block 8), K=1024, decay 0.8, commitment 5.0 (the defaults here, with
    fq_blocks=() = baseline unless set).
    """

    def __init__(self, resolution=1024, img_channels=3, c_dim=0, fmap_base=8192,
                 fmap_decay=1.0, fmap_max=512, fused_scale="auto", blur_filter=(1, 2, 1),
                 label_mode="projection", **kwargs):
        super().__init__(resolution=resolution, img_channels=img_channels, c_dim=c_dim,
                         fmap_base=fmap_base, fmap_decay=fmap_decay, fmap_max=fmap_max,
                         fused_scale=fused_scale, blur_filter=blur_filter, label_mode=label_mode,
                         **kwargs)
