"""StyleGAN (Karras et al., CVPR 2019): style-based generator and D_basic, NHWC, with
progressive growing; and `StyleGenerator`, the mapping/synthesis surface shared with StyleGAN2.

Behaviour per `../shared/reference/stylegan.md` (official NVlabs/stylegan, TF1).
"""

import keras
import numpy as np
import tensorflow as tf

from networks import layers as L

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
