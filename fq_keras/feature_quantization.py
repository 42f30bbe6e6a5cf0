"""Feature quantization (FQ-GAN, Zhao et al., ICML 2020): an EMA dictionary of feature prototypes.

The layer keeps a dictionary E of K items in R^C. `lookup` finds each feature vector's nearest
item and the commitment loss; `update_dictionary` moves the items by an exponential moving average
of the features assigned to them (paper Eq. 8). The update is explicit and separate from the
forward pass: the trainers' custom `train_step` performs it, by default once per discriminator
step from that step's real and fake features together (`fq_keras.gan` has the cadences).

Defaults follow the official code, not the paper (`../shared/reference/fq-official.md`): the
discriminator's forward pass returns the continuous features (`forward="continuous"`), and the EMA
is the zero-debiased TensorFlow/Sonnet variant (`zero_debias=True`).
"""

import keras
import tensorflow as tf

from fq_keras import codebook

FORWARD_MODES = ("continuous", "quantized")


def _commitment_per_sample(flat, quantized, batch, cost):
    """cost * mean over each sample's elements of (h - quantized)^2: float32 (N,).

    flat: float32 (N * P, C), the features of N samples of P positions each, sample-major (h
    reshaped; the gradient flows to it); quantized: float32, flat's shape, treated as a constant
    (sg(e_k)); batch: N. The gradient is written out, dL/dh = (h - q) * 2 cost g / M per sample
    (M = P * C elements per sample): one product over h instead of the five passes (tile,
    divide, two products, negation) automatic differentiation makes of mean(square(q - h)).
    """
    @tf.custom_gradient
    def per_sample(flat):
        diff = tf.reshape(flat - quantized, [batch, -1])  # [N, M]
        elements = diff.shape[1] or tf.cast(tf.shape(diff)[1], tf.float32)  # static if known
        value = cost * tf.reduce_mean(tf.square(diff), axis=1)

        def gradient(upstream):  # upstream: [N]
            scale = upstream * (2.0 * cost / elements)
            return tf.reshape(diff * scale[:, tf.newaxis], tf.shape(flat))

        return value, gradient

    return per_sample(flat)


def _default_embeddings_initializer():
    # The official FQ-StyleGAN2 code stores the dictionary as [C, K] with TF1's default
    # variance-scaling initializer (fan_in = C, truncated normal). Our layout is (K, C), so the
    # same distribution is Keras' fan_out mode.
    return keras.initializers.VarianceScaling(
        scale=1.0, mode="fan_out", distribution="truncated_normal")


@keras.saving.register_keras_serializable(package="fq_keras")
class FeatureQuantization(keras.layers.Layer):
    """Feature quantization with an EMA dictionary (FQ-GAN Eq. 4-9).

    Args:
      num_embeddings: K, number of dictionary items (the paper's 2^P). At least 2.
      decay: EMA decay lambda in (0, 1). Official: 0.8 (StyleGAN2), 0.85 (U-GAT-IT), 0.8 (BigGAN).
      commitment_cost: weight c of the commitment loss c * mean((sg(e_k) - h)^2). Official
        StyleGAN2: 0.25. The paper's alpha multiplies the loss outside the layer (`fq_keras.gan`).
      epsilon: Laplace smoothing of the cluster sizes, > 0. Official: 1e-5.
      zero_debias: True = the official TensorFlow EMA (Sonnet v1 `assign_moving_average` with
        zero debiasing: accumulators start at 0 and are divided by 1 - decay^t); False = the
        PyTorch (FQ-BigGAN) variant: plain EMA, N_0 = 0, m_0 = the initial dictionary.
      forward: what `call` returns. "continuous" = h unchanged (official code: FQ only adds a loss
        and keeps a dictionary); "quantized" = h + s * sg(e_k - h), the straight-through
        quantised features of the paper once its switch s (`quantized_forward`, 1 unless a
        trainer's warm-up holds it at 0) is on.
      embeddings_initializer: initial dictionary (K, C). Default: variance scaling with fan-in C,
        truncated normal (official FQ-StyleGAN2). U-GAT-IT used N(0, 1):
        `keras.initializers.RandomNormal(stddev=1.0)`.

    Input shape:
      (N, H, W, C) or (N, C); any float dtype. Dictionary math is always float32.

    Output shape:
      Same shape and dtype as the input.

    State (all non-trainable, float32 unless stated; no gradient ever reaches them):
      embeddings (K, C); ema_cluster_size (K,) and ema_embedding_sums (K, C), the EMA
      accumulators (biased ones when zero_debias); num_updates (int64 scalar, the debias step t);
      last_perplexity and last_unused_fraction (scalars, usage over the last update);
      with forward="quantized", quantized_forward (scalar s in {0, 1}, initially 1: the paper's
      warm-up feeds h while a trainer holds it at 0; trainers set it from their counters, so
      checkpoints leave it out).

    Example:
      >>> fq = FeatureQuantization(num_embeddings=128, decay=0.8, commitment_cost=0.25)
      >>> h = keras.random.normal((4, 8, 8, 32))
      >>> out = fq.lookup(h)          # quantized, indices, loss, per_sample_loss, perplexity
      >>> fq.update_dictionary(h, out["indices"])   # once per D step, from real + fake features
    """

    def __init__(self,
                 num_embeddings,
                 decay=0.8,
                 commitment_cost=0.25,
                 epsilon=1e-5,
                 zero_debias=True,
                 forward="continuous",
                 embeddings_initializer=None,
                 **kwargs):
        # Inputs keep their dtype: under mixed_float16 the output must match the input.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int) or num_embeddings < 2:
            raise ValueError(
                f"FeatureQuantization: num_embeddings must be an integer >= 2, got {num_embeddings!r}.")
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"FeatureQuantization: decay must be in (0, 1), got {decay!r}.")
        if not float(epsilon) > 0.0:
            raise ValueError(f"FeatureQuantization: epsilon must be > 0, got {epsilon!r}.")
        if not float(commitment_cost) >= 0.0:
            raise ValueError(
                f"FeatureQuantization: commitment_cost must be >= 0, got {commitment_cost!r}.")
        if forward not in FORWARD_MODES:
            raise ValueError(
                f"FeatureQuantization: forward must be one of {FORWARD_MODES}, got {forward!r}.")
        self.num_embeddings = num_embeddings
        self.decay = float(decay)
        self.commitment_cost = float(commitment_cost)
        self.epsilon = float(epsilon)
        self.zero_debias = bool(zero_debias)
        self.forward = forward
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or _default_embeddings_initializer())
        self.channels = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or len(input_shape) < 2:
            raise ValueError(
                "FeatureQuantization: inputs must be (N, C) or (N, H, W, C) with a known channel "
                f"count, got shape {tuple(input_shape)}.")
        self.channels = int(channels)
        K, C = self.num_embeddings, self.channels
        # Every replica computes the same update from all-reduced statistics, so the first
        # replica's value is the value (tf.distribute would otherwise refuse replica-context
        # assignment of a mirrored variable).
        state = dict(trainable=False, dtype="float32", autocast=False,
                     aggregation="only_first_replica")
        self.embeddings = self.add_weight(
            name="embeddings", shape=(K, C), initializer=self.embeddings_initializer, **state)
        self.ema_cluster_size = self.add_weight(
            name="ema_cluster_size", shape=(K,), initializer="zeros", **state)
        # Zero-debiased EMA starts its sums at 0 (their initial value cancels out); the plain
        # PyTorch variant starts them at the initial dictionary (m_0 = e_0, N_0 = 0).
        sums_init = "zeros" if self.zero_debias else (
            lambda shape, dtype=None: tf.identity(self.embeddings.value))
        self.ema_embedding_sums = self.add_weight(
            name="ema_embedding_sums", shape=(K, C), initializer=sums_init, **state)
        self.num_updates = self.add_weight(
            name="num_updates", shape=(), initializer="zeros", trainable=False, dtype="int64",
            aggregation="only_first_replica")
        self.last_perplexity = self.add_weight(
            name="last_perplexity", shape=(), initializer="zeros", **state)
        self.last_unused_fraction = self.add_weight(
            name="last_unused_fraction", shape=(), initializer="ones", **state)
        if self.forward == "quantized":
            # A variable, not a rebuild: the paper's warm-up switches it in-graph (fq_keras.gan).
            self.quantized_forward = self.add_weight(
                name="quantized_forward", shape=(), initializer="ones", **state)
        self.built = True

    # ------------------------------------------------------------------------------------------

    def _flatten(self, h):
        """Validates h against the dictionary and returns float32 (N, C)."""
        if not self.built:
            self.build(tuple(h.shape))
        if h.shape.rank is not None and h.shape.rank < 2:
            raise ValueError(
                f"FeatureQuantization '{self.name}': inputs must be (N, C) or (N, H, W, C), "
                f"got shape {tuple(h.shape)}.")
        if h.shape[-1] != self.channels:
            raise ValueError(
                f"FeatureQuantization '{self.name}': inputs have {h.shape[-1]} channels but the "
                f"dictionary has {self.channels} (shape ({self.num_embeddings}, {self.channels})). "
                "Use one FeatureQuantization layer per feature map.")
        # Reshape, then cast: one cast that the look-up, the loss and the gradient share.
        return tf.cast(tf.reshape(h, [-1, self.channels]), tf.float32)

    def lookup(self, h):
        """Nearest dictionary item for every feature vector, and the commitment loss.

        Args:
          h: (N, H, W, C) or (N, C) features, any float dtype.

        Returns:
          dict with
            quantized: nearest items e_k, same shape and dtype as h (no gradient to h or E).
            indices: int32, h.shape[:-1].
            loss: float32 scalar, commitment_cost * mean((sg(e_k) - h)^2) over all elements.
            per_sample_loss: float32 (N,), the same mean taken per sample (official StyleGAN
              form), for losses scaled by the global batch under tf.distribute.
            perplexity: float32 scalar, exp(entropy) of item usage in this batch.
            features: h as float32 (N * H * W, C) (the input of `update_dictionary`).
        """
        h = tf.convert_to_tensor(h)
        flat = self._flatten(h)   # builds the layer on first use
        embeddings = tf.convert_to_tensor(self.embeddings)
        flat_indices = codebook.nearest_code_indices(flat, embeddings)  # [N*H*W]
        quantized = tf.gather(tf.stop_gradient(embeddings), flat_indices)  # [N*H*W, C]
        per_sample = _commitment_per_sample(flat, quantized, tf.shape(h)[0],
                                            self.commitment_cost)
        counts = codebook.code_counts(flat_indices, self.num_embeddings)
        return {
            "quantized": tf.reshape(tf.cast(quantized, h.dtype), tf.shape(h)),
            "indices": tf.reshape(flat_indices, tf.shape(h)[:-1]),
            # Every sample has the same element count: the mean of the per-sample means.
            "loss": tf.reduce_mean(per_sample),
            "per_sample_loss": per_sample,
            "perplexity": codebook.perplexity_from_counts(counts),
            "features": flat,
        }

    def merge_lookups(self, lookups, merge):
        """One look-up of a batch whose rows were looked up in parts (e.g. `BatchLanes`).

        Args:
          lookups: `lookup` results of the parts, each of n / P samples.
          merge: puts the parts' (n / P, ...) tensors back in batch order, (n, ...)
            (`BatchLanes.merge`).

        Returns:
          the dict `lookup` returns for the whole batch: the same items, losses, counts and
          perplexity; only the parts' sums (the mean loss) are added in another order.
        """
        def merged(key):
            return merge([result[key] for result in lookups])

        per_sample = merged("per_sample_loss")
        indices = merged("indices")
        # features: (n / P * positions, C) per part -> per sample, merged, flat again.
        features = merge([tf.reshape(result["features"],
                                     [tf.shape(result["per_sample_loss"])[0], -1, self.channels])
                          for result in lookups])
        counts = codebook.code_counts(indices, self.num_embeddings)
        return {
            "quantized": merged("quantized"),
            "indices": indices,
            "loss": tf.reduce_mean(per_sample),
            "per_sample_loss": per_sample,
            "perplexity": codebook.perplexity_from_counts(counts),
            "features": tf.reshape(features, [-1, self.channels]),
        }

    def update_dictionary(self, h, indices):
        """One EMA step of the dictionary (paper Eq. 8) with Laplace smoothing.

            N_k <- lambda N_k + (1 - lambda) n_k         n_k = #{i : k(i) = k}
            m_k <- lambda m_k + (1 - lambda) sum_{k(i)=k} h_i
            N~_k = (N_k + eps) / (n + K eps) * n,        n = sum_k N_k
            e_k  = m_k / N~_k

        With zero_debias, N and m above are the accumulators divided by 1 - lambda^t.
        Inside a tf.distribute replica context n_k and the sums are all-reduced (SUM) first, so
        every replica holds the same dictionary and N replicas equal one device with the global
        batch.

        Args:
          h: features (N, H, W, C) or (N, C), no gradient is taken; or a list of such batches
            (e.g. the reals and the fakes of a D step), which update as their concatenation
            would without building it. Non-finite values raise InvalidArgumentError before
            anything is written.
          indices: int32 h.shape[:-1], normally `lookup(h)["indices"]`; a list aligned with h's.

        Returns:
          dict of float32 scalars: perplexity and unused_fraction of this update's (global) counts.
        """
        batches = list(h) if isinstance(h, (list, tuple)) else [h]
        batch_indices = list(indices) if isinstance(indices, (list, tuple)) else [indices]
        if len(batches) != len(batch_indices):
            raise ValueError(f"FeatureQuantization '{self.name}': {len(batches)} feature batches "
                             f"but {len(batch_indices)} index batches.")
        with tf.name_scope(f"{self.name}_update"):   # one scope to find it by in a profile
            return self._update_dictionary(batches, batch_indices)

    def _update_dictionary(self, batches, batch_indices):
        flat_indices = [tf.reshape(tf.cast(i, tf.int32), [-1]) for i in batch_indices]
        batch_sums = []
        for features, indices in zip(batches, flat_indices):
            flat = tf.stop_gradient(self._flatten(tf.convert_to_tensor(features)))
            batch_sums.append(codebook.code_sums(flat, indices, self.num_embeddings))  # [K, C]
        sums = tf.add_n(batch_sums)
        counts = codebook.code_counts(tf.concat(flat_indices, 0), self.num_embeddings)  # [K]
        # A non-finite feature makes its item's sum non-finite (the nearest item of a NaN row
        # is still an item), so checking the (K, C) sums checks the (N, C) features, K/N the work.
        sums = tf.debugging.check_numerics(
            sums, f"FeatureQuantization '{self.name}': non-finite features passed to "
                  "update_dictionary; the dictionary was left unchanged")
        replica_context = tf.distribute.get_replica_context()
        if replica_context is not None and replica_context.num_replicas_in_sync > 1:
            counts, sums = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, [counts, sums])

        step = self.num_updates + 1
        one_minus_decay = 1.0 - self.decay
        # Written as TF's assign_moving_average does (biased -= (biased - value) * (1 - decay)).
        size_acc = self.ema_cluster_size - (self.ema_cluster_size - counts) * one_minus_decay
        sums_acc = self.ema_embedding_sums - (self.ema_embedding_sums - sums) * one_minus_decay
        if self.zero_debias:
            bias_factor = 1.0 - tf.pow(tf.constant(self.decay, tf.float32), tf.cast(step, tf.float32))
            cluster_size, embedding_sums = size_acc / bias_factor, sums_acc / bias_factor
        else:
            cluster_size, embedding_sums = size_acc, sums_acc
        total = tf.reduce_sum(cluster_size)
        smoothed = (cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        perplexity = codebook.perplexity_from_counts(counts)
        unused = codebook.unused_fraction_from_counts(counts)

        # In graph mode nothing may be written before the finiteness check has passed (the
        # cluster sizes do not depend on the features, so the check must be an explicit edge).
        with tf.control_dependencies([sums]):
            self.ema_cluster_size.assign(size_acc)
            self.ema_embedding_sums.assign(sums_acc)
            self.embeddings.assign(embedding_sums / tf.reshape(smoothed, [-1, 1]))
            self.num_updates.assign(step)
            self.last_perplexity.assign(perplexity)
            self.last_unused_fraction.assign(unused)
        return {"perplexity": perplexity, "unused_fraction": unused}

    def call(self, h, return_lookup=False):
        """Returns h ("continuous") or h + s * sg(e_k - h) ("quantized", s the switch
        `quantized_forward`: 0 gives h, 1 the paper's h + sg(e_k - h)), in h's dtype.

        With return_lookup=True returns (output, lookup) so a discriminator can hand the trainer
        its FQ results without a second nearest-neighbour search.
        """
        if self.forward == "continuous" and not return_lookup:
            return h
        result = self.lookup(h)
        if self.forward == "continuous":
            output = h
        else:
            switch = tf.cast(self.quantized_forward, h.dtype)
            output = h + switch * tf.stop_gradient(result["quantized"] - h)
        return (output, result) if return_lookup else output

    def compute_output_shape(self, input_shape):
        return input_shape

    def usage_statistics(self):
        """Perplexity and fraction of unused items over the last update (Python floats)."""
        return {"perplexity": float(self.last_perplexity.numpy()),
                "unused_fraction": float(self.last_unused_fraction.numpy()),
                "num_updates": int(self.num_updates.numpy())}

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_embeddings": self.num_embeddings,
            "decay": self.decay,
            "commitment_cost": self.commitment_cost,
            "epsilon": self.epsilon,
            "zero_debias": self.zero_debias,
            "forward": self.forward,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        })
        return config
