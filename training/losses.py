"""GAN losses and regularisers of ProGAN, StyleGAN and StyleGAN2 (NVlabs `training/loss.py`).

Every function returns PER-SAMPLE values, shape (N,), float32: the trainer sums them over its
replica's batch and divides by the global batch, so gradients summed across replicas equal one
device with the global batch. Weights (gamma, lambda, intervals) are applied by the trainer.
"""

import tensorflow as tf

from networks.layers import replica_random


def _per_sample(logits):
    return tf.reshape(tf.cast(logits, tf.float32), [-1])


# ---------------------------------------------------------------------------------------------
# Non-saturating logistic loss (StyleGAN, StyleGAN2).

def g_logistic_nonsaturating(fake_logits):
    """G loss softplus(-D(G(z)))."""
    return tf.nn.softplus(-_per_sample(fake_logits))


def d_logistic(real_logits, fake_logits):
    """D loss softplus(D(G(z))) + softplus(-D(x))."""
    return tf.nn.softplus(_per_sample(fake_logits)) + tf.nn.softplus(-_per_sample(real_logits))


# ---------------------------------------------------------------------------------------------
# Gradient penalties at a progressive stage.

def full_resolution_gradient_ratio(stage_resolution, resolution):
    """r = s / R: D's input gradient norm per image in the official code over the one here.

    At a progressive stage of resolution s < R the official ProGAN / StyleGAN code feeds D R x R
    images (the stage's images nearest-upscaled R/s times, `process_reals` and G's output) and
    D average-pools them back to s x s (`downscale2d` in `grow`), during fade-ins too. The
    gradient with respect to each of the (R/s)^2 copies of a pixel is (s/R)^2 times the one
    with respect to that pixel, so the norm over an image is (s/R) times the norm here, where D
    sees the s x s images. The penalties take the gradient norm on the official scale: R1 x r^2,
    WGAN-GP on r ||grad||, so a stage trains with the reference's regularisation strength.
    """
    return float(stage_resolution) / float(resolution)


# ---------------------------------------------------------------------------------------------
# WGAN-GP (ProGAN).

def g_wgan(fake_logits):
    """G loss -D(G(z))."""
    return -_per_sample(fake_logits)


def d_wgan(real_logits, fake_logits):
    """D loss D(G(z)) - D(x)."""
    return _per_sample(fake_logits) - _per_sample(real_logits)


def wgan_epsilon_drift(real_logits):
    """ProGAN's drift term D(x)^2 (weight epsilon_drift = 0.001 in the trainer)."""
    return tf.square(_per_sample(real_logits))


def wgan_gradient_penalty(discriminate, reals, fakes, seed_generator, wgan_target=1.0,
                          stage_ratio=1.0):
    """(r ||grad_x D(x_hat)|| - target)^2 / target^2 with x_hat = lerp(x, G(z), u), u ~ U[0, 1).

    Args:
      discriminate: images -> logits (N, 1).
      reals, fakes: (N, H, W, C), same shape.
      seed_generator: keras.random.SeedGenerator for the per-sample mixing factors u.
      wgan_target: the target gradient norm (1).
      stage_ratio: r = s / R, see `full_resolution_gradient_ratio` (1 at full resolution).
    """
    batch = tf.shape(reals)[0]
    mix = tf.cast(replica_random("uniform", [batch, 1, 1, 1], seed_generator), reals.dtype)
    mixed = reals + (fakes - reals) * mix
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        total = tf.reduce_sum(tf.cast(discriminate(mixed), tf.float32))
    grads = tape.gradient(total, mixed)
    norms = tf.sqrt(tf.reduce_sum(tf.square(tf.cast(grads, tf.float32)), axis=[1, 2, 3]))
    return tf.square(norms * stage_ratio - wgan_target) / (wgan_target ** 2)


# ---------------------------------------------------------------------------------------------
# Regularisers (StyleGAN, StyleGAN2).

def r1_penalty(discriminate, reals, stage_ratio=1.0):
    """R1: r^2 * sum over pixels of (d sum D(x) / dx)^2, for each real image.

    Args:
      discriminate: images -> logits (N, 1), or a tuple whose first item is the logits (so the
        same forward can also serve the main loss and FQ, as StyleGAN v1 does).
      reals: (N, H, W, C).
      stage_ratio: r = s / R, see `full_resolution_gradient_ratio` (1 at full resolution).

    Returns:
      (penalty (N,), whatever `discriminate` returned). Called inside the tape of the D update,
      the penalty is differentiable with respect to D's weights (double back-propagation).
    """
    with tf.GradientTape() as tape:
        tape.watch(reals)
        outputs = discriminate(reals)
        logits = outputs[0] if isinstance(outputs, tuple) else outputs
        total = tf.reduce_sum(tf.cast(logits, tf.float32))
    grads = tf.cast(tape.gradient(total, reals), tf.float32)
    return tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) * stage_ratio ** 2, outputs


def path_lengths(synthesize, dlatents, seed_generator):
    """StyleGAN2 path lengths sqrt(mean_layers sum_w (d sum(img * y) / dw)^2), y ~ N(0,1)/sqrt(HW).

    Args:
      synthesize: dlatents (N, num_ws, w_dim) -> images (N, H, W, C).
      dlatents: (N, num_ws, w_dim).
      seed_generator: RNG of the projection noise y.

    Returns:
      (N,) path lengths; the trainer tracks pl_mean and penalises (L - pl_mean)^2. Called inside
      the tape of the G update, they are differentiable with respect to G's weights.
    """
    with tf.GradientTape() as tape:
        tape.watch(dlatents)
        images = tf.cast(synthesize(dlatents), tf.float32)
        shape = tf.shape(images)
        noise = replica_random("normal", tf.unstack(shape), seed_generator) / tf.sqrt(
            tf.cast(shape[1] * shape[2], tf.float32))
        projected = tf.reduce_sum(images * noise)
    grads = tf.cast(tape.gradient(projected, dlatents), tf.float32)
    return tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=2), axis=1))
