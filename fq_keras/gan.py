"""FQ in a GAN's custom `train_step`: the loss wiring, the dictionary updates, the warm-up.

Official wiring (FQ-StyleGAN2, FQ-U-GAT-IT; DESIGN.md "FQ semantics"):

    D loss += alpha * (fq(real) + fq(fake))        G loss += alpha * fq(fake)

Dictionary updates, at one of the UPDATE_CADENCES (`update_after_phase`):
  "step" (default): one EMA update per discriminator step, from that step's real and fake
    features together; none from the G step.
  "official": one update per D evaluation of the main phases, in the order they ran (the
    released code updates inside every D forward in training mode): the G step's fakes, the D
    step's reals, the D step's fakes (FQ-BigGAN: one D forward on fakes and reals together).
    Each update uses the assignments its own forward computed, as the released code (whose two
    D-step updates run concurrently in no fixed order; here reals, then fakes).
Never from R1, path-length, gradient-penalty or consistency-term evaluations.

The paper's warm-up (`warmup_alpha`, `set_quantized_forward`): alpha ramps from 0 and layers
built with forward="quantized" feed h forward until the warm-up ends, then h + sg(e - h); the
trainers set both in-graph from their counters, so a resumed run switches at the same step.

A discriminator returns one lookup per FQ layer (`FeatureQuantization.call(h,
return_lookup=True)`), in the order of its FQ layers:

    with tf.GradientTape() as tape:
        real_logits, real_fq = D(reals, return_fq=True)
        fake_logits, fake_fq = D(fakes, return_fq=True)
        d_loss = gan_loss + fq_loss(real_fq, global_batch) + fq_loss(fake_fq, global_batch)
    ... apply D gradients ...
    update_after_phase("D", cadence, D.fq_layers, real_fq, fake_fq)

and in the G step `g_loss += fq_loss(fake_fq, global_batch)`, then
`update_after_phase("G", cadence, D.fq_layers, fake_fq)` (an update only at "official").
"""

import tensorflow as tf

from fq_keras import codebook

UPDATE_CADENCES = ("step", "official")


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
    return tf.cast(weight, tf.float32) * codebook.batch_loss(lookups, global_batch_size)


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


def check_update_cadence(cadence, owner):
    """ValueError naming `owner` unless `cadence` is one of UPDATE_CADENCES."""
    if cadence not in UPDATE_CADENCES:
        raise ValueError(f"{owner}: the FQ update cadence must be one of {UPDATE_CADENCES}, got "
                         f"{cadence!r}.")


def update_after_phase(phase, cadence, fq_layers, *batches_of_lookups):
    """The dictionary updates of one main phase at `cadence` (see the module docstring).

    Args:
      phase: "G" (the batches are the G step's D evaluations) or "D" (the D step's).
      cadence: one of UPDATE_CADENCES.
      fq_layers: the discriminator's FeatureQuantization layers.
      *batches_of_lookups: one sequence of lookups (aligned with `fq_layers`) per D evaluation,
        in the order they ran.

    Returns:
      per-layer usage dicts of the phase's last update; [] when the phase made none.
    """
    check_update_cadence(cadence, "update_after_phase")
    if phase not in ("G", "D"):
        raise ValueError(f"update_after_phase: phase must be 'G' or 'D', got {phase!r}.")
    if cadence == "step":
        return update_dictionaries(fq_layers, *batches_of_lookups) if phase == "D" else []
    stats = []
    for lookups in batches_of_lookups:
        stats = update_dictionaries(fq_layers, lookups)
    return stats


def warmup_alpha(alpha, progress, warmup):
    """The FQ loss weight at `progress`: alpha * min(progress / warmup, 1) (float32 scalar).

    progress, warmup: the trainer's counter and the warm-up length in one unit (kimg or
    iterations); warmup <= 0 = no warm-up (alpha throughout).
    """
    if warmup <= 0:
        return tf.constant(alpha, tf.float32)
    return alpha * tf.minimum(tf.cast(progress, tf.float32) / float(warmup), 1.0)


def set_quantized_forward(fq_layers, progress, warmup):
    """Switches the layers built with forward="quantized" to h + sg(e - h) once `progress`
    reaches `warmup` (the end of the alpha ramp), h before it (the paper's warm-up); quantised
    throughout when warmup <= 0. Call before the D evaluations of a step, inside the graph.
    Units as `warmup_alpha`."""
    on = tf.constant(1.0, tf.float32) if warmup <= 0 else tf.cast(
        tf.cast(progress, tf.float64) >= float(warmup), tf.float32)
    for layer in fq_layers:
        if layer.forward == "quantized":
            layer.quantized_forward.assign(on)
