"""Style quantization (SQ-GAN, Wang et al., CVPR 2025): a learnable codebook for StyleGAN's w.

The intermediate latent w = f_W(z) in R^{w_dim} is split into s = w_dim / code_dim sub-vectors;
each is replaced by its nearest entry of ONE codebook C in R^{K x code_dim} shared by all
sub-vectors and all layers, and the concatenation w^q feeds the synthesis network through a
straight-through estimator. Unlike the FQ dictionary (EMA, no gradient), this codebook is a
trainable weight learned by the usual VQ losses and kept spread out by the uniformity loss.

What is known and what is chosen here (`../shared/reference/sqgan.md`; the paper's equations
could not be checked, so every unspecified choice is an argument):

- Code dimension 4 (the paper's best, s = 128 for w_dim = 512): `code_dim=4`.
- Codebook size: unspecified; `num_codes=1024` (K = 2^10, the FQ-GAN dictionary default). At
  batch 32 and w_dim 512 a step looks up 4096 sub-vectors, four per entry on average.
- Hyperspherical codebook (paper): `hyperspherical=True` l2-normalises every sub-vector z and
  every codebook entry c before the look-up, so the nearest entry is the one of largest cosine
  similarity; the synthesis then receives the unit-norm entries c^ = c / ||c|| (the stored
  codebook rows keep their norm; only their direction matters). The VQ losses and the
  straight-through estimator act on the normalised vectors z^ = z / ||z||, as in ViT-VQGAN's
  l2-normalised codes. Each sub-vector of w^q therefore has norm 1 (element RMS 1 /
  sqrt(code_dim) = 0.5 at code_dim 4, where a fresh mapping network's w has RMS ~1); the
  synthesis' learned affine (style) layers adapt to that scale.
  `hyperspherical=False` quantises raw sub-vectors to raw entries (plain VQ-VAE).
- VQ losses (VQ-VAE): codebook loss ||sg(z) - c||^2 and commitment loss beta ||z - sg(c)||^2,
  beta = `commitment_cost=0.25` (VQ-VAE's default; the paper does not give it), each the mean
  over elements as in Sonnet's VQ-VAE and `FeatureQuantization`.
- Uniformity loss (Wang & Isola 2020): L_uf = log mean_{i != j} exp(-t ||c^_i - c^_j||^2) over the
  normalised entries, t = `uniformity_temperature=2.0`.
- Objective (summary): G: L_adv + 0.01 (L_sq + L_uf) (`sq_generator_loss`); D: L_adv + 0.01 L_qcr
  with L_qcr = ||D(G(w^q)) - D(G(w'^q))||^2, w' = f_W(z + eps), eps ~ N(0, 0.1^2)
  (`perturb_latents`, `sq_consistency_loss`).

Every row of w (and of dlatents (N, num_ws, w_dim)) is quantised independently, so quantising w
before the broadcast to num_ws layers, or before style mixing, gives the same w^q as quantising
the broadcast or mixed dlatents (and costs num_ws times less).
"""

import math

import keras
import tensorflow as tf

from fq_keras import codebook as codebook_ops


def _default_codebook_initializer():
    # N(0, 1): the element RMS of w from a freshly initialised StyleGAN2 mapping network is
    # about 1 (1.04 measured at w_dim 512); in the hyperspherical mode an isotropic normal draw
    # gives uniformly distributed directions. CBI (fq_keras.codebook_init) can replace it.
    return keras.initializers.RandomNormal(stddev=1.0)


def normalize_codes(vectors):
    """v / max(||v||, 1e-6) along the last axis, float32 (the hyperspherical projection)."""
    vectors = tf.cast(vectors, tf.float32)
    return vectors * tf.math.rsqrt(
        tf.maximum(tf.reduce_sum(tf.square(vectors), axis=-1, keepdims=True), 1e-12))


def uniformity_loss(codebook, temperature=2.0):
    """L_uf = log mean_{i != j} exp(-t ||c^_i - c^_j||^2), c^ = c / ||c|| (Wang & Isola 2020).

    Args:
      codebook: (K, d) codebook entries (any float dtype; math in float32), K >= 2.
      temperature: t > 0.

    Returns:
      float32 scalar in [-4t, 0]: 0 when all entries coincide (collapse), lower the more evenly
      they cover the sphere (-4t would need every pair antipodal, possible only for K = 2).

    The (K, K) squared distances come from the Gram matrix (`codebook.squared_distances`), never
    from a (K, K, d) difference tensor; the mean over the K (K - 1) off-diagonal pairs is a
    masked log-sum-exp, so it cannot underflow for large t.
    """
    unit = normalize_codes(codebook)  # [K, d]
    num_codes = tf.shape(unit)[0]
    distances = tf.maximum(codebook_ops.squared_distances(unit, unit), 0.0)  # [K, K]
    logits = -float(temperature) * distances
    off_diagonal = tf.logical_not(tf.cast(tf.eye(num_codes), tf.bool))
    logits = tf.where(off_diagonal, logits, tf.constant(-math.inf, tf.float32))
    num_pairs = tf.cast(num_codes * (num_codes - 1), tf.float32)
    return tf.reduce_logsumexp(logits) - tf.math.log(num_pairs)


#----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="fq_keras")
class StyleQuantization(keras.layers.Layer):
    """Quantises w (or dlatents) sub-vector by sub-vector with one shared learnable codebook.

    Args:
      num_codes: K, codebook entries (>= 2). Unspecified in the paper; 1024 (FQ-GAN's K).
      code_dim: d, length of each sub-vector; w_dim must be a multiple. Paper's best: 4.
      hyperspherical: True (paper) = l2-normalise sub-vectors and entries before the look-up and
        output the unit-norm entries; False = plain VQ on the raw vectors.
      commitment_cost: beta of the commitment loss beta ||z - sg(c)||^2 (>= 0). VQ-VAE: 0.25.
      uniformity_temperature: t of the uniformity loss (> 0). Wang & Isola: 2.
      codebook_initializer: initial (K, d) codebook. Default N(0, 1).

    Input shape:
      w (N, w_dim) or dlatents (N, num_ws, w_dim), any float dtype; w_dim % code_dim == 0.

    Output shape:
      Same shape and dtype: w^q = z + sg(c_k - z) (z, c normalised when hyperspherical), i.e. the
      nearest entries forward and the identity backward (straight-through). Math is float32.

    State:
      codebook (K, d) float32, trainable: learned by the optimizer from the codebook and
      uniformity losses (the straight-through output gives it no gradient). usage_counts (K,)
      float32, non-trainable: look-ups per entry accumulated by `update_usage` since the last
      `reset_usage` (all-reduced over replicas), for perplexity and dead-entry logs.

    Example:
      >>> sq = StyleQuantization(num_codes=1024, code_dim=4)
      >>> w = keras.random.normal((8, 512))
      >>> w_q, result = sq(w, return_lookup=True)   # result: indices, loss, per_sample_loss, ...
      >>> sq.update_usage(result["indices"])          # once per G step, for the usage logs
    """

    def __init__(self,
                 num_codes=1024,
                 code_dim=4,
                 hyperspherical=True,
                 commitment_cost=0.25,
                 uniformity_temperature=2.0,
                 codebook_initializer=None,
                 **kwargs):
        # Inputs keep their dtype: under mixed_float16 the output must match the input.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        for name, value, minimum in (("num_codes", num_codes, 2), ("code_dim", code_dim, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"StyleQuantization: {name} must be an integer >= {minimum}, got {value!r}.")
        if not float(commitment_cost) >= 0.0:
            raise ValueError(
                f"StyleQuantization: commitment_cost must be >= 0, got {commitment_cost!r}.")
        if not float(uniformity_temperature) > 0.0:
            raise ValueError("StyleQuantization: uniformity_temperature must be > 0, got "
                             f"{uniformity_temperature!r}.")
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.hyperspherical = bool(hyperspherical)
        self.commitment_cost = float(commitment_cost)
        self.uniformity_temperature = float(uniformity_temperature)
        self.codebook_initializer = keras.initializers.get(
            codebook_initializer or _default_codebook_initializer())

    def build(self, input_shape=None):
        """Creates the codebook; `input_shape` (if given) is only validated.

        The codebook does not depend on w_dim, so `build()` without a shape is allowed (codebook
        initialisation can run before the generator exists).
        """
        if input_shape is not None:
            self._check_shape(input_shape)
        self.codebook = self.add_weight(
            name="codebook", shape=(self.num_codes, self.code_dim),
            initializer=self.codebook_initializer, trainable=True, dtype="float32",
            autocast=False)
        # Every replica adds the same all-reduced counts: the first replica's value is the value.
        self.usage_counts = self.add_weight(
            name="usage_counts", shape=(self.num_codes,), initializer="zeros", trainable=False,
            dtype="float32", autocast=False, aggregation="only_first_replica")
        self.built = True

    def _check_shape(self, shape):
        shape = tuple(shape)
        if len(shape) not in (2, 3) or shape[-1] is None or shape[-1] % self.code_dim:
            raise ValueError(
                f"StyleQuantization '{self.name}': inputs must be w (N, w_dim) or dlatents "
                f"(N, num_ws, w_dim) with w_dim a multiple of code_dim={self.code_dim}, got shape "
                f"{shape}. Choose a code_dim that divides w_dim.")

    # ------------------------------------------------------------------------------------------

    def _codes(self):
        """The codebook as used by the look-up: float32 (K, d), unit rows when hyperspherical."""
        entries = tf.convert_to_tensor(self.codebook)
        return normalize_codes(entries) if self.hyperspherical else entries

    def lookup(self, w):
        """Nearest entry for every sub-vector, the straight-through output and the VQ losses.

        Args:
          w: (N, w_dim) or (N, num_ws, w_dim), any float dtype.

        Returns:
          dict with
            quantized: w^q, same shape and dtype as w; forward value = the nearest entries
              (unit-norm when hyperspherical), gradient = straight-through to w (through the
              normalisation when hyperspherical). No gradient reaches the codebook from here.
            indices: int32 w.shape[:-1] + (w_dim / code_dim,), entry chosen per sub-vector.
            codebook_loss: float32 scalar, mean over elements of (sg(z) - c_k)^2 (gradient to
              the codebook only).
            commitment_loss: float32 scalar, mean over elements of (z - sg(c_k))^2 (gradient to
              w only), not yet multiplied by beta.
            loss: codebook_loss + beta * commitment_loss (L_sq).
            per_sample_loss: float32 (N,), the same sum with means taken per sample, for losses
              scaled by the global batch under tf.distribute.
            perplexity, unused_fraction: float32 scalars, entry usage within this batch.
        """
        w = tf.convert_to_tensor(w)
        if not self.built:
            self.build(tuple(w.shape))
        self._check_shape(w.shape)
        w32 = tf.cast(w, tf.float32)
        sub = tf.reshape(w32, [-1, self.code_dim])  # [M, d], M = N * [num_ws *] s
        z = normalize_codes(sub) if self.hyperspherical else sub
        codes = self._codes()  # [K, d]
        flat_indices = codebook_ops.nearest_code_indices(
            tf.stop_gradient(z), tf.stop_gradient(codes))  # [M]
        chosen = tf.gather(codes, flat_indices)  # [M, d], differentiable w.r.t. the codebook

        batch = tf.shape(w)[0]
        codebook_error = tf.reshape(tf.square(tf.stop_gradient(z) - chosen), [batch, -1])
        commitment_error = tf.reshape(tf.square(z - tf.stop_gradient(chosen)), [batch, -1])
        per_sample = (tf.reduce_mean(codebook_error, axis=1)
                      + self.commitment_cost * tf.reduce_mean(commitment_error, axis=1))
        codebook_loss = tf.reduce_mean(codebook_error)
        commitment_loss = tf.reduce_mean(commitment_error)

        quantized = z + tf.stop_gradient(chosen - z)  # straight-through
        counts = codebook_ops.code_counts(flat_indices, self.num_codes)
        index_shape = tf.concat([tf.shape(w)[:-1], [tf.shape(w)[-1] // self.code_dim]], axis=0)
        return {
            "quantized": tf.cast(tf.reshape(quantized, tf.shape(w)), w.dtype),
            "indices": tf.reshape(flat_indices, index_shape),
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "loss": codebook_loss + self.commitment_cost * commitment_loss,
            "per_sample_loss": per_sample,
            "perplexity": codebook_ops.perplexity_from_counts(counts),
            "unused_fraction": codebook_ops.unused_fraction_from_counts(counts),
        }

    def call(self, w, return_lookup=False):
        """Returns w^q (same shape and dtype as w), or (w^q, lookup) with return_lookup=True."""
        result = self.lookup(w)
        return (result["quantized"], result) if return_lookup else result["quantized"]

    def compute_output_shape(self, input_shape):
        return input_shape

    def uniformity_loss(self):
        """L_uf of the current codebook (float32 scalar, gradient to the codebook)."""
        if not self.built:
            self.build()
        return uniformity_loss(self.codebook, self.uniformity_temperature)

    # ------------------------------------------------------------------------------------------
    # Usage statistics.

    def update_usage(self, indices):
        """Adds this batch's entry counts to `usage_counts` (SUM-all-reduced across replicas).

        Args:
          indices: int32 indices of any shape (normally `lookup(w)["indices"]`).

        Returns:
          float32 (K,) counts of this (global) batch.
        """
        counts = codebook_ops.code_counts(tf.cast(indices, tf.int32), self.num_codes)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            counts = context.all_reduce(tf.distribute.ReduceOp.SUM, counts)
        self.usage_counts.assign_add(counts)
        return counts

    def reset_usage(self):
        """Starts a new usage window (e.g. at every logging tick)."""
        self.usage_counts.assign(tf.zeros_like(self.usage_counts))

    def usage_statistics(self):
        """Usage since the last `reset_usage` and the codebook's uniformity (Python numbers).

        Returns:
          dict: perplexity (K for uniform use, 1 for a single entry), unused_fraction (entries
          never picked, "dead"), dead_codes (their number), num_vectors (sub-vectors counted),
          uniformity (L_uf of the current codebook).
        """
        counts = tf.convert_to_tensor(self.usage_counts)
        unused = float(codebook_ops.unused_fraction_from_counts(counts).numpy())
        return {
            "perplexity": float(codebook_ops.perplexity_from_counts(counts).numpy()),
            "unused_fraction": unused,
            "dead_codes": int(round(unused * self.num_codes)),
            "num_vectors": int(tf.reduce_sum(counts).numpy()),
            "uniformity": float(self.uniformity_loss().numpy()),
        }

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_codes": self.num_codes,
            "code_dim": self.code_dim,
            "hyperspherical": self.hyperspherical,
            "commitment_cost": self.commitment_cost,
            "uniformity_temperature": self.uniformity_temperature,
            "codebook_initializer": keras.initializers.serialize(self.codebook_initializer),
        })
        return config


#----------------------------------------------------------------------------
# Losses in the trainer.


def _num_replicas():
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def sq_generator_loss(layer, lookups, global_batch_size=None, weight=0.01, uniformity=True):
    """weight * (L_sq + L_uf): the generator's style-quantization term.

    Args:
      layer: the generator's StyleQuantization layer.
      lookups: one `lookup` result or a sequence of them (e.g. for w and the style-mixing w2).
      global_batch_size: under tf.distribute, the batch size summed over replicas. The
        per-sample L_sq are summed and divided by it, and L_uf (one value per replica, not per
        sample) is divided by the number of replicas, so the gradients Keras sums over replicas
        equal one device's with the global batch. None = batch mean (one device).
      weight: 0.01 in the paper's objective; Python float or scalar tensor.
      uniformity: False leaves L_uf out (the paper's ablation without it).

    Returns:
      float32 scalar.
    """
    if isinstance(lookups, dict):
        lookups = [lookups]
    total = codebook_ops.batch_loss(lookups, global_batch_size)
    if uniformity:
        uniformity_term = layer.uniformity_loss()
        if global_batch_size is not None:
            uniformity_term = uniformity_term / float(_num_replicas())
        total += uniformity_term
    return tf.cast(weight, tf.float32) * total


def perturb_latents(z, sigma=0.1, seed=None):
    """z + eps, eps ~ N(0, sigma^2): the latent of the second image of L_qcr.

    Args:
      z: (N, z_dim) latents.
      sigma: standard deviation of the perturbation (paper 0.1); 0 returns z itself.
      seed: a `keras.random.SeedGenerator` (what a compiled train_step needs), an int or None.

    Returns:
      tensor like z.
    """
    z = tf.convert_to_tensor(z)
    if isinstance(sigma, (int, float)) and sigma == 0:
        return z
    noise = keras.random.normal(tf.shape(z), stddev=1.0, dtype=z.dtype, seed=seed)
    return z + tf.cast(sigma, z.dtype) * noise


def sq_consistency_loss(d_out, d_out_perturbed, weight=0.01):
    """Quantisation-based consistency regularisation, per sample: weight * ||D(x) - D(x')||^2.

    x = G(w^q), x' = G(w'^q), w' = f_W(z + eps). The term belongs to the discriminator loss only:
    the trainer generates both images without gradient to G (stop_gradient, or outside the
    tape), so the gradient of this term reaches D only:

        w_q = sq(mapping(z)); w_q_p = sq(mapping(perturb_latents(z, sigma, seed)))
        x, x_p = tf.stop_gradient(synthesis(w_q)), tf.stop_gradient(synthesis(w_q_p))
        d_loss += tf.reduce_sum(sq_consistency_loss(D(x), D(x_p))) / global_batch_size

    Args:
      d_out, d_out_perturbed: discriminator outputs (N, ...) for x and x' (any float dtype).
      weight: lambda_qcr (paper 0.01).

    Returns:
      float32 (N,): weight times the squared difference summed over the non-batch axes.
    """
    diff = tf.cast(d_out, tf.float32) - tf.cast(d_out_perturbed, tf.float32)
    squared = tf.reshape(tf.square(diff), [tf.shape(diff)[0], -1])
    return tf.cast(weight, tf.float32) * tf.reduce_sum(squared, axis=1)
