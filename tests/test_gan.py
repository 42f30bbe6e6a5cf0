"""fq_keras.gan helpers and the toy FQ-GAN example that shows them in a custom train_step."""

import importlib.util
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import fq_keras

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7

_EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "toy_fq_gan.py")
_spec = importlib.util.spec_from_file_location("toy_fq_gan", _EXAMPLE)
toy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toy)


def _layer(K=8, C=4, seed=0):
    init = np.random.RandomState(seed).randn(K, C).astype(np.float32)
    return fq_keras.FeatureQuantization(K, embeddings_initializer=keras.initializers.Constant(init))


def test_fq_loss_global_batch_scaling_and_weight():
    fq = _layer()
    h = np.random.RandomState(1).randn(6, 3, 3, 4).astype(np.float32)
    whole = fq.lookup(h)
    halves = [fq.lookup(h[:3]), fq.lookup(h[3:])]
    # Per-replica losses scaled by the global batch sum to the one-device mean.
    summed = sum(fq_keras.fq_loss([part], global_batch_size=6) for part in halves)
    # Means of 216 positive float32 squares summed in other orders: <= 216 eps32 ~ 2.6e-5.
    np.testing.assert_allclose(summed.numpy(), whole["loss"].numpy(), rtol=216 * EPS32)
    np.testing.assert_allclose(fq_keras.fq_loss([whole]).numpy(), whole["loss"].numpy(),
                               rtol=216 * EPS32)
    two_layers = fq_keras.fq_loss([whole, whole], weight=0.5)
    # (x + x) * 0.5 = x exactly.
    np.testing.assert_array_equal(two_layers.numpy(), fq_keras.fq_loss([whole]).numpy())
    assert fq_keras.fq_loss([]).numpy() == 0.0


def test_update_dictionaries_is_one_update_over_real_and_fake():
    rng = np.random.RandomState(2)
    real, fake = (rng.randn(4, 2, 2, 4).astype(np.float32) for _ in range(2))
    helper, direct = _layer(), _layer()
    fq_keras.update_dictionaries([helper], [helper.lookup(real)], [helper.lookup(fake)])
    both = np.concatenate([real, fake])
    direct.update_dictionary(both, direct.lookup(both)["indices"])
    # The same update as from the concatenation, the per-item sums taken in another order
    # (real sum + fake sum): two orders of n <= 32 float32 terms differ by <= 2 (n - 1) eps32
    # sum|h|, and an item is a sum over a count of terms, so by <= 62 eps32 max|h|.
    np.testing.assert_allclose(helper.embeddings.numpy(), direct.embeddings.numpy(), rtol=0,
                               atol=62 * EPS32 * np.abs(both).max())
    assert int(helper.num_updates.numpy()) == 1
    with pytest.raises(ValueError, match="one per FQ layer"):
        fq_keras.update_dictionaries([helper, direct], [helper.lookup(real)])


def test_update_after_phase_step_and_official_cadences():
    """step: nothing after G, one joint update after D. official: one update per D evaluation
    in order, each with the assignments its look-up (forward) computed."""
    rng = np.random.RandomState(3)
    g_fake, real, fake = (rng.randn(4, 2, 2, 4).astype(np.float32) for _ in range(3))
    step, official, sequential = _layer(), _layer(), _layer()
    assert fq_keras.update_after_phase("G", "step", [step], [step.lookup(g_fake)]) == []
    assert int(step.num_updates.numpy()) == 0
    # Every lookup is taken before any update (as the trainers' forward passes are).
    g_lookup, real_lookup, fake_lookup = (official.lookup(x) for x in (g_fake, real, fake))
    fq_keras.update_after_phase("G", "official", [official], [g_lookup])
    usage = fq_keras.update_after_phase("D", "official", [official], [real_lookup],
                                        [fake_lookup])
    for features in (g_fake, real, fake):   # assignments to the unchanged dictionary
        sequential.update_dictionary(features, _layer().lookup(features)["indices"])
    assert int(official.num_updates.numpy()) == 3
    np.testing.assert_array_equal(official.embeddings.numpy(), sequential.embeddings.numpy())
    np.testing.assert_array_equal(usage[0]["perplexity"].numpy(),
                                  sequential.last_perplexity.numpy())
    joint = _layer()
    fq_keras.update_after_phase("D", "step", [joint], [joint.lookup(real)], [joint.lookup(fake)])
    assert int(joint.num_updates.numpy()) == 1
    with pytest.raises(ValueError, match="cadence"):
        fq_keras.update_after_phase("D", "often", [joint], [joint.lookup(real)])


def test_warmup_alpha_and_quantized_forward_switch_at_the_warmup_end():
    quantized = fq_keras.FeatureQuantization(4, forward="quantized")
    continuous = fq_keras.FeatureQuantization(4)
    for layer in (quantized, continuous):
        layer.build((None, 2))
    # Warm-up of 6 (kimg or iterations): alpha = 2 min(progress / 6, 1); quantised from 6 on.
    for progress, alpha, on in ((0, 0.0, 0.0), (1.5, 0.5, 0.0), (6 - 1e-3, 2.0, 0.0),
                                (6, 2.0, 1.0), (9, 2.0, 1.0)):
        np.testing.assert_allclose(fq_keras.warmup_alpha(2.0, progress, 6).numpy(), alpha,
                                   rtol=1e-3)
        fq_keras.set_quantized_forward([quantized, continuous], progress, 6)
        assert float(quantized.quantized_forward.numpy()) == on, progress
    fq_keras.set_quantized_forward([quantized], tf.constant(0, tf.int64), 0)   # no warm-up
    assert float(quantized.quantized_forward.numpy()) == 1.0
    assert float(fq_keras.warmup_alpha(2.0, 0, 0).numpy()) == 2.0


def test_toy_gan_updates_dictionary_once_per_d_step():
    keras.utils.set_random_seed(0)
    gan = toy.ToyFQGAN(toy.ToyDiscriminator(dict(num_embeddings=16)))
    gan.compile()
    fq = gan.discriminator.fq_layers[0]
    gan.fit(toy.ring_dataset(32, seed=0), steps_per_epoch=7, epochs=1, shuffle=False, verbose=0)
    assert int(gan.d_optimizer.iterations.numpy()) == 7
    assert int(gan.g_optimizer.iterations.numpy()) == 7
    assert int(fq.num_updates.numpy()) == 7  # once per D step, never from the G step
    # A forward pass (as in the G step or sampling) does not touch the dictionary.
    before = fq.embeddings.numpy().copy()
    gan.discriminator(tf.constant(gan.sample(8)), return_fq=True)
    np.testing.assert_array_equal(fq.embeddings.numpy(), before)


def test_toy_gan_under_mirrored_strategy_keeps_replicas_identical(two_replica_strategy):
    strategy = two_replica_strategy
    with strategy.scope():
        gan = toy.ToyFQGAN(toy.ToyDiscriminator(dict(num_embeddings=16)))
        gan.compile()
    gan.fit(toy.ring_dataset(32, seed=0), steps_per_epoch=3, epochs=1, shuffle=False, verbose=0)
    fq = gan.discriminator.fq_layers[0]
    assert int(fq.num_updates.numpy()) == 3
    for variable in (fq.embeddings, fq.ema_cluster_size, fq.ema_embedding_sums):
        first, second = strategy.experimental_local_results(variable.value)
        np.testing.assert_array_equal(first.numpy(), second.numpy())


class _StopWhenLearned(keras.callbacks.Callback):
    """Measures mode coverage every epoch; stops training once the ring is learned."""

    def __init__(self, gan, steps_per_epoch):
        super().__init__()
        self.gan, self.steps_per_epoch, self.history = gan, steps_per_epoch, []

    def on_epoch_end(self, epoch, logs=None):
        modes, quality = toy.mode_coverage(self.gan.sample(2000))
        self.history.append(((epoch + 1) * self.steps_per_epoch, modes, quality))
        if modes >= 6 and quality > 0.5:
            self.gan.stop_training = True


def test_toy_gan_learns_the_ring():
    """Within 3000 steps the generator covers >= 6 of the 8 modes with > 50% of its samples.

    A GAN's trajectory is chaotic: every float path (oneDNN or Eigen kernels, AVX2 or AVX-512)
    gives another one. Measured on this criterion, 36 runs (10 seeds, and seed 0 from 8 starts
    perturbed by ~eps32, each with oneDNN on and off) passed after 500 (4 runs), 750 (18) or 1000
    steps (14), after up to 750 steps collapsed on 1-2 modes; one AVX2 machine was still in that
    phase at step 1000. So training runs until the criterion holds (checked every 250 steps)
    within a 3x budget of 3000 steps: no slower than a fixed 1000 steps for a typical run, and
    robust to a collapsed phase up to ~4x longer than any measured here.
    """
    keras.utils.set_random_seed(0)
    gan = toy.ToyFQGAN(toy.ToyDiscriminator(dict(num_embeddings=64)), seed=0)
    gan.compile()
    before, _ = toy.mode_coverage(gan.sample(2000))
    assert before <= 2
    monitor = _StopWhenLearned(gan, steps_per_epoch=250)
    gan.fit(toy.ring_dataset(256, seed=0), steps_per_epoch=250, epochs=12, shuffle=False,
            verbose=0, callbacks=[monitor])
    _, modes, quality = monitor.history[-1]
    assert modes >= 6 and quality > 0.5, monitor.history
