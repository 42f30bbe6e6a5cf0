"""FQ in a GAN's custom `train_step`: the loss wiring and the once-per-D-step dictionary update.

Official wiring (FQ-StyleGAN2, FQ-U-GAT-IT; DESIGN.md "FQ semantics"):

    D loss += alpha * (fq(real) + fq(fake))        G loss += alpha * fq(fake)

and one EMA update per discriminator step, from that step's real and fake features together;
never from the G step, R1 or path-length passes. A discriminator returns one lookup per FQ layer
(`FeatureQuantization.call(h, return_lookup=True)`), in the order of its FQ layers:

    with tf.GradientTape() as tape:
        real_logits, real_fq = D(reals, return_fq=True)
        fake_logits, fake_fq = D(fakes, return_fq=True)
        d_loss = gan_loss + fq_loss(real_fq, global_batch) + fq_loss(fake_fq, global_batch)
    ... apply D gradients ...
    update_dictionaries(D.fq_layers, real_fq, fake_fq)

and in the G step `g_loss += fq_loss(fake_fq, global_batch)` with no update.
"""

import tensorflow as tf


def fq_loss(lookups, global_batch_size=None, weight=1.0):
    """Sum over FQ layers of the commitment losses of one batch.

    Args:
      lookups: sequence of `FeatureQuantization.lookup` results, one per FQ layer.
      global_batch_size: under tf.distribute, the batch size summed over replicas; each layer's
        per-sample losses are summed and divided by it, so gradients summed over replicas equal
        one device with the global batch. None = mean over this batch.
      weight: alpha, the paper's FQ loss weight (1 in the official code; annealed from 0 to 1
        in the paper's warm-up). Python float or scalar tensor.

    Returns:
      float32 scalar (0 when `lookups` is empty, i.e. the baseline).
    """
    total = tf.constant(0.0, tf.float32)
    for result in lookups:
        per_sample = result["per_sample_loss"]
        if global_batch_size is None:
            total += tf.reduce_mean(per_sample)
        else:
            total += tf.reduce_sum(per_sample) / tf.cast(global_batch_size, tf.float32)
    return tf.cast(weight, tf.float32) * total


def update_dictionaries(fq_layers, *batches_of_lookups):
    """One EMA update per FQ layer from several batches (normally real and fake) at once.

    Args:
      fq_layers: the discriminator's FeatureQuantization layers.
      *batches_of_lookups: for each batch, a sequence of lookups aligned with `fq_layers`.

    Returns:
      list of per-layer usage dicts (perplexity, unused_fraction) of this update.
    """
    stats = []
    for i, layer in enumerate(fq_layers):
        if any(len(lookups) != len(fq_layers) for lookups in batches_of_lookups):
            raise ValueError(
                f"update_dictionaries: got lookups for {[len(b) for b in batches_of_lookups]} "
                f"layers, expected {len(fq_layers)} (one per FQ layer, in order).")
        stats.append(layer.update_dictionary(
            [lookups[i]["features"] for lookups in batches_of_lookups],
            [lookups[i]["indices"] for lookups in batches_of_lookups]))
    return stats
