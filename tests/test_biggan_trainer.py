"""BigGANTrainer: hinge loss, D-step schedule, FQ wiring and updates, G_ema, labels, replicas.

Tiny CIFAR-architecture networks (ch 2: 8 channels) run eagerly: a handful of steps costs less
than tracing one.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from networks import biggan
from test_trainer import copy_weights
from training.biggan_trainer import BigGANSettings, BigGANTrainer, d_hinge, g_hinge
from training.checkpoints import Checkpoints
from training.optimizers import TorchAdam

CLASSES = 3


def tiny(fq_layers=(0, 1, 2, 3), cross_replica=False, seed=0):
    """CIFAR architecture at ch 2, named as the training loop names them."""
    keras.utils.set_random_seed(seed)
    G = biggan.BigGANGenerator(ch=2, dim_z=8, num_classes=CLASSES, cross_replica=cross_replica,
                               name="G")
    D = biggan.BigGANDiscriminator(ch=2, num_classes=CLASSES, fq_layers=fq_layers, name="D",
                                   fq_kwargs=dict(num_embeddings=8, commitment_cost=1.0, decay=0.8))
    G.build()
    D.build()
    return G, D


def make_batches(count, n=4, seed=0):
    rng = np.random.RandomState(seed)
    return tuple((np.tanh(rng.randn(n, 32, 32, 3)).astype(np.float32),
                  np.eye(CLASSES, dtype=np.float32)[rng.randint(CLASSES, size=n)])
                 for _ in range(count))


def values(network):
    return {v.path.split("/", 1)[1]: v.numpy().copy() for v in network.variables}


# ---------------------------------------------------------------------------------------------
# Losses.

def test_hinge_losses_match_numpy():
    real = np.array([[1.5], [0.2], [-0.7]], np.float32)
    fake = np.array([[-2.0], [0.4]], np.float32)
    loss_real, loss_fake = d_hinge(real, fake)
    np.testing.assert_allclose(loss_real.numpy(), np.maximum(0, 1 - real[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(loss_fake.numpy(), np.maximum(0, 1 + fake[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(g_hinge(fake).numpy(), -fake[:, 0])   # negation: exact
    # BigGAN-PyTorch loss_hinge_dis = mean(relu(1 - real)) + mean(relu(1 + fake)).
    assert float(tf.reduce_mean(loss_real) + tf.reduce_mean(loss_fake)) == pytest.approx(
        np.mean(np.maximum(0, 1 - real)) + np.mean(np.maximum(0, 1 + fake)), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# One iteration: schedule, draws, FQ wiring.

class Recorder:
    """Wraps a trainer's draws, D calls and layer 0's dictionary update; logs their order."""

    def __init__(self, trainer):
        self.events, self.d_calls, self.z, self.labels, self.update_rows = [], [], [], [], []
        for name, store in (("sample_latents", self.z), ("sample_labels", self.labels)):
            original = getattr(trainer, name)
            setattr(trainer, name, self._record(original, store))
        discriminate = trainer.discriminate

        def recording_discriminate(images, labels):
            logits, lookups = discriminate(images, labels)
            self.d_calls.append(dict(images=images.numpy(), labels=labels.numpy(),
                                     logits=logits.numpy(),
                                     fq=[l["per_sample_loss"].numpy() for l in lookups]))
            self.events.append("D")
            return logits, lookups

        trainer.discriminate = recording_discriminate
        layer = trainer.D.fq_layers[0]
        update = layer.update_dictionary

        def recording_update(h, indices):
            self.events.append("U")
            self.update_rows.append(sum(int(np.prod(b.shape[:-1])) for b in h))  # vectors
            return update(h, indices)

        layer.update_dictionary = recording_update

    @staticmethod
    def _record(function, store):
        def wrapper(n):
            out = function(n)
            store.append(out.numpy())
            return out
        return wrapper


def test_four_d_steps_with_fresh_draws_on_concat_fake_real_then_one_g_step():
    G, D = tiny()
    trainer = BigGANTrainer(G, D, BigGANSettings())
    assert trainer.settings.d_steps == 4
    rec = Recorder(trainer)
    batches = make_batches(4)
    trainer.train_step(batches, 4)

    # D D D D then G; one dictionary update right after each D step, none after the G step.
    assert rec.events == ["D", "U"] * 4 + ["D"]
    assert int(trainer.d_optimizer.iterations.numpy()) == 4
    assert int(trainer.g_optimizer.iterations.numpy()) == 1
    assert len(rec.z) == len(rec.labels) == 5
    for a in range(5):
        for b in range(a):
            assert not np.allclose(rec.z[a], rec.z[b])  # fresh z for every step
    for k, (reals, onehot) in enumerate(batches):
        call = rec.d_calls[k]
        # concat([fake, real]) with concat([fake labels, real labels]): the official G_D order.
        assert call["images"].shape == (8, 32, 32, 3)
        np.testing.assert_array_equal(call["images"][4:], reals)  # a fresh real batch per step
        np.testing.assert_array_equal(call["labels"][4:], onehot.argmax(1))
        np.testing.assert_array_equal(call["labels"][:4], rec.labels[k])
        fakes = call["images"][:4]
        assert np.abs(fakes).max() <= 1.0 and not np.allclose(fakes, reals)
    g_call = rec.d_calls[4]
    assert g_call["images"].shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(g_call["labels"], rec.labels[4])
    assert rec.update_rows == [8 * 16 * 16] * 4  # real + fake features of block 0 (16x16)
    for layer in D.fq_layers:
        assert int(layer.num_updates.numpy()) == 4
    trainer.train_step(make_batches(4, seed=1), 4)
    assert [int(l.num_updates.numpy()) for l in D.fq_layers] == [8] * 4


def test_loss_terms_are_the_official_means_with_fq_on_d_real_fake_and_g_fake():
    """Logged terms recomputed from the recorded D outputs: D hinge means, alpha * (mean
    fq(real) + mean fq(fake)) summed over FQ layers, G -mean D(fake) + alpha * mean fq(fake)."""
    for alpha in (0.5,):
        G, D = tiny()
        trainer = BigGANTrainer(G, D, BigGANSettings(d_steps=2, fq_alpha=alpha))
        rec = Recorder(trainer)
        sums, means = trainer.train_step(make_batches(2), 4)
        d_calls, g_call = rec.d_calls[:2], rec.d_calls[2]
        real = np.mean([np.mean(np.maximum(0, 1 - c["logits"][4:])) for c in d_calls])
        fake = np.mean([np.mean(np.maximum(0, 1 + c["logits"][:4])) for c in d_calls])
        d_fq = np.mean([alpha * sum(f[4:].mean() + f[:4].mean() for f in c["fq"]) for c in d_calls])
        assert float(sums["d_loss_real"]) == pytest.approx(real, rel=1e-5)
        assert float(sums["d_loss_fake"]) == pytest.approx(fake, rel=1e-5)
        assert float(sums["d_loss"]) == pytest.approx(real + fake, rel=1e-5)
        assert float(sums["d_fq_loss"]) == pytest.approx(d_fq, rel=1e-5) and d_fq > 0
        assert float(sums["g_loss"]) == pytest.approx(-g_call["logits"].mean(), rel=1e-5)
        assert float(sums["g_fq_loss"]) == pytest.approx(
            alpha * sum(f.mean() for f in g_call["fq"]), rel=1e-5)
        assert float(means["alpha_fq"]) == alpha
        assert set(means) >= {f"fq/fq{i}/perplexity" for i in range(4)}
    # The baseline (no FQ layers): no FQ terms, no updates.
    G, D = tiny(fq_layers=())
    sums, _ = BigGANTrainer(G, D, BigGANSettings(d_steps=1)).train_step(make_batches(1), 4)
    assert float(sums["d_fq_loss"]) == 0 and float(sums["g_fq_loss"]) == 0


def test_fq_alpha_warmup_ramps_from_zero():
    G, D = tiny()
    trainer = BigGANTrainer(G, D, BigGANSettings(d_steps=1, fq_alpha=2.0, fq_warmup_iterations=4))
    assert [float(trainer.fq_alpha_at(i)) for i in (0, 1, 2, 4, 9)] == [0.0, 0.5, 1.0, 2.0, 2.0]


def test_paper_warmup_switch_and_official_fq_update_cadence():
    """Warm-up of 1 iteration: iteration 0 feeds D h (its logits equal a forward="continuous"
    copy's), iteration 1 h + sg(e - h) (a forward="quantized" copy's). Official cadence: one
    update after each D step from its one D forward (fakes and reals), one after the G step."""
    def discriminator(forward):
        D = biggan.BigGANDiscriminator(ch=2, num_classes=CLASSES, fq_layers=(0, 1, 2, 3),
                                       name="D", fq_kwargs=dict(num_embeddings=8, decay=0.8,
                                                                commitment_cost=1.0,
                                                                forward=forward))
        D.build()
        return D

    G, _ = tiny()
    trainer = BigGANTrainer(G, discriminator("quantized"), BigGANSettings(
        d_steps=2, fq_warmup_iterations=1, fq_update_cadence="official"))
    rec = Recorder(trainer)
    images, onehot = make_batches(1, seed=3)[0]
    labels = onehot.argmax(1)
    for i in range(2):
        trainer.train_step(make_batches(2, seed=i), 4)
        trainer.finish_step()
        assert [float(l.quantized_forward.numpy()) for l in trainer.D.fq_layers] == [i] * 4
        copy = copy_weights(trainer.D, discriminator("quantized" if i else "continuous"))
        np.testing.assert_array_equal(trainer.D(images, labels, training=False).numpy(),
                                      copy(images, labels, training=False).numpy())
    assert rec.events == ["D", "U"] * 6
    assert rec.update_rows == [8 * 16 * 16, 8 * 16 * 16, 4 * 16 * 16] * 2
    assert [int(l.num_updates.numpy()) for l in trainer.D.fq_layers] == [6] * 4


def test_gradient_accumulation_one_update_from_all_minibatches():
    """ImageNet-style: 2 minibatches per update, 1 D step: 1 D and 1 G update per iteration,
    the single dictionary update sees the real and fake features of both minibatches."""
    G, D = tiny()
    trainer = BigGANTrainer(G, D, BigGANSettings(d_steps=1, accumulations=2))
    rec = Recorder(trainer)
    batches = make_batches(2)
    sums, _ = trainer.train_step(batches, 4)
    assert rec.events == ["D", "D", "U", "D", "D"]
    assert rec.update_rows == [2 * 8 * 16 * 16]
    assert int(trainer.d_optimizer.iterations.numpy()) == 1
    assert int(trainer.g_optimizer.iterations.numpy()) == 1
    real = np.mean([np.mean(np.maximum(0, 1 - c["logits"][4:])) for c in rec.d_calls[:2]])
    assert float(sums["d_loss_real"]) == pytest.approx(real, rel=1e-5)  # mean over 8 reals
    for k in range(2):
        np.testing.assert_array_equal(rec.d_calls[k]["images"][4:], batches[k][0])
    with pytest.raises(ValueError, match="d_steps x accumulations = 2"):
        trainer.train_step(batches[:1], 4)


# ---------------------------------------------------------------------------------------------
# G_ema, labels, settings.

def test_g_ema_copies_g_until_ema_start_then_follows_the_decay_buffers_included():
    G, D = tiny()
    settings = BigGANSettings(d_steps=1, ema_decay=0.9, ema_start=2, g_learning_rate=0.01,
                              d_learning_rate=0.01)
    trainer = BigGANTrainer(G, D, settings)
    for iteration in (1, 2):
        before = values(trainer.Gs)
        trainer.train_step(make_batches(1, seed=iteration), 4)
        trainer.finish_step()
        assert int(trainer.iteration.numpy()) == iteration
        g, gs = values(G), values(trainer.Gs)
        assert sorted(g) == sorted(gs)
        for key in g:
            if iteration < 2:  # BigGAN-PyTorch ema.update(itr): itr < ema_start -> copy
                np.testing.assert_array_equal(gs[key], g[key], err_msg=key)
            else:
                np.testing.assert_allclose(gs[key], 0.9 * before[key] + 0.1 * g[key], rtol=1e-5,
                                           atol=1e-7, err_msg=key)
    # Buffers are averaged, not copied: BN running statistics and SN vectors of G_ema differ
    # from G's after the EMA started.
    for key in ("block0/bn1/stored_mean", "output_conv/sn_u", "output_conv/kernel"):
        assert not np.allclose(gs[key], g[key]), key


def test_official_defaults():
    s = BigGANSettings()
    assert (s.d_steps, s.accumulations, s.g_learning_rate, s.d_learning_rate) == (4, 1, 2e-4, 2e-4)
    assert (s.betas, s.epsilon, s.ema_decay, s.ema_start, s.fq_alpha) == (
        (0.0, 0.999), 1e-8, 0.9999, 1000, 1.0)
    G, D = tiny()
    trainer = BigGANTrainer(G, D)
    # BigGAN-PyTorch's torch.optim.Adam: epsilon on the bias-corrected sqrt(v), no decay.
    for adam in (trainer.g_optimizer, trainer.d_optimizer):
        assert isinstance(adam, TorchAdam) and adam.coupled_weight_decay == 0.0
        assert (adam.beta_1, adam.beta_2, adam.epsilon) == (0.0, 0.999, 1e-8)
    adam = trainer.d_optimizer
    assert float(adam.learning_rate) == pytest.approx(2e-4)
    with pytest.raises(ValueError, match="d_steps must be an integer >= 1"):
        BigGANSettings(d_steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        BigGANSettings(ema_decay=1.0)


def test_fake_labels_follow_the_class_frequencies():
    G, D = tiny()
    trainer = BigGANTrainer(G, D, class_probabilities=[6, 4, 0])
    labels = trainer.sample_labels(20000).numpy()
    assert labels.dtype == np.int32
    # 20000 draws: binomial SD sqrt(0.6 * 0.4 / 20000) = 0.0035; 0.015 is > 4 SD.
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / 20000, [0.6, 0.4, 0.0],
                               atol=0.015)
    uniform = BigGANTrainer(G, D).sample_labels(20000).numpy()
    np.testing.assert_allclose(np.bincount(uniform, minlength=3) / 20000, [1 / 3] * 3,
                               atol=0.015)   # SD sqrt(2 / 9 / 20000) = 0.0033: > 4 SD
    with pytest.raises(ValueError, match="class_probabilities"):
        BigGANTrainer(G, D, class_probabilities=[1, 1])


def test_generate_leaves_g_ema_state_unchanged():
    G, D = tiny()
    trainer = BigGANTrainer(G, D)
    before = values(trainer.Gs)
    z, y = np.random.RandomState(0).randn(6, 8).astype(np.float32), np.arange(6) % CLASSES
    train_mode = trainer.generate(z, y, training=True).numpy()
    eval_mode = trainer.generate(z, y, training=False).numpy()
    assert not np.allclose(train_mode, eval_mode)  # batch vs running statistics
    for key, value in values(trainer.Gs).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_checkpoint_round_trip_restores_every_variable(tmp_path):
    G, D = tiny()
    trainer = BigGANTrainer(G, D, BigGANSettings(d_steps=1))
    trainer.train_step(make_batches(1), 4)
    trainer.finish_step()
    state = trainer.checkpoint_state()
    expected = len(G.variables) + len(trainer.Gs.variables) + len(D.variables) + \
        len(trainer.g_optimizer.variables) + len(trainer.d_optimizer.variables) + 2
    assert len(state) == expected
    path = Checkpoints(state, str(tmp_path)).save(1)
    G2, D2 = tiny(seed=3)
    fresh = BigGANTrainer(G2, D2, BigGANSettings(d_steps=1), seed=3)
    fresh_state = fresh.checkpoint_state()
    assert sorted(fresh_state) == sorted(state)
    Checkpoints(fresh_state, str(tmp_path)).restore(path)
    for key in state:
        np.testing.assert_array_equal(fresh_state[key].numpy(), state[key].numpy(), err_msg=key)


def test_mixed_precision_step_is_finite(mixed_precision):
    """float16 with loss scaling, bfloat16 without (as RunOptions.loss_scaling)."""
    G, D = tiny()
    trainer = BigGANTrainer(G, D, BigGANSettings(d_steps=1), loss_scaling=mixed_precision.name == "float16")
    assert G.compute_dtype == mixed_precision.name
    sums, means = trainer.train_step(make_batches(1), 4)
    assert all(np.isfinite(float(v)) for v in list(sums.values()) + list(means.values()))
    assert D.fq_layers[0].embeddings.dtype == "float32"


# ---------------------------------------------------------------------------------------------
# tf.distribute.

def run_iterations(strategy, trainer, iterations, global_batch):
    """Runs iterations on the same global batches; returns the logged sums (reduced)."""
    replicas = strategy.num_replicas_in_sync
    n = global_batch // replicas
    logs = []
    for i in range(iterations):
        batches = make_batches(trainer.settings.batches_per_iteration, n=global_batch, seed=i)

        def share(ctx, batches=batches):
            r = ctx.replica_id_in_sync_group
            return tuple((x[r * n:(r + 1) * n], y[r * n:(r + 1) * n]) for x, y in batches)

        data = strategy.experimental_distribute_values_from_function(share) if replicas > 1 \
            else batches
        with strategy.scope():
            sums, _ = strategy.run(trainer.train_step, args=(data, global_batch))
            logs.append({k: float(strategy.reduce("SUM", v, axis=None)) for k, v in sums.items()})
            trainer.finish_step()
    return logs


def local_values(variable, strategy):
    values = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
    for other in values[1:]:
        np.testing.assert_array_equal(other, values[0], err_msg=variable.path)
    return values[0]


def with_sgd(trainer):
    """Plain SGD makes weight updates linear in the gradients (Adam's first steps are
    ~lr * sign(g), blind to a wrong gradient scale), so the comparison checks the scaling."""
    for name, net in (("g", trainer.G), ("d", trainer.D)):
        optimizer = keras.optimizers.SGD(0.05, name=f"{name}_sgd")
        optimizer.build(net.trainable_variables)
        setattr(trainer, f"{name}_optimizer", optimizer)
    return trainer


def test_two_replicas_scale_by_the_global_batch_and_keep_state_identical(two_replica_strategy):
    """With synchronised BN (cross_replica=True) two replicas equal one device with the same
    global batch of 8: logged losses (per-replica sums over the global batch), weights moved by
    summed gradients, replica_random draws, all-reduced FQ and BN statistics, G_ema. With
    BigGAN-PyTorch's per-replica BN (the default) outputs differ by design, but every variable
    is still identical on both replicas."""
    settings = BigGANSettings(d_steps=2, ema_start=2, ema_decay=0.5)
    G, D = tiny(cross_replica=True)
    initial = [w.numpy() for w in G.variables + D.variables]
    single = with_sgd(BigGANTrainer(G, D, settings))
    single_logs = run_iterations(tf.distribute.get_strategy(), single, 2, 8)

    strategy = two_replica_strategy
    for cross_replica in (True, False):
        with strategy.scope():
            G2, D2 = tiny(cross_replica=cross_replica)
            for w, value in zip(G2.variables + D2.variables, initial):
                w.assign(value)
            mirrored = with_sgd(BigGANTrainer(G2, D2, settings))
        logs = run_iterations(strategy, mirrored, 2, 8)
        pairs = [(single.G, mirrored.G), (single.Gs, mirrored.Gs), (single.D, mirrored.D)]
        for a, b in pairs:
            for wa, wb in zip(a.variables, b.variables):
                value = local_values(wb, strategy)  # identical on both replicas
                if cross_replica:
                    # float32: batch and FQ statistics are sums over up to n = 8 x 16 x 16
                    # features, here in another order (2 halves + all-reduce), which differ
                    # by up to n * 6e-8 = 1.2e-4 relative (measured ~5e-6) and pass through
                    # 6 dependent updates: rtol 1e-3; atol for elements at ~0 (pre-BN biases,
                    # whose gradient is zero up to rounding).
                    np.testing.assert_allclose(value, wa.numpy(), rtol=1e-3, atol=1e-5,
                                               err_msg=wa.path)
        if cross_replica:
            for got, want in zip(logs, single_logs):
                # The losses are taken with the weights compared above (equal to rtol 1e-3
                # after the updates, as derived there) and are smooth in them: rel 1e-3.
                for key in want:
                    assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-6), key
        assert int(local_values(mirrored.iteration, strategy)) == 2
        for layer in D2.fq_layers:
            assert int(local_values(layer.num_updates, strategy)) == 4
    moved = [np.abs(w.numpy() - v).max() for w, v in zip(single.G.variables + single.D.variables,
                                                          initial) if w.trainable]
    assert max(moved) > 1e-3  # training moved the weights well beyond the tolerance
