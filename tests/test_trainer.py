"""GANTrainer: FQ wiring, once-per-D-step dictionary updates, replicas, checkpoints, losses."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import fq_keras
from datasets import fade_reals
from networks import layers as L
from networks import progan, stylegan2
from training import losses
from training.checkpoints import Checkpoints
from training.schedule import ProgressiveSchedule
from training.optimizers import lazy_adam
from training.trainer import LOSS_PRESETS, FQSettings, GANTrainer, LossSettings

RES = 16
WIDTHS = dict(fmap_base=64, fmap_max=16)


def tiny_stylegan2(c_dim=0, mbstd=1, seed=0):
    keras.utils.set_random_seed(seed)
    G = stylegan2.Generator(z_dim=8, w_dim=8, c_dim=c_dim, resolution=RES, mapping_layers=2,
                            seed=seed, name="G", **WIDTHS)
    D = stylegan2.Discriminator(resolution=RES, c_dim=c_dim, fq_blocks=(8, 16),
                                fq_num_embeddings=8, mbstd_num_features=mbstd, name="D", **WIDTHS)
    return G, D


# Lazy intervals of 2 so that three iterations exercise every phase.
FAST_LAZY = LossSettings("logistic", r1_gamma=1.0, r1_interval=2, pl_weight=2.0, pl_interval=2,
                         style_mixing_prob=0.9)
PHASES = [(True, True), (False, False), (True, True)]


def make_trainer(G, D, loss=FAST_LAZY, seed=0):
    return GANTrainer(G, D, loss, ProgressiveSchedule(RES, RES), learning_rate=0.01, seed=seed)


def reals_and_labels(batch=8, c_dim=0, seed=0):
    rng = np.random.RandomState(seed)
    reals = np.tanh(rng.randn(batch, RES, RES, 3)).astype(np.float32)
    labels = np.eye(max(c_dim, 1), dtype=np.float32)[rng.randint(max(c_dim, 1), size=batch)][:, :c_dim]
    return reals, labels


def run_iterations(strategy, trainer, batches, global_batch, phases=PHASES, resolution=RES):
    """One iteration per batch with the phases of `phases` ((run_g_reg, run_d_reg) per
    iteration), run eagerly (strategy.run of the replica step, then finish_step in
    cross-replica context, as the loop's compiled step).

    Eager: a few iterations of these tiny networks take seconds, while tracing a StyleGAN2
    step (four phases, nested tapes) takes far longer than running it. The loop's compiled
    steps are exercised by test_training_step.py and test_training_loop.py."""
    replicas = strategy.num_replicas_in_sync
    n = global_batch // replicas
    for (reals, labels), (g_reg, d_reg) in zip(batches, phases):
        def share(ctx, reals=reals, labels=labels):
            i = ctx.replica_id_in_sync_group
            return reals[i * n:(i + 1) * n], labels[i * n:(i + 1) * n]

        data = strategy.experimental_distribute_values_from_function(share) if replicas > 1 \
            else (reals, labels)
        strategy.run(trainer.train_step, args=(data,),
                     kwargs=dict(resolution=resolution, global_batch=global_batch,
                                 run_g_reg=g_reg, run_d_reg=d_reg))
        trainer.finish_step(global_batch)


def use_sgd(trainer, learning_rate=0.01):
    """Both optimizers -> plain SGD (call inside the trainer's strategy scope): weight changes
    are then linear in the gradients, so a float32-level gradient difference stays a
    float32-level weight difference (Adam's lr * m / (sqrt(v) + eps) maps it to up to ~lr in a
    near-zero element) and a wrong global-batch scaling shows (Adam is scale-invariant)."""
    trainer.g_optimizer = keras.optimizers.SGD(learning_rate, name="g_sgd")
    trainer.d_optimizer = keras.optimizers.SGD(learning_rate, name="d_sgd")
    trainer.g_optimizer.build(trainer.G.trainable_variables)
    trainer.d_optimizer.build(trainer.D.trainable_variables)


def assert_same_state(got, expected, before, steps, scale=None, err_msg=""):
    """got == expected up to float32 rounding of `steps` SGD / EMA updates from `before`.

    A gradient (or batch mean) is a float32 sum over up to n = 8 * 16 * 16 = 2048 terms (batch x
    pixels) whose rounding depends on the order, which differs for 2 x 4 and 8 samples: about
    sqrt(n) * eps = 5e-6 of its largest element, 5e-5 of the largest update leaves 10x margin; and
    every stored value rounds to eps * |w| once per step (Gs: eps * |G|, its EMA adds G).
    A wrong batch scaling or a missing replica's share changes the update itself, by far more."""
    eps = np.finfo(np.float32).eps
    update = np.abs(expected - before).max()
    scale = np.abs(expected).max() if scale is None else scale
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5 * update + 2 * steps * eps * scale,
                               err_msg=err_msg)


def local_values(variable, strategy):
    values = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
    for other in values[1:]:
        np.testing.assert_array_equal(other, values[0])  # every replica holds the same value
    return values[0]


def test_two_replicas_equal_one_device(two_replica_strategy):
    """Same global batch of 8: after 3 iterations (all four phases, then the main phases, then
    all four) with SGD, G, Gs, D (with the FQ dictionaries and their EMA sums), pl_mean and the
    dlatent average agree up to float32 rounding (assert_same_state) and replicas are identical.
    Minibatch stddev is off: it is per replica by design (as the official multi-GPU code)."""
    batches = [reals_and_labels(seed=s) for s in range(3)]
    default = tf.distribute.get_strategy()
    G, D = tiny_stylegan2(mbstd=0)
    single = make_trainer(G, D)
    use_sgd(single)
    initial = {name: [w.numpy() for w in net.weights] for name, net in
               (("G", single.G), ("Gs", single.Gs), ("D", single.D))}
    run_iterations(default, single, batches, 8)

    strategy = two_replica_strategy
    with strategy.scope():
        G2, D2 = tiny_stylegan2(mbstd=0)
        for w, value in zip(G2.weights + D2.weights, initial["G"] + initial["D"]):
            w.assign(value)
        mirrored = make_trainer(G2, D2)
        use_sgd(mirrored)
    run_iterations(strategy, mirrored, batches, 8)

    g_values = [w.numpy() for w in single.G.weights]
    assert max(np.abs(v - b).max() for v, b in zip(g_values, initial["G"])) > 1e-3  # G moved
    pairs = [("G", single.G, mirrored.G), ("Gs", single.Gs, mirrored.Gs), ("D", single.D, mirrored.D)]
    for name, a, b in pairs:
        for i, (wa, wb) in enumerate(zip(a.weights, b.weights)):
            # Gs's EMA G + (Gs - G) * beta rounds at G's magnitude.
            scale = max(np.abs(wa.numpy()).max(), np.abs(g_values[i]).max() if name == "Gs" else 0)
            assert_same_state(local_values(wb, strategy), wa.numpy(), initial[name][i], steps=3,
                              scale=scale, err_msg=f"{name} {wa.path}")
    for fa, fb in zip(single.D.fq_layers, mirrored.D.fq_layers):
        assert int(fa.num_updates.numpy()) == int(fb.num_updates.numpy()) == 3
        np.testing.assert_allclose(local_values(fb.embeddings, strategy), fa.embeddings.numpy(), atol=1e-5)
    assert_same_state(local_values(mirrored.pl_mean, strategy), single.pl_mean.numpy(), 0.0, steps=2)
    assert single.pl_mean.numpy() > 0


def test_d_step_fakes_in_lanes_equal_the_whole_batch():
    """lanes=2 (the D step's synthesis and D on the fakes as two strided half batches, the
    CPU demo's setting): minibatch stddev (groups of 4 of 8) stays whole, every random number is
    the one the whole batch draws (the RNG states end equal), and after 3 iterations (all four
    phases, style mixing) with SGD, G, Gs, D with its FQ dictionaries, pl_mean and the logs
    agree with lanes=1 up to float32 rounding of the reordered sums (assert_same_state)."""
    batches = [reals_and_labels(seed=s) for s in range(3)]
    default = tf.distribute.get_strategy()
    results = []
    for lanes in (1, 2):
        G, D = tiny_stylegan2(seed=1)
        trainer = GANTrainer(G, D, FAST_LAZY, ProgressiveSchedule(RES, RES), learning_rate=0.01,
                             lanes=lanes)
        use_sgd(trainer)
        assert (trainer._d_step_lanes(8) is not None) == (lanes == 2)
        assert trainer._d_step_lanes(4) is None   # one group of 4: lanes would split it
        initial = {name: [w.numpy() for w in net.weights] for name, net in
                   (("G", trainer.G), ("Gs", trainer.Gs), ("D", trainer.D))}
        run_iterations(default, trainer, batches, 8)
        results.append(trainer)
    whole, laned = results
    for generator in ("seed_generator",):
        np.testing.assert_array_equal(getattr(laned, generator).state.numpy(),
                                      getattr(whole, generator).state.numpy())
    np.testing.assert_array_equal(laned.G.synthesis.seed_generator.state.numpy(),
                                  whole.G.synthesis.seed_generator.state.numpy())
    g_values = [w.numpy() for w in whole.G.weights]
    for name in ("G", "Gs", "D"):
        for i, (wa, wb) in enumerate(zip(getattr(whole, name).weights,
                                         getattr(laned, name).weights)):
            scale = max(np.abs(wa.numpy()).max(), np.abs(g_values[i]).max() if name == "Gs" else 0)
            assert_same_state(wb.numpy(), wa.numpy(), initial[name][i], steps=3, scale=scale,
                              err_msg=f"{name} {wa.path}")
    for fa, fb in zip(whole.D.fq_layers, laned.D.fq_layers):
        assert int(fa.num_updates.numpy()) == int(fb.num_updates.numpy()) == 3
        np.testing.assert_allclose(fb.embeddings.numpy(), fa.embeddings.numpy(), atol=1e-5)
    assert_same_state(laned.pl_mean.numpy(), whole.pl_mean.numpy(), 0.0, steps=2)


def test_lazy_r1_in_lanes_equals_the_whole_batch():
    """Dreg's per-sample R1 penalties with lanes=2 (strided halves: minibatch-stddev groups of 4
    of 8 whole) equal one lane's, the same D on the same reals: a sample's gradient depends on
    its group only, so lanes change rounding alone. Splitting a group (rows 0-3 and 4-7)
    changes the penalties by far more."""
    G, D = tiny_stylegan2(seed=1)
    trainer = GANTrainer(G, D, FAST_LAZY, ProgressiveSchedule(RES, RES), lanes=2)
    reals, labels = (tf.constant(a) for a in reals_and_labels(seed=0))
    assert trainer._d_step_lanes(8) is not None
    laned = trainer._lazy_r1(reals, labels, None, RES).numpy()
    trainer.lanes = 1
    whole = trainer._lazy_r1(reals, labels, None, RES).numpy()
    split = np.concatenate([trainer._lazy_r1(reals[:4], labels[:4], None, RES).numpy(),
                            trainer._lazy_r1(reals[4:], labels[4:], None, RES).numpy()])
    assert laned.shape == whole.shape == (8,) and np.all(whole > 0)
    # ||dD/dx||^2 from gradients whose sums ran in another order: a few float32 ulps each;
    # 1e-4 relative is far above that and far below what a split group leaves (checked).
    np.testing.assert_allclose(laned, whole, rtol=1e-4)
    assert np.max(np.abs(split - whole) / whole) > 1e-2


def test_fq_dictionaries_update_once_per_d_step_never_in_g_or_regularisers():
    """Order of the optimizer applications (G / D) and dictionary updates (U) in each iteration
    (run eagerly: Python order is execution order, as in a traced step, whose automatic control
    dependencies keep the stateful ops in program order): the one U of an iteration follows
    Dmain's D apply, never a G apply nor the R1 (Dreg) apply."""
    G, D = tiny_stylegan2()
    trainer = make_trainer(G, D)
    events = []
    original_update = D.fq_layers[0].update_dictionary
    original_apply = trainer._apply

    def counting_update(*args, **kwargs):
        events.append("U")
        return original_update(*args, **kwargs)

    def recording_apply(optimizer, *args):
        events.append("G" if optimizer is trainer.g_optimizer else "D")
        return original_apply(optimizer, *args)

    D.fq_layers[0].update_dictionary = counting_update
    trainer._apply = recording_apply
    run_iterations(tf.distribute.get_strategy(), trainer, [reals_and_labels(seed=s) for s in range(3)], 8)
    # All four phases (Gmain, Greg, Dmain, Dreg), then Gmain + Dmain, then all four again.
    assert "".join(events) == "GGDUD" + "GDU" + "GGDUD"
    for layer in D.fq_layers:
        assert int(layer.num_updates.numpy()) == 3  # executed updates = D steps


def _tiny_d(forward, seed=0):
    keras.utils.set_random_seed(seed)
    return stylegan2.Discriminator(resolution=RES, fq_blocks=(8, 16), fq_num_embeddings=8,
                                   fq_forward=forward, mbstd_num_features=1, name="D", **WIDTHS)


def copy_weights(source, target):
    """target's variables <- source's, by path (the warm-up switch is not a weight); returns
    target. Networks of one structure and name, e.g. the same D with another FQ forward."""
    values = {v.path: v for v in source.variables}
    for variable in target.variables:
        if variable.name != "quantized_forward":
            variable.assign(values[variable.path])
    return target


def test_paper_warmup_feeds_h_then_quantised_features_from_its_end_and_resumes_exactly(
        tmp_path):
    """Warm-up of 8 images, batch 8: the iteration at nimg 0 feeds D the continuous h (logits
    of the same weights in a forward="continuous" D), the one at nimg 8 the quantised h +
    sg(e - h) (logits of a forward="quantized" D outside any trainer). The switch is not
    state: a run restored at nimg 8 takes the same step bit for bit whatever its layers hold
    (here 0, the value the run held when it wrote the checkpoint)."""
    batches = [reals_and_labels(seed=s) for s in range(2)]
    probe = tf.constant(batches[0][0])

    def trainer_of(seed):
        G, _ = tiny_stylegan2(seed=seed)
        return GANTrainer(G, _tiny_d("quantized", seed), LossSettings("logistic"),
                          ProgressiveSchedule(RES, RES), FQSettings(warmup_kimg=0.008),
                          learning_rate=0.01, seed=seed)

    def switches(trainer):
        return [float(layer.quantized_forward.numpy()) for layer in trainer.D.fq_layers]

    trainer = trainer_of(0)
    strategy = tf.distribute.get_strategy()
    run_iterations(strategy, trainer, batches[:1], 8)
    assert switches(trainer) == [0.0, 0.0]            # nimg 0 < 8: warming up
    np.testing.assert_array_equal(trainer.D(probe).numpy(),
                                  copy_weights(trainer.D, _tiny_d("continuous"))(probe).numpy())
    path = Checkpoints(trainer.checkpoint_state(), str(tmp_path)).save(8)
    run_iterations(strategy, trainer, batches[1:], 8)
    assert switches(trainer) == [1.0, 1.0]            # nimg 8: the warm-up has ended
    quantized = copy_weights(trainer.D, _tiny_d("quantized"))(probe).numpy()
    np.testing.assert_array_equal(trainer.D(probe).numpy(), quantized)
    continuous = copy_weights(trainer.D, _tiny_d("continuous"))(probe).numpy()
    assert np.abs(quantized - continuous).max() > 1e-4   # the switch changes the logits

    resumed = trainer_of(7)
    state = resumed.checkpoint_state()
    assert not [key for key in state if "quantized_forward" in key]
    Checkpoints(state, str(tmp_path)).restore(path)
    for layer in resumed.D.fq_layers:
        layer.quantized_forward.assign(0.0)
    run_iterations(strategy, resumed, batches[1:], 8)
    expected = trainer.checkpoint_state()
    for key, variable in state.items():
        np.testing.assert_array_equal(variable.numpy(), expected[key].numpy(), err_msg=key)


def test_fq_update_cadence_official_updates_from_g_fakes_d_reals_d_fakes():
    """official: the dictionaries after one iteration equal three sequential EMA steps on the
    features of the G step's fakes, the D step's reals and its fakes, each with the assignments
    of its own forward: the G step's to the initial dictionary, the D step's two to the
    dictionary after the G step's update (D's weights do not move before Dmain's optimizer
    step, so an untrained copy of D reproduces them). The default
    cadence ("step", one update) is test_fq_dictionaries_update_once_per_d_step_...'s."""
    G, D = tiny_stylegan2()
    reference = copy_weights(D, tiny_stylegan2(seed=3)[1])
    trainer = GANTrainer(G, D, LossSettings("logistic"), ProgressiveSchedule(RES, RES),
                         FQSettings(update_cadence="official"), learning_rate=0.01)
    seen, discriminate = [], trainer.discriminate

    def recording(images, labels, lod):
        seen.append(tf.identity(images))
        return discriminate(images, labels, lod)

    trainer.discriminate = recording
    run_iterations(tf.distribute.get_strategy(), trainer, [reals_and_labels()], 8)
    assert [int(layer.num_updates.numpy()) for layer in D.fq_layers] == [3, 3]
    assert len(seen) == 3     # Gmain fakes, Dmain reals, Dmain fakes (no R1, no consistency)
    np.testing.assert_array_equal(seen[1].numpy(), reals_and_labels()[0])

    def update(lookups):
        for layer, lookup in zip(reference.fq_layers, lookups):
            layer.update_dictionary(lookup["features"], lookup["indices"])

    update(reference(seen[0], return_fq=True)[1])     # Gmain's fakes, the initial dictionary
    d_step = [reference(images, return_fq=True)[1] for images in seen[1:]]  # before D's updates
    for lookups in d_step:                              # Dmain's reals, then its fakes
        update(lookups)
    for got, want in zip(D.fq_layers, reference.fq_layers):
        np.testing.assert_array_equal(got.embeddings.numpy(), want.embeddings.numpy())


def test_fq_losses_reach_d_and_g_as_official():
    """G loss += alpha * fq(fake); D loss += alpha * (fq(real) + fq(fake)); FQ off: no terms.

    With lr = 0 nothing moves, so the same seed gives the same fakes for every alpha."""
    reals, labels = reals_and_labels()

    def step(alpha, fq=True):
        G, D = tiny_stylegan2()
        if not fq:
            D = stylegan2.Discriminator(resolution=RES, name="D", **WIDTHS)
        trainer = GANTrainer(G, D, LossSettings("logistic"), ProgressiveSchedule(RES, RES),
                             FQSettings(alpha=alpha), learning_rate=0.0)
        sums, _ = trainer.train_step((reals, labels), RES, 8)
        real_fq = fq_keras.fq_loss(D(tf.constant(reals), return_fq=True)[1]) if fq else 0.0
        return {k: float(v) for k, v in sums.items()}, float(real_fq)

    one, real_part = step(1.0)
    half, _ = step(0.5)
    assert one["g_fq_loss"] > 0 and real_part > 0
    np.testing.assert_allclose(half["g_fq_loss"], 0.5 * one["g_fq_loss"], rtol=1e-5)
    np.testing.assert_allclose(half["d_fq_loss"], 0.5 * one["d_fq_loss"], rtol=1e-5)
    assert one["d_fq_loss"] - real_part > 0.1 * real_part  # the fake part is there too
    np.testing.assert_allclose(half["d_loss"], one["d_loss"], rtol=1e-5)  # GAN terms unchanged
    off, _ = step(1.0, fq=False)
    assert off["g_fq_loss"] == 0 and off["d_fq_loss"] == 0


def test_checkpoint_round_trip_restores_every_variable(tmp_path):
    G, D = tiny_stylegan2()
    trainer = make_trainer(G, D)
    run_iterations(tf.distribute.get_strategy(), trainer, [reals_and_labels()], 8)
    state = trainer.checkpoint_state()
    path = Checkpoints(state, str(tmp_path)).save(24)
    G2, D2 = tiny_stylegan2(seed=5)
    fresh = make_trainer(G2, D2, seed=5)
    fresh_state = fresh.checkpoint_state()
    assert sorted(fresh_state) == sorted(state)
    # Every network weight, buffer, FQ variable, optimizer slot and RNG state is in the state.
    expected = len(G.variables) + len(trainer.Gs.variables) + len(D.variables) + \
        len(trainer.g_optimizer.variables) + len(trainer.d_optimizer.variables) + 4
    assert len(state) == expected
    Checkpoints(fresh_state, str(tmp_path)).restore(path)
    for key in state:
        np.testing.assert_array_equal(fresh_state[key].numpy(), state[key].numpy(), err_msg=key)


def test_lazy_adam_adjustment():
    optimizer, c = lazy_adam(0.002, (0.0, 0.99), 1e-8, 16)
    assert c == pytest.approx(16 / 17)
    assert float(optimizer.learning_rate) == pytest.approx(0.002 * 16 / 17)
    assert optimizer.beta_2 == pytest.approx(0.99 ** (16 / 17))
    assert optimizer.beta_1 == 0.0


def test_lazy_ratio_follows_the_intervals_even_without_the_regulariser():
    """As both references (G_reg_interval 4 / D_reg_interval 16 set Adam's ratio whatever gamma
    or the path-length weight): StyleGAN2 with gamma 0 keeps D's lr x 16/17 and betas ^ 16/17
    and just has no Dreg phase; StyleGAN v1 / ProGAN (intervals 1) have plain Adam."""
    G, D = tiny_stylegan2()
    no_r1 = dataclasses.replace(LOSS_PRESETS["stylegan2"], r1_gamma=0.0)
    trainer = make_trainer(G, D, loss=no_r1)
    assert trainer.d_lr_ratio == pytest.approx(16 / 17) and trainer.g_lr_ratio == pytest.approx(0.8)
    assert trainer.d_optimizer.beta_2 == pytest.approx(0.99 ** (16 / 17))
    assert trainer.phases_of_iteration(True, True) == ("Gmain", "Greg", "Dmain")
    for model in ("stylegan", "progan"):
        plain = make_trainer(*tiny_stylegan2(), loss=LOSS_PRESETS[model])
        assert plain.d_lr_ratio == 1.0 and plain.g_lr_ratio == 1.0


def test_d_lr_multiplier_scales_d_only_on_top_of_the_lazy_ratio():
    """d_lr_multiplier 2: D's Adam runs at 2 x lr x 16/17, G's at lr x 4/5,
    from construction and after every set_learning_rate; betas keep only the lazy ratio."""
    G, D = tiny_stylegan2()
    trainer = GANTrainer(G, D, LOSS_PRESETS["stylegan2"], ProgressiveSchedule(RES, RES),
                         learning_rate=0.002, d_lr_multiplier=2.0)
    for lr in (0.002, 0.003):
        if lr != 0.002:
            trainer.set_learning_rate(lr)
        assert float(trainer.d_optimizer.learning_rate) == pytest.approx(2 * lr * 16 / 17)
        assert float(trainer.g_optimizer.learning_rate) == pytest.approx(lr * 0.8)
    assert trainer.d_optimizer.beta_2 == pytest.approx(0.99 ** (16 / 17))


@pytest.mark.parametrize("phase, batch", [("Gmain", 8), ("Greg", 4), ("Dmain", 8)])
def test_dlatent_average_moves_in_every_training_g_pass(phase, batch):
    """dlatent_avg <- lerp(mean of the phase's main w, avg, 0.995) in Gmain, Greg (pl batch)
    and Dmain's fakes, as in every training G pass of both references; the mixing latents do
    not enter it. Expected w recomputed from the phase's first draw (its z)."""
    G, D = tiny_stylegan2()
    trainer = make_trainer(G, D)
    G.dlatent_avg.assign(np.linspace(-1, 1, 8).astype(np.float32))
    before = G.dlatent_avg.numpy()
    state = trainer.seed_generator.state.numpy()
    ws = G.mapping(trainer._latents(batch), None).numpy()
    trainer.seed_generator.state.assign(state)
    trainer.run_phase(phase, reals_and_labels(), RES, 8)
    expected = ws[:, 0].mean(axis=0) + (before - ws[:, 0].mean(axis=0)) * 0.995
    # One float32 mean of <= 8 rows and one lerp: a few ulps of |w| ~ 1.
    np.testing.assert_allclose(G.dlatent_avg.numpy(), expected, rtol=0, atol=1e-6)


def test_pl_mean_keeps_its_gradient_path():
    """Both references penalise (L - pl_mean)^2 with pl_mean = lerp(pl_mean, mean(L), decay) NOT
    detached: d/dL_i sum_j (L_j - m)^2 = 2 (L_i - m) - 2 sum_j (L_j - m) * decay / n."""
    G, D = tiny_stylegan2()
    trainer = make_trainer(G, D)
    trainer.pl_mean.assign(0.3)
    lengths = tf.constant([0.5, 1.0, 2.0, 4.0])
    with tf.GradientTape() as tape:
        tape.watch(lengths)
        m = trainer._update_pl_mean(lengths)
        penalty = tf.reduce_sum(tf.square(lengths - m))
    m_expected = 0.3 + 0.01 * (1.875 - 0.3)
    assert float(trainer.pl_mean.numpy()) == pytest.approx(m_expected, rel=1e-6)
    residual = lengths.numpy() - m_expected
    expected = 2 * residual - 2 * residual.sum() * 0.01 / 4
    np.testing.assert_allclose(tape.gradient(penalty, lengths).numpy(), expected, rtol=1e-5)


def test_reset_optimizers_zeroes_moments_not_weights():
    G, D = tiny_stylegan2()
    trainer = make_trainer(G, D)
    run_iterations(tf.distribute.get_strategy(), trainer, [reals_and_labels()], 8)
    weights = [w.numpy().copy() for w in G.weights]
    trainer.reset_optimizers()
    for optimizer in (trainer.g_optimizer, trainer.d_optimizer):
        assert int(optimizer.iterations.numpy()) == 0
        slots = [v for v in optimizer.variables if v.path.endswith(("_momentum", "_velocity"))]
        assert slots and all(not np.any(v.numpy()) for v in slots)
    for w, before in zip(G.weights, weights):
        np.testing.assert_array_equal(w.numpy(), before)


# ---------------------------------------------------------------------------------------------
# Loss terms against straight numpy / hand derivations.

def test_logistic_and_wgan_losses():
    real = tf.constant([[0.5], [-1.0]])
    fake = tf.constant([[2.0], [0.0]])
    softplus = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(losses.d_logistic(real, fake).numpy(),
                               softplus(np.array([2.0, 0.0])) + softplus(-np.array([0.5, -1.0])), rtol=1e-6)
    np.testing.assert_allclose(losses.g_logistic_nonsaturating(fake).numpy(), softplus(-np.array([2.0, 0.0])), rtol=1e-6)
    # Exact: differences and squares of these dyadic float32 values are representable.
    np.testing.assert_array_equal(losses.d_wgan(real, fake).numpy(), [1.5, 1.0])
    np.testing.assert_array_equal(losses.wgan_epsilon_drift(real).numpy(), [0.25, 1.0])


def test_r1_and_gradient_penalty_on_a_linear_critic():
    """D(x) = sum(w * x): grad = w everywhere, so R1 = sum(w^2) and GP = (|w| - 1)^2."""
    w = tf.constant(np.random.RandomState(0).randn(1, 4, 4, 3).astype(np.float32))
    critic = lambda x: tf.reduce_sum(x * w, axis=[1, 2, 3])[:, None]
    reals = tf.constant(np.random.RandomState(1).randn(2, 4, 4, 3).astype(np.float32))
    r1, logits = losses.r1_penalty(critic, reals)
    np.testing.assert_allclose(r1.numpy(), [np.sum(w.numpy() ** 2)] * 2, rtol=1e-5)
    gp = losses.wgan_gradient_penalty(critic, reals, reals * 0.0, keras.random.SeedGenerator(0))
    np.testing.assert_allclose(gp.numpy(), [(np.sqrt(np.sum(w.numpy() ** 2)) - 1) ** 2] * 2, rtol=1e-5)


def _tiny_progan(resolution=16):
    keras.utils.set_random_seed(0)
    G = progan.Generator(resolution=resolution, latent_size=8, fmap_base=32, fmap_max=8, name="G")
    D = progan.Discriminator(resolution=resolution, fmap_base=32, fmap_max=8, name="D")
    return G, D


@pytest.mark.parametrize("stage, lod", [(8, 1.0), (8, 1.5), (4, 2.0)])
def test_penalties_at_a_stage_equal_the_references_on_full_resolution_images(stage, lod):
    """Transcription of the official path: D sees x_R = nearest-upscale(x_s, R/s) and
    average-pools it back (`process_reals`, `grow`'s downscale2d, fade-ins too); R1 and WGAN-GP
    are taken with respect to x_R. Ours run D on x_s and scale by r = s / R (R1 x r^2, GP on
    r ||grad||); they must agree to float32 rounding (both sides sum the same squares)."""
    _, D = _tiny_progan(16)
    factor = 16 // stage
    ratio = losses.full_resolution_gradient_ratio(stage, 16)
    assert ratio == 1.0 / factor
    critic = lambda x: D(x, lod=lod)
    official = lambda x: D(L.downscale2d(x, factor), lod=lod)
    rng = np.random.RandomState(3)
    reals, fakes = (tf.constant(np.tanh(rng.randn(4, stage, stage, 3)).astype(np.float32))
                    for _ in range(2))
    ours, _ = losses.r1_penalty(critic, reals, ratio)
    reference, _ = losses.r1_penalty(official, L.upscale2d(reals, factor))
    # Squared gradients summed over <= 16^2 * 3 pixels: float32 sums, rtol 1e-5.
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5)
    # The penalty really changes: unscaled, R1 is factor^2 times the reference's.
    unscaled, _ = losses.r1_penalty(critic, reals)
    np.testing.assert_allclose(unscaled.numpy(), reference.numpy() * factor ** 2, rtol=1e-5)
    for target in (1.0, 750.0):   # ProGAN's 1 and its CIFAR-10 setting
        gp = losses.wgan_gradient_penalty(critic, reals, fakes, keras.random.SeedGenerator(5),
                                          target, ratio)
        gp_reference = losses.wgan_gradient_penalty(
            official, L.upscale2d(reals, factor), L.upscale2d(fakes, factor),
            keras.random.SeedGenerator(5), target)
        np.testing.assert_allclose(gp.numpy(), gp_reference.numpy(), rtol=1e-5, atol=1e-7)


def test_trainer_scales_r1_at_a_progressive_stage():
    """The trainer's logged R1 at the 8x8 stage of a 16x16 run (Dmain, non-lazy) equals the
    official penalty on the nearest-upscaled 16x16 reals through an average-pooling front."""
    G, D = _tiny_progan(16)
    loss = LossSettings("logistic", r1_gamma=1.0)
    trainer = GANTrainer(G, D, loss, ProgressiveSchedule(16, 4, 1, 1), learning_rate=0.001)
    trainer.nimg.assign(1500)  # the 4 -> 8 fade-in, lod 1.5
    reals = np.tanh(np.random.RandomState(4).randn(4, 8, 8, 3)).astype(np.float32)
    faded = fade_reals(tf.constant(reals), tf.constant(1.5))
    reference, _ = losses.r1_penalty(lambda x: D(L.downscale2d(x, 2), lod=1.5),
                                     L.upscale2d(faded, 2))
    sums, _ = trainer.run_phase("Dmain", (reals, np.zeros((4, 0), np.float32)), 8, 4)
    np.testing.assert_allclose(float(sums["d_r1_penalty"]), reference.numpy().mean(), rtol=1e-5)


def test_path_length_of_a_linear_synthesis():
    """img = A w: the path length is sqrt(mean_layers |A^T y|^2), computed here in numpy."""
    rng = np.random.RandomState(2)
    A = rng.randn(3, 5).astype(np.float32)  # w_dim 3 -> 5 pixels
    synth = lambda w: tf.reshape(tf.einsum("nlw,wp->np", w, A), [-1, 1, 5, 1])
    ws = tf.constant(rng.randn(2, 4, 3).astype(np.float32))
    seed = keras.random.SeedGenerator(7)
    lengths = losses.path_lengths(synth, ws, seed).numpy()
    noise = keras.random.normal((2, 1, 5, 1), seed=keras.random.SeedGenerator(7)).numpy() / np.sqrt(5)
    grad = np.einsum("wp,np->nw", A, noise.reshape(2, 5))  # same for every layer
    expected = np.sqrt(np.sum(grad ** 2, axis=1) * 4 / 4)
    np.testing.assert_allclose(lengths, expected, rtol=1e-5)


def test_progan_conditional_trainer_step_runs_with_auxiliary_classifier():
    keras.utils.set_random_seed(0)
    G = progan.Generator(resolution=8, c_dim=3, latent_size=8, fmap_base=32, fmap_max=8, name="G")
    D = progan.Discriminator(resolution=8, c_dim=3, fmap_base=32, fmap_max=8, fq_blocks=(8,),
                             fq_num_embeddings=4, name="D")
    trainer = GANTrainer(G, D, LOSS_PRESETS["progan"], ProgressiveSchedule(8, 4, 1, 1), learning_rate=0.001)
    rng = np.random.RandomState(0)
    reals = np.tanh(rng.randn(4, 8, 8, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    sums, means = trainer.train_step((reals, labels), 8, 4)
    assert np.isfinite(float(sums["d_gradient_penalty"]))
    assert all(np.isfinite(float(v)) for v in sums.values())
    assert "lod" in means


def test_gs_beta_per_step_or_from_the_half_life():
    """Gs decay per step: ProGAN's fixed G_smoothing 0.999 whatever the minibatch; StyleGAN's
    0.5^(minibatch / (g_ema_kimg * 1000)); stylegan2-ada's ramp-up caps the half-life at
    rampup * images seen. float64, compared to 1e-15."""
    progan_ema = LossSettings("wgan_gp", g_ema_kimg=0.0, g_ema_beta=0.999)
    for batch, nimg in ((128, 0), (4, 10_000_000)):
        assert float(progan_ema.g_ema_beta_at(batch, nimg)) == 0.999
    half_life = LossSettings("logistic", g_ema_kimg=10.0)
    for batch in (4, 32, 128):
        assert abs(float(half_life.g_ema_beta_at(batch, 0)) - 0.5 ** (batch / 10_000)) < 1e-15
    rampup = LossSettings("logistic", g_ema_kimg=10.0, g_ema_rampup=0.05)
    # After 1000 + 16 images the half-life is 0.05 * 1016 = 50.8 images; later the 10 kimg.
    assert abs(float(rampup.g_ema_beta_at(16, 1000)) - 0.5 ** (16 / 50.8)) < 1e-15
    assert abs(float(rampup.g_ema_beta_at(16, 10 ** 6)) - 0.5 ** (16 / 10_000)) < 1e-15
    with pytest.raises(ValueError, match="g_ema_beta must be in"):
        LossSettings("wgan_gp", g_ema_beta=1.0)


def test_finish_step_averages_gs_with_the_fixed_progan_beta():
    """Gs <- G + (Gs - G) * 0.999 with LossSettings(g_ema_beta=0.999), any minibatch."""
    G, D = tiny_stylegan2()
    trainer = make_trainer(G, D, loss=LossSettings("logistic", g_ema_beta=0.999))
    trainable = [i for i, w in enumerate(G.weights) if w.trainable]
    before = [trainer.Gs.weights[i].numpy().copy() for i in trainable]
    for i in trainable:
        G.weights[i].assign(G.weights[i] + 1.0)
    trainer.finish_step(128)
    for k, i in enumerate(trainable):
        g = G.weights[i].numpy()
        # One lerp in float32 (<= 2 ulps), beta rounded to float32: rtol 1e-6, atol 1e-6.
        np.testing.assert_allclose(trainer.Gs.weights[i].numpy(), g + (before[k] - g) * 0.999,
                                   rtol=1e-6, atol=1e-6)
