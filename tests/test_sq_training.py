"""SQ-GAN in the StyleGAN2 generator, trainer, loop and CLI (style quantization of w).

The layer itself (nearest code, straight-through, VQ and uniformity losses, CBI's Sinkhorn) is
tested against numpy in test_style_quantization.py and test_codebook_init.py; here: where it
sits in G, what the trainer adds to the G and D losses, replicas and mixed precision against one
float32 device, checkpoints, codebook initialisation and a short limited-data run.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

import run_training
from networks import stylegan2
from training.checkpoints import Checkpoints
from training import stylegan as stylegan_family
from training.stylegan import TrainingOptions, training_loop
from training.schedule import ProgressiveSchedule
from training.trainer import GANTrainer, LossSettings, SQSettings

from test_trainer import assert_same_state, local_values, use_sgd
from test_trainer import run_iterations as run_phases
from test_training_loop import run_cli

RES = 16
WIDTHS = dict(fmap_base=64, fmap_max=16)
W_DIM = 8
# Lazy intervals of 2: the first iteration runs Gmain, Greg, Dmain and Dreg.
FAST_LAZY = LossSettings("logistic", r1_gamma=1.0, r1_interval=2, pl_weight=2.0, pl_interval=2,
                         style_mixing_prob=0.9)


def tiny_networks(sq_num_codes=16, mbstd=1, seed=0, **sq_kwargs):
    keras.utils.set_random_seed(seed)
    G = stylegan2.Generator(z_dim=8, w_dim=W_DIM, resolution=RES, mapping_layers=2, seed=seed,
                            sq_num_codes=sq_num_codes, name="G", **sq_kwargs, **WIDTHS)
    D = stylegan2.Discriminator(resolution=RES, fq_blocks=(8,), fq_num_embeddings=8,
                                mbstd_num_features=mbstd, name="D", **WIDTHS)
    return G, D


def make_trainer(G, D, sq=SQSettings(), loss=FAST_LAZY, learning_rate=0.01,
                 loss_scaling=False):
    return GANTrainer(G, D, loss, ProgressiveSchedule(RES, RES), learning_rate=learning_rate,
                      sq=sq, loss_scaling=loss_scaling, seed=0)


def batch_of_reals(batch=8, seed=0):
    rng = np.random.RandomState(seed)
    return np.tanh(rng.randn(batch, RES, RES, 3)).astype(np.float32), \
        np.zeros((batch, 0), np.float32)


def numpy_quantize(w, codebook):
    """Hyperspherical SQ in numpy: unit sub-vectors snap to the nearest unit codebook entry."""
    d = codebook.shape[1]
    z = w.reshape(-1, d).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    c = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
    return c[np.argmax(z @ c.T, axis=1)].reshape(w.shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The generator.

def test_generator_quantises_the_truncated_w_before_synthesis():
    G, _ = tiny_networks(sq_num_codes=32)
    G.dlatent_avg.assign(np.random.RandomState(1).randn(W_DIM).astype(np.float32))
    z = tf.constant(np.random.RandomState(2).randn(5, 8).astype(np.float32))
    codebook = G.sq.codebook.numpy()
    for psi in (1.0, 0.6):
        w = G.truncate(G.mapping(z), psi).numpy()  # continuous W, per layer
        expected = G.synthesis(numpy_quantize(w, codebook), noise_mode="const").numpy()
        # Codes normalised in float32 vs numpy's float64, then ~20 layers: a few ulps of images
        # |x| <= 4 (ulp 4.8e-7; measured 1.7e-6), so 1e-5 (20 ulps).
        np.testing.assert_allclose(G(z, truncation_psi=psi).numpy(), expected, rtol=0, atol=1e-5)
        unquantised = G.synthesis(w, noise_mode="const").numpy()
        assert np.abs(unquantised - expected).max() > 1e-3  # the codebook really applies


def test_generator_config_round_trip_and_sq_off_is_unchanged():
    G, _ = tiny_networks(sq_num_codes=32, sq_code_dim=2, sq_hyperspherical=False,
                         sq_commitment_cost=0.5, sq_uniformity_temperature=3.0)
    copy = stylegan2.Generator.from_config(G.get_config())
    assert (copy.sq.num_codes, copy.sq.code_dim, copy.sq.hyperspherical,
            copy.sq.commitment_cost, copy.sq.uniformity_temperature) == (32, 2, False, 0.5, 3.0)
    assert [v.path.split("/", 1)[1] for v in copy.variables] == \
        [v.path.split("/", 1)[1] for v in G.variables]
    plain, _ = tiny_networks(sq_num_codes=0)
    assert plain.sq is None
    assert len(plain.variables) == len(G.variables) - 2  # codebook, usage_counts
    assert not any("sq" in v.path for v in plain.variables)


def test_generator_rejects_a_code_dim_that_does_not_divide_w_dim():
    with pytest.raises(ValueError, match="sq_code_dim 3 does not divide w_dim 8"):
        tiny_networks(sq_code_dim=3)


# ---------------------------------------------------------------------------------------------
# The trainer.

def test_g_step_adds_the_sq_loss_counts_w_codes_and_learns_the_codebook():
    """g_sq_loss = weight * (L_sq(w) + L_sq(w2) + L_uf), computed before the update, is linear
    in the weight; usage counts every sub-vector of w once per iteration (not w2, not Greg or
    D); the codebook moves and Gs averages it like any weight (usage counts copied)."""
    reals = batch_of_reals()
    values = {}
    for weight in (0.01, 0.03):
        G, D = tiny_networks()
        trainer = make_trainer(G, D, SQSettings(weight=weight), learning_rate=0.05)
        before = G.sq.codebook.numpy().copy()
        sums, _ = trainer.train_step(reals, RES, 8, run_g_reg=True, run_d_reg=True)
        values[weight] = float(sums["g_sq_loss"])
        assert float(tf.reduce_sum(G.sq.usage_counts)) == 8 * W_DIM // 4
    np.testing.assert_allclose(values[0.03], 3 * values[0.01], rtol=1e-5)
    after = G.sq.codebook.numpy()
    assert np.abs(after - before).max() > 1e-2
    trainer.finish_step(8)
    beta = 0.5 ** (8 / (trainer.loss_settings.g_ema_kimg * 1000.0))
    # Both sides round g + (gs - g) * beta twice in float32 (<= 2 ulps = 2.4e-7 |v|) with beta
    # rounded to float32: rtol 1e-6 (8 ulps), atol 1e-7 for entries near 0.
    np.testing.assert_allclose(trainer.Gs.sq.codebook.numpy(), after + (before - after) * beta,
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(trainer.Gs.sq.usage_counts.numpy(), G.sq.usage_counts.numpy())
    G, D = tiny_networks(sq_num_codes=0)
    sums, _ = make_trainer(G, D).train_step(reals, RES, 8)
    assert "g_sq_loss" not in sums and "d_sq_cr_loss" not in sums


def test_consistency_term_is_zero_without_perturbation_and_its_gradient_reaches_d_only():
    reals, _ = batch_of_reals()
    for sigma in (0.0, 0.5):
        G, D = tiny_networks()
        trainer = make_trainer(G, D, SQSettings(cr_weight=1.0, cr_sigma=sigma))
        with tf.GradientTape(persistent=True) as tape:
            _, terms, _, _ = trainer.discriminator_loss(reals, None, None, RES, 8)
            cr = terms["d_sq_cr_loss"]
        g_grads = tape.gradient(cr, G.trainable_variables)
        d_grads = tape.gradient(cr, D.trainable_variables)
        assert all(g is None for g in g_grads)
        if sigma == 0:
            # x' = G(z + 0 * eps) with x's noise and mixing: the very same image.
            assert float(cr) == 0.0
        else:
            assert float(cr) > 0
            norms = [float(tf.norm(g)) for g in d_grads if g is not None]
            assert norms and max(norms) > 0


def test_perturbed_image_shares_noise_and_mixing_with_the_fake():
    """sigma = 0: x' is x bit for bit, although both draw random noise and mixing runs (the
    noise RNG is replayed for x'); the RNG then stands where a single synthesis leaves it."""
    z = tf.constant(np.random.RandomState(3).randn(4, 8).astype(np.float32))
    G, D = tiny_networks()
    G.synthesis.b8.conv1.noise.strength.assign(1.0)  # noise matters
    trainer = make_trainer(G, D, SQSettings(cr_sigma=0.0))
    fakes, _, _, perturbed = trainer.generate(z, None, None, RES, perturbed=True)
    np.testing.assert_array_equal(perturbed.numpy(), fakes.numpy())
    after_pair = G.synthesis.seed_generator.state.numpy()
    again, _, _, _ = trainer.generate(z, None, None, RES)
    assert np.abs(again.numpy() - fakes.numpy()).max() > 1e-3  # fresh noise and mixing
    G2, D2 = tiny_networks()
    make_trainer(G2, D2).generate(z, None, None, RES)
    np.testing.assert_array_equal(after_pair, G2.synthesis.seed_generator.state.numpy())
    trainer = make_trainer(*tiny_networks(), SQSettings(cr_sigma=0.1))
    fakes, _, _, perturbed = trainer.generate(z, None, None, RES, perturbed=True)
    assert np.abs(perturbed.numpy() - fakes.numpy()).max() > 1e-4


def test_perturbed_features_never_update_the_fq_dictionary():
    G, D = tiny_networks()
    trainer = make_trainer(G, D, SQSettings(cr_weight=1.0))
    rows = []
    original = D.fq_layers[0].update_dictionary

    def recording(features, indices):
        rows.append([int(batch.shape[0]) for batch in features])  # static at trace time
        return original(features, indices)

    D.fq_layers[0].update_dictionary = recording
    trainer.train_step(batch_of_reals(), RES, 8)
    positions = (D.fq_blocks[0] // 2) ** 2   # feature vectors per image at the FQ block
    assert rows == [[8 * positions, 8 * positions]]  # reals and fakes, not x'


def run_iterations(strategy, trainer, batches, global_batch):
    """One iteration with all four phases per batch, run eagerly as test_trainer's are (the
    loop's compiled steps run in the loop tests below)."""
    run_phases(strategy, trainer, batches, global_batch, phases=[(True, True)] * len(batches),
               resolution=RES)


SQ_ALL_TERMS = SQSettings(weight=0.5, cr_weight=1.0, cr_sigma=0.5)  # large: they matter


def test_two_replicas_equal_one_device_for_the_codebook(two_replica_strategy):
    """Global batch 8, one iteration (all four phases, CR and mixing on) with SGD: codebook,
    usage counts, G, Gs and D after 2 replicas x 4 equal 1 device x 8 up to float32 rounding
    (assert_same_state); every replica holds the same values.
    Minibatch stddev off (per replica by design).

    One iteration: the float32 bound holds while both runs make the same discrete choices
    (activation kinks, nearest codes, with states that differ by rounding). A second
    iteration crossed one (Eigen path, 2026-12-03): its G step, which has no cross-replica
    term, changed one noise strength 2% differently from states equal to 2e-6 of an update."""
    batches = [batch_of_reals()]
    G, D = tiny_networks(mbstd=0)
    single = make_trainer(G, D, SQ_ALL_TERMS)
    use_sgd(single)
    initial = {name: [w.numpy() for w in net.weights] for name, net in
               (("G", G), ("Gs", single.Gs), ("D", D))}
    initial_codebook = G.sq.codebook.numpy().copy()
    run_iterations(tf.distribute.get_strategy(), single, batches, 8)

    strategy = two_replica_strategy
    with strategy.scope():
        G2, D2 = tiny_networks(mbstd=0)
        for w, value in zip(G2.weights + D2.weights, initial["G"] + initial["D"]):
            w.assign(value)
        mirrored = make_trainer(G2, D2, SQ_ALL_TERMS)
        use_sgd(mirrored)
    run_iterations(strategy, mirrored, batches, 8)

    assert np.abs(G.sq.codebook.numpy() - initial_codebook).max() > 1e-3
    assert_same_state(local_values(G2.sq.codebook, strategy), G.sq.codebook.numpy(),
                      initial_codebook, steps=1, err_msg="codebook")
    np.testing.assert_array_equal(local_values(G2.sq.usage_counts, strategy),
                                  G.sq.usage_counts.numpy())
    assert G.sq.usage_counts.numpy().sum() == 8 * W_DIM // 4
    g_values = [w.numpy() for w in G.weights]
    for name, a, b in (("G", G, G2), ("Gs", single.Gs, mirrored.Gs), ("D", D, D2)):
        for i, (wa, wb) in enumerate(zip(a.weights, b.weights)):
            # Gs's EMA G + (Gs - G) * beta rounds at G's magnitude.
            scale = max(np.abs(wa.numpy()).max(), np.abs(g_values[i]).max() if name == "Gs" else 0)
            assert_same_state(local_values(wb, strategy), wa.numpy(), initial[name][i], steps=1,
                              scale=scale, err_msg=f"{name} {wa.path}")


# R1 in every D step, no path length: in float16 the path-length gradients overflow the initial
# loss scale 2^15 and LossScaleOptimizer skips those G steps by design (measured: scale 32768 ->
# 8192 in two iterations), so the runs would differ by the skipped steps, not by SQ.
NO_PATH_LENGTH = LossSettings("logistic", r1_gamma=1.0, style_mixing_prob=0.9)


def test_mixed_precision_equals_float32_for_the_codebook(mixed_float16):
    """mixed_float16 (loss scaling, float16 synthesis and D, CR on) vs float32 from the same
    weights: after two iterations the float32 codebook agrees to 1e-5 of its scale (measured
    7e-7 absolute) and the usage counts are identical."""
    batches = [batch_of_reals(seed=s) for s in range(2)]
    G16, D16 = tiny_networks()
    half = make_trainer(G16, D16, SQ_ALL_TERMS, NO_PATH_LENGTH, loss_scaling=True)
    assert G16.synthesis.b16.conv1.compute_dtype == "float16"
    keras.mixed_precision.set_global_policy("float32")
    G32, D32 = tiny_networks()
    for dst, src in zip(G32.weights + D32.weights, G16.weights + D16.weights):
        dst.assign(src)
    full = make_trainer(G32, D32, SQ_ALL_TERMS, NO_PATH_LENGTH)
    initial = G32.sq.codebook.numpy().copy()
    run_iterations(tf.distribute.get_strategy(), full, batches, 8)
    run_iterations(tf.distribute.get_strategy(), half, batches, 8)
    codebook = G32.sq.codebook.numpy()
    assert np.abs(codebook - initial).max() > 1e-2
    assert float(half.g_optimizer.dynamic_scale) == 2.0 ** 15  # no step was skipped
    assert G16.sq.codebook.dtype == "float32" and np.isfinite(G16.sq.codebook.numpy()).all()
    # Mapping and SQ terms are float32 in both runs: float16 (synthesis, D) reaches the codebook
    # only via iteration 1's mapping update, shifting w in iteration 2: measured 7e-7, |c| <= 2.35.
    np.testing.assert_allclose(G16.sq.codebook.numpy(), codebook, rtol=0,
                               atol=1e-5 * np.abs(codebook).max())
    np.testing.assert_array_equal(G16.sq.usage_counts.numpy(), G32.sq.usage_counts.numpy())


def test_checkpoint_holds_the_codebook_of_g_and_gs(tmp_path):
    G, D = tiny_networks()
    trainer = make_trainer(G, D)
    rng = np.random.RandomState(5)
    for layer in (G.sq, trainer.Gs.sq):
        layer.codebook.assign(rng.randn(*layer.codebook.shape).astype(np.float32))
        layer.usage_counts.assign(rng.randint(0, 9, layer.usage_counts.shape).astype(np.float32))
    state = trainer.checkpoint_state()
    keys = [k for k in state if k.endswith(("sq/codebook", "sq/usage_counts"))]
    assert sorted(k.split(":")[0] for k in keys) == ["G", "G", "Gs", "Gs"]
    path = Checkpoints(state, str(tmp_path)).save(8)
    G2, D2 = tiny_networks(seed=4)
    fresh = make_trainer(G2, D2)
    Checkpoints(fresh.checkpoint_state(), str(tmp_path)).restore(path)
    for a, b in ((G, G2), (trainer.Gs, fresh.Gs)):
        np.testing.assert_array_equal(b.sq.codebook.numpy(), a.sq.codebook.numpy())
        np.testing.assert_array_equal(b.sq.usage_counts.numpy(), a.sq.usage_counts.numpy())

# ---------------------------------------------------------------------------------------------
# The loop and the CLI.


def quiet(*args):
    pass


def loop_options(**overrides):
    values = dict(model="stylegan2", dataset="shapes", resolution=8, kimg=0.048, batch=8,
                  tick_kimg=0.016, snapshot_ticks=1, metrics=(), fq_blocks=(8,), sq=True,
                  sq_codebook=64, num_images=64)
    values.update(overrides)
    return TrainingOptions(**values)


def log_entries(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]


def test_cbi_initialises_new_runs_only(tmp_path, monkeypatch):
    """CBI runs before the first step of a new run (its transport cost falls; the first sample
    grid and Gs already use the CBI codebook); a resumed run takes the codebook from its
    checkpoint and does not run CBI again. Usage statistics are logged every tick."""
    from fq_keras import codebook_init
    features = np.random.RandomState(0).randn(64, 6).astype(np.float32)
    np.save(str(tmp_path / "features.npy"), features)
    calls = []
    original = codebook_init.initialize_codebook

    def recording(layer, *args, **kwargs):
        calls.append(layer.codebook.numpy().copy())
        result = original(layer, *args, **kwargs)
        calls.append(layer.codebook.numpy().copy())
        return result

    monkeypatch.setattr(codebook_init, "initialize_codebook", recording)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    # One step of 16 images per run (the resumed run's step is a new compiled step anyway).
    options = loop_options(sq_cbi_features=str(tmp_path / "features.npy"), sq_cbi_steps=20,
                           sq_cbi_lr=0.01, kimg=0.016, batch=16)
    training_loop(options, run_dir, log=quiet)
    assert len(calls) == 2 and np.abs(calls[1] - calls[0]).max() > 1e-3
    first = next(e for e in log_entries(run_dir) if "start" not in e)   # after the start record
    assert first["kimg"] == 0.0
    assert first["sq/cbi_transport_cost_final"] < first["sq/cbi_transport_cost_initial"]

    options.kimg = 0.032
    summary = training_loop(options, run_dir, resume=True, log=quiet)
    assert len(calls) == 2  # not again on resume
    assert summary["kimg"] == 0.032
    ticks = [e for e in log_entries(run_dir) if "sq/perplexity" in e]
    assert [e["kimg"] for e in ticks] == [0.016, 0.032]
    for entry in ticks:
        # 256 vectors per tick (1 step x 16 images x 16 sub-vectors of w_dim 64), K = 64.
        assert 8.0 < entry["sq/perplexity"] <= 64 and 0 <= entry["sq/dead_codes"] < 32
        assert entry["sq/uniformity"] < 0 and "g_sq_loss" in entry and "d_sq_cr_loss" in entry


# Measured with these settings: codebook perplexity 340-370 of K = 1024 at every tick (4096
# vectors each), SWD falling to 34% of its value at initialisation (oneDNN off and on).
PERPLEXITY_FLOOR = 200.0


def test_a_short_limited_data_run_learns_and_keeps_its_codebook_alive(tmp_path):
    """The training loop's learning test (StyleGAN2 with FQ in D through `training_loop`, as
    the README's demo, with SQ on top): 500 images of the built-in shapes at 16x16, SQ
    (K = 1024, code dim 4, w_dim 64: 16 sub-vectors per w) with CR and FQ in D: SWD (x1e3) of Gs samples falls by at least 30% in
    0.512 kimg (64 steps of 8; SWD at kimg 0 and at the snapshot ending the second tick), and the
    codebook perplexity of every tick stays above PERPLEXITY_FLOOR (a collapse onto a few entries
    would give a perplexity near 1; K = 1024 is the upper bound)."""
    run_dir = str(tmp_path)
    summary = training_loop(loop_options(resolution=16, fq_blocks=(16,), kimg=0.512, batch=8,
                                         tick_kimg=0.256, snapshot_ticks=2, metrics=("swd",),
                                         sq_codebook=1024, num_images=500), run_dir, log=quiet)
    summary = run_training.export_finished_run(run_dir, summary)   # as run_training.py does
    entries = log_entries(run_dir)
    key = "metrics/swd_256/SWDx1e3_avg"   # the training-time SWD, on 256 images
    swd = [(e["kimg"], e[key]) for e in entries if key in e]
    assert swd[0][0] == 0.0 and swd[-1][0] == 0.512
    assert swd[-1][1] < 0.7 * swd[0][1], swd
    perplexities = [e["sq/perplexity"] for e in entries if "sq/perplexity" in e]
    assert len(perplexities) == 2 and min(perplexities) > PERPLEXITY_FLOOR, perplexities
    meta = json.loads(tf.saved_model.load(summary["export"]).metadata.numpy())
    assert meta["style_quantization"] == {"num_codes": 1024, "code_dim": 4,
                                          "hyperspherical": True}




@pytest.mark.parametrize("argv, message", [
    (["--sq", "--sq-dim", "5"], "--sq-dim 5 does not divide w_dim 64 (--config demo); choose "
                                "one of 2,4,8,16"),
    (["--sq", "--model", "stylegan"], "--sq: style quantization is implemented for --model "
                                      "stylegan2, not stylegan"),
    (["--sq-codebook", "64"], "--sq-codebook given without --sq"),
    (["--sq", "--sq-codebook", "1"], "--sq-codebook must be >= 2"),
    (["--sq", "--sq-cr-sigma", "-1"], "--sq-cr-sigma must be >= 0"),
    (["--sq", "--sq-cbi-features", "/no/such.npy"], "--sq-cbi-features: CBI: image-feature "
                                                    "file '/no/such.npy' does not exist"),
    (["--num-images", "-1"], "--num-images must be >= 0"),
])
def test_cli_usage_errors_are_one_line(argv, message, capsys, tmp_path):
    assert run_cli(argv + ["--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_training.py: error: ")
    assert message in err[0]
    assert not os.path.exists(tmp_path / "run")  # nothing written


def test_cli_bad_feature_array_is_a_usage_error(capsys, tmp_path):
    np.save(str(tmp_path / "f.npy"), np.zeros((5,), np.float32))
    assert run_cli(["--sq", "--sq-cbi-features", str(tmp_path / "f.npy")]) == 2
    assert "must be a 2-D array (num_images, feature_dim)" in capsys.readouterr().err


def test_cli_flags_reach_the_options():
    fv = flags.FlagValues()
    run_training.define_flags(fv)
    fv(["run_training.py", "--sq", "--sq-dim", "8", "--sq-codebook", "256",
        "--nosq-hyperspherical", "--sq-cr-weight", "0", "--num-images", "1000", "--mirror"])
    options = stylegan_family.options_from_flags(fv)
    assert (options.sq, options.sq_dim, options.sq_codebook, options.sq_hyperspherical,
            options.sq_cr_weight, options.num_images) == (True, 8, 256, False, 0.0, 1000)
    assert options.sq_layer_kwargs()["sq_num_codes"] == 256
    assert TrainingOptions.from_json(options.to_json()) == options
