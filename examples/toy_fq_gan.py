"""A tiny FQ-GAN on a ring of 8 Gaussians: the smallest complete use of fq_keras.

Shows the whole FQ recipe in ~150 lines: a discriminator with a FeatureQuantization layer after
its hidden layers, a keras.Model trainer whose custom `train_step` adds the FQ losses to D (real +
fake) and G (fake) and performs the dictionary's EMA update once per D step, driven by `fit()`.

    python examples/toy_fq_gan.py                 # ~1 minute on a 2-core CPU
    python examples/toy_fq_gan.py --fq=false      # the same GAN without FQ

It prints losses, the dictionary's perplexity, and how many of the 8 modes the generator covers,
and writes a scatter plot of real (grey) and generated (red) points to --out.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # as the tools do: no start-up noise

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import fq_keras  # noqa: E402

RING_MODES = 8
RING_RADIUS = 2.0
RING_STDDEV = 0.02


def ring_modes():
    """The 8 mode centres, float32 (8, 2)."""
    angles = 2 * np.pi * np.arange(RING_MODES) / RING_MODES
    return (RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)


def ring_dataset(batch_size, seed):
    """Endless tf.data stream of (batch_size, 2) samples from the ring, deterministic per seed."""
    centres = tf.constant(ring_modes())

    def sample(step):
        seeds = tf.stack([tf.cast(seed, tf.int64), step])
        picks = tf.random.stateless_uniform([batch_size], seeds, 0, RING_MODES, tf.int32)
        noise = tf.random.stateless_normal([batch_size, 2], seeds + 1, stddev=RING_STDDEV)
        return tf.gather(centres, picks) + noise

    return tf.data.Dataset.counter().map(sample).prefetch(tf.data.AUTOTUNE)


def mode_coverage(points):
    """(modes with >= 1% of the points within 3 stddev, fraction of such high-quality points)."""
    d = np.linalg.norm(points[:, None, :] - ring_modes()[None], axis=-1)
    near = d.min(1) < 3 * RING_STDDEV * 5  # 5x the data stddev: generous for a 1-minute run
    hits = np.bincount(d.argmin(1)[near], minlength=RING_MODES)
    return int((hits >= 0.01 * len(points)).sum()), float(near.mean())


class ToyDiscriminator(keras.Model):
    """MLP 2 -> 128 -> 128 -> 1 with FQ on the second hidden layer's 128-d features."""

    def __init__(self, fq_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [keras.layers.Dense(128, activation=keras.layers.LeakyReLU(0.2))
                       for _ in range(2)]
        self.fq_layers = [fq_keras.FeatureQuantization(**fq_kwargs)] if fq_kwargs else []
        self.out = keras.layers.Dense(1)

    def call(self, x, return_fq=False):
        lookups = []
        for layer in self.hidden:
            x = layer(x)
        for fq in self.fq_layers:
            x, result = fq(x, return_lookup=True)
            lookups.append(result)
        logits = self.out(x)
        return (logits, lookups) if return_fq else logits


class ToyFQGAN(keras.Model):
    """Non-saturating logistic GAN; one D step then one G step per train_step."""

    def __init__(self, discriminator, latent_dim=8, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.generator = keras.Sequential(
            [keras.layers.Dense(128, activation="relu") for _ in range(2)] + [keras.layers.Dense(2)])
        self.discriminator = discriminator
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.g_optimizer = keras.optimizers.Adam(2e-3, beta_1=0.5, beta_2=0.99)
        self.d_optimizer = keras.optimizers.Adam(2e-3, beta_1=0.5, beta_2=0.99)
        self.generator.build((None, latent_dim))
        self.discriminator(tf.zeros((1, 2)))
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.built = True

    def train_step(self, reals):
        batch = tf.shape(reals)[0]
        # Hand-written losses are summed over the global batch (Keras sums replica gradients).
        global_batch = batch * tf.distribute.get_strategy().num_replicas_in_sync
        fq_layers = self.discriminator.fq_layers

        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        fakes = self.generator(z)
        with tf.GradientTape() as tape:
            real_logits, real_fq = self.discriminator(reals, return_fq=True)
            fake_logits, fake_fq = self.discriminator(fakes, return_fq=True)
            gan_loss = tf.reduce_sum(tf.nn.softplus(fake_logits) + tf.nn.softplus(-real_logits))
            fq_d = (fq_keras.fq_loss(real_fq, global_batch) + fq_keras.fq_loss(fake_fq, global_batch))
            d_loss = gan_loss / tf.cast(global_batch, tf.float32) + fq_d
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply(tape.gradient(d_loss, d_vars), d_vars)
        usage = fq_keras.update_dictionaries(fq_layers, real_fq, fake_fq)  # once per D step

        z = keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            fake_logits, fake_fq = self.discriminator(self.generator(z), return_fq=True)
            g_loss = (tf.reduce_sum(tf.nn.softplus(-fake_logits)) / tf.cast(global_batch, tf.float32)
                      + fq_keras.fq_loss(fake_fq, global_batch))
        g_vars = self.generator.trainable_variables
        self.g_optimizer.apply(tape.gradient(g_loss, g_vars), g_vars)

        logs = {"d_loss": d_loss, "g_loss": g_loss, "fq_d": fq_d}
        for i, stats in enumerate(usage):
            logs[f"fq{i}_perplexity"] = stats["perplexity"]
        return logs

    def sample(self, n, seed=123):
        z = keras.random.normal((n, self.latent_dim), seed=seed)
        return self.generator(z).numpy()


def save_scatter(path, reals, fakes, size=256, extent=3.0):
    """Scatter plot PNG with Pillow only: reals grey, fakes red, in [-extent, extent]^2."""
    from PIL import Image
    image = np.full((size, size, 3), 255, np.uint8)
    for points, colour in ((reals, (160, 160, 160)), (fakes, (220, 30, 30))):
        px = np.clip(((points + extent) / (2 * extent) * (size - 1)).round().astype(int), 0, size - 1)
        image[size - 1 - px[:, 1], px[:, 0]] = colour
    Image.fromarray(image).save(path)


FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags; defined only when run as a script, so importing never clashes."""
    flags.DEFINE_integer("steps", 2000, "Training steps (one D and one G update each).")
    flags.DEFINE_integer("batch", 256, "Minibatch size.")
    flags.DEFINE_boolean("fq", True, "Quantise the discriminator's features (false = baseline GAN).")
    flags.DEFINE_integer("num_embeddings", 64, "Dictionary size K.")
    flags.DEFINE_float("decay", 0.8, "EMA decay of the dictionary.")
    flags.DEFINE_float("commitment_cost", 0.25, "Weight of the FQ commitment loss.")
    flags.DEFINE_integer("seed", 0, "Random seed (data, initialisation, latents).")
    flags.DEFINE_string("out", "runs/toy_fq_gan.png", "Scatter plot of reals and generated points.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.steps < 1 or FLAGS.batch < 1:
        raise app.UsageError("--steps and --batch must be positive.")
    keras.utils.set_random_seed(FLAGS.seed)
    fq_kwargs = dict(num_embeddings=FLAGS.num_embeddings, decay=FLAGS.decay,
                     commitment_cost=FLAGS.commitment_cost) if FLAGS.fq else None
    gan = ToyFQGAN(ToyDiscriminator(fq_kwargs), seed=FLAGS.seed)
    gan.compile()
    print(f"Training a {'FQ-' if FLAGS.fq else ''}GAN on a ring of 8 Gaussians for "
          f"{FLAGS.steps} steps...")
    gan.fit(ring_dataset(FLAGS.batch, FLAGS.seed), steps_per_epoch=max(FLAGS.steps // 10, 1),
            epochs=min(10, FLAGS.steps), shuffle=False, verbose=2)
    fakes = gan.sample(2000)
    modes, quality = mode_coverage(fakes)
    print(f"Modes covered: {modes}/{RING_MODES}; high-quality samples: {quality:.1%}")
    for fq in gan.discriminator.fq_layers:
        print(f"Dictionary '{fq.name}': {fq.usage_statistics()}")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    reals = next(iter(ring_dataset(2000, FLAGS.seed + 1))).numpy()
    save_scatter(FLAGS.out, reals, fakes)
    print(f"Scatter plot of reals (grey) and samples (red): {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
