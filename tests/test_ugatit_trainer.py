"""UGATITTrainer: loss terms against numpy, PyTorch Adam, LR decay, FQ wiring, replicas, strips.

Trainer steps run eagerly here (a compiled U-GAT-IT step has ~25k ops and takes long to trace;
the loop tests compile it). Networks are tiny: 16x16 images, width 4, global D with 4 layers,
local D with 3, FQ after global convs 1 and 2.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import fq_keras
from networks import ugatit
from networks.ugatit import cam_heatmap, jet_colormap
from test_trainer import copy_weights
from training.checkpoints import Checkpoints
from training.optimizers import TorchAdam
from training.ugatit_trainer import (LossWeights, UGATITTrainer, bce_with_logits,
                                     discriminator_loss, generator_loss, l1, linear_decay,
                                     mse_to, strip, translation_panels)

SIZE = 16
FQ_KWARGS = dict(num_embeddings=8, commitment_cost=2.0, decay=0.85)
NETWORKS = ("genA2B", "genB2A", "disGA", "disGB", "disLA", "disLB")


def tiny_networks(fq=True, seed=0):
    keras.utils.set_random_seed(seed)
    return ugatit.make_ugatit(light=True, img_size=SIZE, ngf=4, ndf=4, n_blocks=1, fq=None,
                              fq_layers=(1, 2) if fq else (), fq_kwargs=FQ_KWARGS,
                              global_layers=4, local_layers=3)


def tiny_trainer(fq=True, seed=0, **kwargs):
    kwargs.setdefault("learning_rate", 1e-4)
    return UGATITTrainer(tiny_networks(fq, seed), (SIZE, SIZE, 3), iterations=4, **kwargs)


def image_batches(count=2, batch=4, seed=0):
    rng = np.random.RandomState(seed)
    return [tuple(np.tanh(rng.randn(batch, SIZE, SIZE, 3)).astype(np.float32) for _ in "AB")
            for _ in range(count)]


def local_values(variable, strategy):
    values = [v.numpy() for v in strategy.experimental_local_results(
        getattr(variable, "value", variable))]
    for other in values[1:]:
        np.testing.assert_array_equal(other, values[0])  # every replica holds the same value
    return values[0]


def np_mse(x, t):
    return np.mean((np.asarray(x, np.float64) - t) ** 2)


def np_l1(x, y):
    return np.mean(np.abs(np.asarray(x, np.float64) - y))


def np_bce(x, t):
    s = 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
    return np.mean(-(t * np.log(s) + (1 - t) * np.log(1 - s)))

# ---------------------------------------------------------------------------------------------
# Loss terms against the official formulas (torch MSELoss / L1Loss / BCEWithLogitsLoss).


def test_loss_terms_are_per_sample_element_means():
    rng = np.random.RandomState(1)
    x, y = rng.randn(3, 5, 4, 2), rng.randn(3, 5, 4, 2)
    logits = rng.randn(3, 2) * 4
    np.testing.assert_allclose(mse_to(x, 1.0).numpy(), [np_mse(v, 1.0) for v in x], rtol=1e-6)
    np.testing.assert_allclose(l1(x, y).numpy(), [np_l1(a, b) for a, b in zip(x, y)], rtol=1e-6)
    for target in (0.0, 1.0):
        np.testing.assert_allclose(bce_with_logits(logits, target).numpy(),
                                   [np_bce(v, target) for v in logits], rtol=1e-5)
    # Equal element counts per sample: the mean of the per-sample means is the batch mean.
    np.testing.assert_allclose(np.mean(mse_to(x, 0.0).numpy()), np_mse(x, 0.0), rtol=1e-6)


def fixed_outputs(rng, batch=3):
    """Discriminator outputs as the official shapes: global (N,1,h,w) -> NHWC, CAM (N, 2)."""
    shapes = {"GA": (batch, 2, 2, 1), "LA": (batch, 5, 5, 1), "GB": (batch, 2, 2, 1),
              "LB": (batch, 5, 5, 1)}
    return {k: (rng.randn(*s).astype(np.float32), rng.randn(batch, 2).astype(np.float32))
            for k, s in shapes.items()}


def test_discriminator_loss_equals_the_official_sum():
    rng = np.random.RandomState(2)
    real, fake = fixed_outputs(rng), fixed_outputs(rng)
    weights = LossWeights(adv=1.5)
    got = np.mean(discriminator_loss(real, fake, weights).numpy())
    expected = 0.0
    for k in ("GA", "LA", "GB", "LB"):
        expected += np_mse(real[k][0], 1) + np_mse(fake[k][0], 0)          # D_ad_loss
        expected += np_mse(real[k][1], 1) + np_mse(fake[k][1], 0)          # D_ad_cam_loss
    np.testing.assert_allclose(got, 1.5 * expected, rtol=1e-6)


def test_generator_loss_equals_the_official_sum():
    rng = np.random.RandomState(3)
    fake = fixed_outputs(rng)
    images = {k: np.tanh(rng.randn(3, 8, 8, 3)).astype(np.float32)
              for k in ("A", "B", "A2B2A", "B2A2B", "A2A", "B2B")}
    cams = {k: (rng.randn(3, 2) * 3).astype(np.float32) for k in ("A2B", "B2A", "A2A", "B2B")}
    weights = LossWeights()
    terms = {k: np.mean(v.numpy()) for k, v in generator_loss(fake, images, cams, weights).items()}
    adv = sum(np_mse(fake[k][0], 1) + np_mse(fake[k][1], 1) for k in ("GA", "LA", "GB", "LB"))
    recon = np_l1(images["A2B2A"], images["A"]) + np_l1(images["B2A2B"], images["B"])
    identity = np_l1(images["A2A"], images["A"]) + np_l1(images["B2B"], images["B"])
    # G_cam_loss_A = BCE(cam of G_B->A(B), 1) + BCE(cam of G_B->A(A), 0); same for B.
    cam = (np_bce(cams["B2A"], 1) + np_bce(cams["A2A"], 0) + np_bce(cams["A2B"], 1)
           + np_bce(cams["B2B"], 0))
    np.testing.assert_allclose(terms["adv"], adv, rtol=1e-6)
    np.testing.assert_allclose(terms["cycle"], 10 * recon, rtol=1e-6)
    np.testing.assert_allclose(terms["identity"], 10 * identity, rtol=1e-6)
    np.testing.assert_allclose(terms["cam"], 1000 * cam, rtol=1e-5)
    np.testing.assert_allclose(terms["cycle_l1"], recon, rtol=1e-6)
    np.testing.assert_allclose(terms["identity_l1"], identity, rtol=1e-6)

# ---------------------------------------------------------------------------------------------
# Optimiser and schedule.


def np_torch_adam(param, grads, lrs, betas=(0.5, 0.999), eps=1e-8, weight_decay=1e-4):
    """torch.optim.Adam (amsgrad=False, coupled weight_decay) step by step, float64."""
    p = np.asarray(param, np.float64).copy()
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g + weight_decay * p
        m += (g - m) * (1 - betas[0])                       # exp_avg.lerp_(grad, 1 - beta1)
        v = v * betas[1] + (1 - betas[1]) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - betas[1] ** t) + eps
        p -= lr / (1 - betas[0] ** t) * m / denom
    return p


def test_torch_adam_matches_pytorch_with_coupled_weight_decay():
    rng = np.random.RandomState(4)
    param = rng.randn(50).astype(np.float32)
    # Tiny gradients where epsilon placement matters, and large ones (CAM weight 1000).
    scales = np.concatenate([np.full(10, 1e-9), np.full(20, 1.0), np.full(20, 1e3)])
    grads = [(rng.randn(50) * scales).astype(np.float32) for _ in range(4)]
    lrs = [1e-3, 1e-3, 5e-4, 2.5e-4]
    step = tf.Variable(0)
    var = tf.Variable(param)
    optimizer = TorchAdam(lambda: tf.gather(tf.constant(lrs), step), 0.5, 0.999, 1e-8,
                          coupled_weight_decay=1e-4)
    for g in grads:
        optimizer.apply([tf.constant(g)], [var])
        step.assign_add(1)
    expected = np_torch_adam(param, grads, lrs)
    np.testing.assert_allclose(var.numpy(), expected, rtol=1e-6, atol=1e-7)
    # Keras' Adam (decoupled decay, epsilon on the uncorrected sqrt(v)) is not the same update.
    keras_var = tf.Variable(param)
    keras_adam = keras.optimizers.Adam(1e-3, 0.5, 0.999, 1e-8, weight_decay=1e-4)
    keras_adam.apply([tf.constant(grads[0])], [keras_var])
    one_step = np_torch_adam(param, grads[:1], lrs[:1])
    assert np.max(np.abs(keras_var.numpy() - one_step)) > 1e-5


def test_linear_decay_matches_the_official_decrement():
    base = 1e-4
    for iterations in (10, 1000):
        lr, official = base, []
        for step in range(1, iterations + 1):           # UGATIT-pytorch train(): 1-based
            if step > iterations // 2:
                lr -= base / (iterations // 2)
            official.append(lr)
        ours = [float(linear_decay(base, iterations, s)) for s in range(iterations)]
        # float32 factors (ulp(1) = 1.2e-7) times base against float64 decrements: ~1e-7 * base
        # at most; atol 1e-6 * base (and the default rtol 1e-7 of the float32 base itself).
        np.testing.assert_allclose(ours, official, atol=1e-6 * base)
        assert ours[iterations // 2 - 1] == pytest.approx(base, rel=1e-6) and ours[-1] == 0.0
    # Odd lengths: the official decrement would end below zero; ours stops at 0.
    assert float(linear_decay(base, 11, 10)) == 0.0


def test_learning_rate_follows_the_iteration_counter():
    trainer = tiny_trainer(learning_rate=2e-4)
    assert float(trainer.g_optimizer.learning_rate) == pytest.approx(2e-4)
    trainer.iteration.assign(3)   # iterations=4: steps 3 is the last, lr = 2e-4 * (1 - 2/2)
    assert float(trainer.d_optimizer.learning_rate) == 0.0
    trainer.iteration.assign(2)
    assert float(trainer.g_optimizer.learning_rate) == pytest.approx(1e-4)

# ---------------------------------------------------------------------------------------------
# Training steps (eager): replicas, FQ updates, rho clipping, checkpoints.


SGD_LEARNING_RATE = 1e-3


def with_sgd(trainer):
    """The trainer with plain SGD for both optimisers (create it in the trainer's strategy
    scope): weight updates -lr * g are linear in the gradients, so float32 differences of the
    gradients stay differences of that size in the weights (Adam's first steps are about
    lr * g / |g|: a rounding-level difference of a near-zero gradient element becomes one of up
    to lr, and a wrong gradient scale goes unnoticed)."""
    for prefix, variables in (("g", trainer.g_variables), ("d", trainer.d_variables)):
        optimizer = keras.optimizers.SGD(SGD_LEARNING_RATE, name=f"{prefix}_sgd")
        optimizer.build(variables)
        setattr(trainer, f"{prefix}_optimizer", optimizer)
    return trainer


def push_rho(trainer):
    """rho out of [0, 1] (1.5 at odd, -0.5 at even channels): the first clip matters."""
    for layer in trainer.genA2B.rho_layers() + trainer.genB2A.rho_layers():
        layer.rho.assign(np.where(np.arange(layer.rho.shape[0]) % 2, 1.5, -0.5))


@pytest.fixture(scope="module")
def two_steps(two_replica_strategy):
    """A one-device trainer (official TorchAdam) after 2 iterations (global batch 4), with rho
    pushed out of [0, 1] before the first step and the executed dictionary updates counted;
    and, for the replica comparison, one-device and two-replica SGD trainers after the same
    first iteration from the same initial state (one: a second gradient, at weights that
    differ by rounding, is a nonlinear function of them: at lr 1e-4 the curvature of the CAM
    loss, weight 1000, turns rounding into 1% of some generator updates)."""
    batches = image_batches()
    single = tiny_trainer()
    push_rho(single)
    initial = [v.numpy() for v in single.variables]
    counts = {}
    for d_name in ("disGA", "disGB"):
        for layer in getattr(single, d_name).fq_layers:
            original = layer.update_dictionary
            key = f"{d_name}/{layer.name}"
            counts[key] = 0

            def counting(*args, original=original, key=key, **kwargs):
                counts[key] += 1
                return original(*args, **kwargs)

            layer.update_dictionary = counting
    logs = []
    for a, b in batches:
        logs.append(single.train_step((a, b), 4))
        single.finish_step()

    sgd = with_sgd(tiny_trainer(seed=2))
    strategy = two_replica_strategy
    with strategy.scope():
        mirrored = with_sgd(tiny_trainer(seed=1))
    # The same SGD iteration with the batch in another order: the same numbers up to the
    # summation order of every reduction over the batch, i.e. this computation's float32 error
    # on the machine running the test (the replica comparison's yardstick).
    reordered = with_sgd(tiny_trainer(seed=3))
    for trainer in (sgd, mirrored, reordered):
        assert len(trainer.variables) == len(initial)
        for variable, value in zip(trainer.variables, initial):
            variable.assign(value)
    a, b = batches[0]
    sgd.train_step((a, b), 4)
    sgd.finish_step()
    order = [2, 3, 0, 1]
    reordered.train_step((a[order], b[order]), 4)
    reordered.finish_step()
    data = strategy.experimental_distribute_values_from_function(
        lambda ctx: (a[2 * ctx.replica_id_in_sync_group:][:2],
                     b[2 * ctx.replica_id_in_sync_group:][:2]))
    strategy.run(mirrored.train_step, args=(data, 4))
    mirrored.finish_step()
    return dict(single=single, sgd=sgd, mirrored=mirrored, reordered=reordered, initial=initial,
                strategy=strategy, counts=counts, logs=logs)


def test_two_replicas_equal_one_device(two_steps):
    """With SGD (see with_sgd), every network variable (weights, rho, spectral-norm u and v, FQ
    dictionaries and EMA state), the optimisers' counters and the iteration counter agree after
    an iteration with global batch 4 on one device and 2 x 2 on two replicas, and every replica
    holds the same values.

    Agree means: to within 10x the float32 error of this computation, measured in the same run
    as the largest difference, relative to each variable's largest update, between the
    one-device iteration and the same iteration with the batch reordered (the forward values
    of 2 half batches and 1 batch differ by rounding only, and every gradient by its summation
    order; through U-GAT-IT's normalisations that is up to ~1e-4 of a variable's largest update,
    seen on an AMD EPYC (AVX2), where a fixed 1e-5 failed). A global-batch scale error (updates
    x2 or x0.5) or a missing all-reduce is off by a third of the update or more."""
    single, mirrored, strategy = two_steps["sgd"], two_steps["mirrored"], two_steps["strategy"]
    reordered, initial = two_steps["reordered"], two_steps["initial"]
    assert len(single.variables) == len(mirrored.variables) == len(reordered.variables)

    def largest_update(value, start):
        return float(np.max(np.abs(value - start))) if value.size else 0.0

    noise = 0.0
    for a, c, start in zip(single.variables, reordered.variables, initial):
        update = largest_update(a.numpy(), start)
        if update > 0:
            noise = max(noise, largest_update(c.numpy(), a.numpy()) / update)
    # Floor: 1e-5 (84 ulp) of the update, for kernels that happen not to depend on the order.
    relative = 10 * max(noise, 1e-5)
    assert relative < 1e-2, f"reordering the batch changed the updates by {noise:.2g} of them"
    kinds, moved = set(), {}
    for a, b, start in zip(single.variables, mirrored.variables, initial):
        assert a.path.split("/")[1:] == b.path.split("/")[1:]  # the trainers differ in name
        kinds.add(a.path.rsplit("/", 1)[-1])
        want = a.numpy()
        update = largest_update(want, start)
        # w - lr * g also rounds to 0.5 ulp of w (rtol 1e-6 is 8 ulp).
        np.testing.assert_allclose(local_values(b, strategy), want, rtol=1e-6,
                                   atol=relative * update,
                                   err_msg=f"{a.path} (reorder noise {noise:.2g} of an update)")
        if a.trainable and not a.path.endswith("rho"):   # rho moved by clipping
            network = a.path.split("/")[0]
            moved[network] = max(moved.get(network, 0.0),
                                 update / (1e-6 * float(np.max(np.abs(want)))))
    assert {"sn_u", "sn_v", "embeddings", "ema_embedding_sums", "rho", "kernel"} <= kinds
    # Every network's weights moved far beyond rtol: gradients summed over the replicas with a
    # wrong global-batch scale (updates x2 or x0.5) would fail the comparison.
    assert sorted(moved) == sorted(NETWORKS) and min(moved.values()) > 100, moved
    for opt_a, opt_b in ((single.g_optimizer, mirrored.g_optimizer),
                         (single.d_optimizer, mirrored.d_optimizer)):
        for a, b in zip(opt_a.variables, opt_b.variables):
            np.testing.assert_array_equal(local_values(b, strategy), a.numpy(), err_msg=a.path)
    assert int(local_values(mirrored.iteration, strategy)) == 1


def test_fq_dictionaries_update_once_per_d_step_never_in_g_step(two_steps):
    single = two_steps["single"]
    # Two iterations: exactly two executed updates per FQ layer of each global D (the D step's
    # one), none from the G step that also runs the global Ds with FQ.
    assert two_steps["counts"] == {"disGA/fq1": 2, "disGA/fq2": 2, "disGB/fq1": 2,
                                   "disGB/fq2": 2}
    for d_name in ("disGA", "disGB"):
        for layer in getattr(single, d_name).fq_layers:
            assert int(layer.num_updates.numpy()) == 2
    assert not single.disLA.fq_layers and not single.disLB.fq_layers
    # Separate dictionaries: D_GA's and D_GB's differ (they saw different domains).
    assert not np.allclose(single.disGA.fq_layers[0].embeddings.numpy(),
                           single.disGB.fq_layers[0].embeddings.numpy())
    sums, means = two_steps["logs"][-1]
    assert {"fq/disGA/fq1/perplexity", "fq/disGB/fq2/unused_fraction"} <= set(means)


def test_rho_is_clipped_after_each_generator_update(two_steps):
    for G in (two_steps["single"].genA2B, two_steps["single"].genB2A):
        for layer in G.rho_layers():
            rho = layer.rho.numpy()
            assert rho.min() >= 0.0 and rho.max() <= 1.0
            # Pushed to 1.5 / -0.5 before the step: clipped to the bounds, then moved by at
            # most one Adam step (lr 1e-4) and clipped again.
            odd = np.arange(rho.shape[0]) % 2 == 1
            np.testing.assert_allclose(rho[odd], 1.0, atol=2e-4)
            np.testing.assert_allclose(rho[~odd], 0.0, atol=2e-4)


def test_logged_losses_are_finite_and_named(two_steps):
    sums, means = two_steps["logs"][0]
    assert set(sums) == {"d_loss", "d_fq_loss", "g_loss", "g_adv_loss", "g_cycle_loss",
                         "g_identity_loss", "g_cam_loss", "g_fq_loss"}
    for value in list(sums.values()) + list(means.values()):
        assert np.isfinite(float(value))
    assert float(means["learning_rate"]) == pytest.approx(1e-4)
    # CAM loss at initialisation: 4 BCE terms near log 2 each, times 1000.
    assert 1000 < float(sums["g_cam_loss"]) < 10000


def test_checkpoint_round_trip_restores_every_variable(two_steps, tmp_path):
    trainer = two_steps["single"]
    state = trainer.checkpoint_state()
    nets = [getattr(trainer, n) for n in ("genA2B", "genB2A", "disGA", "disGB", "disLA",
                                          "disLB")]
    assert len(state) == (sum(len(n.variables) for n in nets) + len(trainer.g_optimizer.variables)
                          + len(trainer.d_optimizer.variables) + 1)
    path = Checkpoints(state, str(tmp_path)).save(2)
    fresh = tiny_trainer(seed=5)
    fresh_state = fresh.checkpoint_state()
    assert sorted(fresh_state) == sorted(state)
    Checkpoints(fresh_state, str(tmp_path)).restore(path)
    for key in state:
        np.testing.assert_array_equal(fresh_state[key].numpy(), state[key].numpy(), err_msg=key)
    assert int(fresh.iteration.numpy()) == 2


def test_fq_losses_reach_d_and_g_as_official():
    """D loss += alpha (fq(real) + fq(fake)), G loss += alpha fq(fake): with lr = 0 the same
    start state gives the same features for every alpha; the baseline has no FQ terms."""
    trainer = tiny_trainer(learning_rate=0.0, weight_decay=0.0)
    a, b = image_batches(1, batch=2)[0]
    start = [v.numpy() for v in trainer.variables]

    def step(alpha):
        for variable, value in zip(trainer.variables, start):
            variable.assign(value)
        trainer.fq_alpha = alpha
        return {k: float(v) for k, v in trainer.train_step((a, b), 2)[0].items()}

    one, half = step(1.0), step(0.5)
    for variable, value in zip(trainer.variables, start):
        variable.assign(value)
    # The D step's first global-D forwards are D_GA(real A) and D_GB(real B).
    real_fq = sum(float(fq_keras.fq_loss(D(x, training=True, return_fq=True)[1], 2))
                  for D, x in ((trainer.disGA, a), (trainer.disGB, b)))
    assert one["g_fq_loss"] > 0 and real_fq > 0
    assert one["d_fq_loss"] - real_fq > 0.05 * real_fq          # the fake part is there too
    np.testing.assert_allclose(half["d_fq_loss"], 0.5 * one["d_fq_loss"], rtol=1e-5)
    np.testing.assert_allclose(half["g_fq_loss"], 0.5 * one["g_fq_loss"], rtol=1e-5)
    np.testing.assert_allclose(half["d_loss"], one["d_loss"], rtol=1e-5)   # GAN part unchanged
    baseline = tiny_trainer(fq=False, learning_rate=0.0)
    sums, means = baseline.train_step((a, b), 2)
    assert float(sums["d_fq_loss"]) == 0.0 and float(sums["g_fq_loss"]) == 0.0
    assert not any(k.startswith("fq/") for k in means)


def test_paper_warmup_switch_and_official_fq_update_cadence():
    """Warm-up of 1 iteration: iteration 0 feeds the global Ds h (their logits equal a
    forward="continuous" copy's), iteration 1 h + sg(e - h) (a forward="quantized" copy's).
    Official cadence: per iteration the D apply, an update from the D step's reals, one from
    its fakes, the G apply, an update from the G step's fakes."""
    keras.utils.set_random_seed(0)
    networks = ugatit.make_ugatit(light=True, img_size=SIZE, ngf=4, ndf=4, n_blocks=1, fq=None,
                                  fq_layers=(1, 2), fq_kwargs=dict(FQ_KWARGS, forward="quantized"),
                                  global_layers=4, local_layers=3)
    trainer = UGATITTrainer(networks, (SIZE, SIZE, 3), iterations=4, fq_warmup_iterations=1,
                            fq_update_cadence="official")
    events, layer = [], trainer.disGA.fq_layers[0]
    update, apply = layer.update_dictionary, trainer._apply
    layer.update_dictionary = lambda *a, **k: events.append("U") or update(*a, **k)
    trainer._apply = lambda opt, *a: events.append(
        "G" if opt is trainer.g_optimizer else "D") or apply(opt, *a)

    def logits(D, x):
        return D(x, training=False)[0].numpy()

    def copy_of(forward):
        D = ugatit.UGATITDiscriminator(ndf=4, n_layers=4, fq_layers=(1, 2), name="disGA",
                                       fq_kwargs=dict(FQ_KWARGS, forward=forward))
        D.build((None, SIZE, SIZE, 3))
        return copy_weights(trainer.disGA, D)

    probe = image_batches(1, batch=2, seed=4)[0][0]
    for i, batch in enumerate(image_batches(2, batch=2)):
        trainer.train_step(batch, 2)
        trainer.finish_step()
        on = float(i >= 1)
        assert [float(l.quantized_forward.numpy()) for D in (trainer.disGA, trainer.disGB)
                for l in D.fq_layers] == [on] * 4, i
        reference = copy_of("quantized" if on else "continuous")
        np.testing.assert_array_equal(logits(trainer.disGA, probe), logits(reference, probe))
    assert "".join(events) == "DUUGU" * 2
    assert int(trainer.disGB.fq_layers[1].num_updates.numpy()) == 6


def test_mixed_precision_step_is_finite(mixed_precision):
    """float16 with loss scaling, bfloat16 without (as RunOptions.loss_scaling)."""
    trainer = tiny_trainer(loss_scaling=mixed_precision.name == "float16")
    assert trainer.genA2B.compute_dtype == mixed_precision.name
    assert isinstance(trainer.g_optimizer, keras.optimizers.LossScaleOptimizer) == (
        mixed_precision.name == "float16")
    sums, _ = trainer.train_step(image_batches(1, batch=2)[0], 2)
    assert all(np.isfinite(float(v)) for v in sums.values())
    assert all(np.all(np.isfinite(v.numpy())) for v in trainer.genA2B.trainable_variables)


def test_trainer_argument_errors():
    with pytest.raises(ValueError, match=r"networks \['disLB'\] missing"):
        UGATITTrainer({k: v for k, v in tiny_networks().items() if k != "disLB"},
                      (SIZE, SIZE, 3), iterations=4)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        UGATITTrainer(tiny_networks(), (SIZE, SIZE, 3), iterations=0)
    with pytest.raises(ValueError, match="coupled_weight_decay"):
        TorchAdam(coupled_weight_decay=-1.0)

# ---------------------------------------------------------------------------------------------
# Training samples: the official 7-panel strips.


def test_jet_colormap_and_cam_heatmap():
    # clip(1.5 - |4x - c|) at x = 0 and 1: exact in float32 (x = 255 / 255 rounds to 1).
    np.testing.assert_allclose(jet_colormap([0, 255]), [[0, 0, 0.5], [0.5, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(jet_colormap([128]), [[0.5, 1, 0.5]], atol=1e-2)   # middle
    heatmap = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1) * [[[[1]]], [[[-3]]]]
    out = cam_heatmap(heatmap, 4).numpy()
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.uint8
    # Official cam(): x - min, / max, uint8(255 x), JET: min -> dark blue, max -> dark red.
    for i in range(2):
        x = heatmap[i, ..., 0] - heatmap[i].min()
        levels = np.uint8(255 * x / x.max())
        np.testing.assert_array_equal(out[i], np.uint8(np.rint(255 * jet_colormap(levels))))
    assert tuple(out[0, 0, 0]) == (0, 0, 128) and tuple(out[0, 3, 3]) == (128, 0, 0)
    assert tuple(out[1, 0, 0]) == (128, 0, 0)   # the second map decreases
    assert cam_heatmap(heatmap, 16).shape == (2, 16, 16, 3)
    assert np.all(cam_heatmap(np.ones((1, 4, 4, 1)), 8) == cam_heatmap(np.zeros((1, 4, 4, 1)), 8))


def test_translation_panels_and_strip_layout():
    nets = tiny_networks(fq=False)
    G, F = nets["genA2B"], nets["genB2A"]
    x = image_batches(1, batch=3)[0][0]
    panels = translation_panels(G, F, x)
    assert panels.shape == (3, 7, SIZE, SIZE, 3) and panels.dtype == np.uint8

    def u8(images):
        return np.uint8(np.clip(np.rint((images + 1) * 127.5), 0, 255))

    fake, _, fake_heatmap = (t.numpy() for t in G(x))
    identity, _, identity_heatmap = (t.numpy() for t in F(x))
    cycle, _, cycle_heatmap = (t.numpy() for t in F(fake))
    expected = [u8(x), cam_heatmap(identity_heatmap, SIZE).numpy(), u8(identity),
                cam_heatmap(fake_heatmap, SIZE).numpy(), u8(fake),
                cam_heatmap(cycle_heatmap, SIZE).numpy(), u8(cycle)]
    for k, panel in enumerate(expected):
        # uint8 levels: one where the panels' float (training=False calls) and this eager one
        # round to different sides of a .5 boundary.
        np.testing.assert_allclose(panels[:, k].astype(int), panel.astype(int), atol=1,
                                   err_msg=f"panel {k}")
    image = strip(panels)
    assert image.shape == (7 * SIZE, 3 * SIZE, 3)
    for j in range(3):
        for k in range(7):
            np.testing.assert_array_equal(image[k * SIZE:(k + 1) * SIZE, j * SIZE:(j + 1) * SIZE],
                                          panels[j, k])
