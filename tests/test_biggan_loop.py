"""training/biggan.py through run_training.py: presets, usage errors, a class-conditional
run on the built-in labelled shapes, exact resume. (A non-finite loss stops every family in
the one training loop: tests/test_training_loop.py.)"""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

import run_training
from datasets import synthetic
from training import biggan as biggan_family

from test_ugatit_loop import killed_copy


def parse(*args):
    fv = flags.FlagValues()
    run_training.define_flags(fv)
    fv(["run_training.py", "--model", "biggan", *args])
    return fv


def cli(capsys, *args):
    """run_training.py with these flags -> (exit code, stderr)."""
    code = run_training.run(["run_training.py"], parse(*args))
    return code, capsys.readouterr().err


def fake_dataset(resolution, label_size, num_images):
    info = types.SimpleNamespace(resolution=resolution, label_size=label_size,
                                 num_images=num_images)
    return types.SimpleNamespace(info=info)


# ---------------------------------------------------------------------------------------------
# Presets and options.

def test_cifar_presets_reproduce_the_official_launch_scripts():
    for config, K, commitment, decay in (("cifar10", 1024, 1.0, 0.8), ("cifar100", 64, 10.0, 0.9)):
        options = biggan_family.options_from_flags(parse("--config", config))
        biggan_family.resolve(options, fake_dataset(32, 10, 50000))
        s = options.settings()
        assert (options.batch, s.d_steps, s.accumulations) == (64, 4, 1)
        assert (s.g_learning_rate, s.d_learning_rate, s.betas, s.epsilon) == (
            2e-4, 2e-4, (0.0, 0.999), 1e-8)
        assert (s.ema_decay, s.ema_start, s.fq_alpha, s.fq_warmup_iterations) == (
            0.9999, 1000, 1.0, 0)
        # 500 epochs of 50k images, 256 images (4 D steps x 64) per iteration, last batch dropped.
        assert options.images_per_iteration == 256 and options.iterations == 500 * 195 == 97_500
        assert options.kimg == pytest.approx(97_500 * 0.256)
        assert options.fq_layers == (0, 1, 2, 3)
        assert options.fq_kwargs() == dict(num_embeddings=K, commitment_cost=commitment,
                                           decay=decay, forward="continuous")
        assert options.preset("sample_training") is True


def test_imagenet64_preset_reproduces_launch_i64_bs128x4():
    options = biggan_family.options_from_flags(parse("--config", "imagenet64"))
    biggan_family.resolve(options, fake_dataset(64, 1000, 1_281_167))
    s = options.settings()
    assert (options.batch, s.d_steps, s.accumulations) == (128, 1, 4)
    assert (s.g_learning_rate, s.d_learning_rate, s.epsilon, s.ema_start) == (
        1e-4, 4e-4, 1e-6, 20000)
    assert options.images_per_iteration == 512
    assert options.iterations == 100 * (1_281_167 // 512)
    assert options.fq_layers == (2,)
    assert options.fq_kwargs() == dict(num_embeddings=1024, commitment_cost=0.5, decay=0.7,
                                       forward="continuous")
    assert options.preset("sample_training") is False  # --G_eval_mode


def test_flags_override_presets_and_options_round_trip(tmp_path):
    options = biggan_family.options_from_flags(parse(
        "--config", "cifar10", "--lr", "1e-3", "--batch", "32", "--d-steps", "2",
        "--fq-layers", "1,3", "--fq-preset", "paper", "--fq-num-embeddings", "256",
        "--kimg", "64"))
    biggan_family.resolve(options, fake_dataset(32, 10, 50000))
    s = options.settings()
    assert (s.g_learning_rate, s.d_learning_rate, s.d_steps) == (1e-3, 1e-3, 2)
    assert options.iterations == 1000 and options.kimg == 64  # 64 kimg / (32 x 2) images
    assert options.fq_layers == (1, 3)
    assert options.fq_kwargs()["forward"] == "quantized"  # paper: quantised D forward
    assert options.fq_kwargs()["num_embeddings"] == 256
    assert s.fq_warmup_iterations == 250                   # paper: alpha ramps over a quarter
    baseline = biggan_family.options_from_flags(parse("--config", "cifar10", "--fq-layers", ""))
    assert baseline.fq_layers == ()
    options.save(str(tmp_path))
    loaded = biggan_family.BigGANOptions.load(str(tmp_path))
    assert loaded == options
    loaded.kimg = 128  # how run_training.py extends a resumed run
    assert loaded.iterations == 2000
    text = json.loads(open(tmp_path / "training_options.json").read())
    text["model"] = "stylegan2"
    with pytest.raises(ValueError, match="not a BigGAN one .run_training.py resumes it with --model stylegan2"):
        biggan_family.BigGANOptions.from_json(json.dumps(text))


def test_demo_networks_are_cpu_sized_and_named():
    options = biggan_family.BigGANOptions()
    biggan_family.resolve(options, fake_dataset(32, 5, 4096))
    G, D = biggan_family.build_networks(options)
    assert (G.name, D.name, G.num_classes, G.ch) == ("G", "D", 5, 4)
    count = lambda m: sum(int(np.prod(w.shape)) for w in m.trainable_weights)
    assert count(G) < 100_000 and count(D) < 50_000  # vs 4.3M / 4.2M at CIFAR size
    assert [f.num_embeddings for f in D.fq_layers] == [128] * 4
    assert options.settings().d_steps == 4  # the official schedule, only smaller networks


# ---------------------------------------------------------------------------------------------
# Usage errors: one line, exit code 2, nothing written.

def unlabelled_dataset(tmp_path):
    from datasets import prepare
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(synthetic.shapes(4, 32)[0]):
        Image.fromarray(image).save(images / f"{i}.png")
    out = tmp_path / "unlabelled"
    prepare.create_from_images(str(out), str(images), log=lambda *a, **k: None)
    return str(out)


def test_usage_errors_are_one_clear_line(tmp_path, capsys):
    out = str(tmp_path / "run")
    cases = [
        (("--config", "e"), "biggan presets are demo, cifar10, cifar100, imagenet64"),
        (("--dataset", unlabelled_dataset(tmp_path)), "has no labels, and BigGAN is "
                                                      "class-conditional"),
        (("--fq-layers", "0,7"), "--fq-layers 7: not a D block"),
        (("--fq-layers", "a,b"), "comma-separated D block indices"),
        (("--fq-layers", "0,0"), "--fq-layers '0,0' names a value twice."),
        (("--kimg", "1", "--iterations", "5"), "give one"),
        (("--resolution", "64"), "drop --resolution"),
        (("--dataset", str(tmp_path / "missing")), "--dataset:"),
        (("--metrics", "fid"), "only swd"),
    ]
    for args, message in cases:
        code, err = cli(capsys, *args, "--out", out)
        assert code == 2, args
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not os.path.exists(out)


# ---------------------------------------------------------------------------------------------
# Runs.

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(exit code, run folder) of a short demo run through run_training.py: 400 iterations of
    2 D steps at learning rate 4e-4, a tick (and with --snapshot-ticks 1 a checkpoint) after
    375 iterations (12 kimg of 32 images per iteration) and at the end: ckpt-375, ckpt-400."""
    out = str(tmp_path_factory.mktemp("biggan_demo") / "run")
    code = run_training.run(["run_training.py"], parse(
        "--iterations", "400", "--d-steps", "2", "--lr", "4e-4", "--metrics", "none",
        "--tick-kimg", "12", "--snapshot-ticks", "1", "--out", out))
    return code, out


def test_short_class_conditional_demo_run_generates_the_requested_classes(demo):
    """The statistic: `classify_shapes` (the class from the hue of the shape, 100% on real
    images) of 200 samples of the trained G, 40 per requested class, sampled as the demo preset
    samples (train mode). Chance is 1/5; 0.4 is more than 7 binomial standard deviations above
    it (sqrt(0.2 * 0.8 / 200) = 0.028).

    The demo preset with 2 D steps per G step instead of 4 (half the compiled iteration, which
    is traced once per run) and G and D learning rates 4e-4 instead of 2e-4. G, not G_ema: the
    preset's G_ema copies G until iteration 200 and then averages it with decay 0.999, so at
    400 it is still 82% G at iteration 200 (its averaging is test_biggan_trainer's). Why 400
    iterations: G's class match is a snapshot of a GAN still settling, and at 200 it ranged
    from 0.30 to 0.98 over seeds and float paths (seed 0 with oneDNN off on an AVX-512 Intel
    Xeon: 0.30, then 0.44 at 250 and 0.42 at 300 as the classes moved between the samples),
    while at 400 it was 0.94 to 1.0 for seeds 0-3 with oneDNN on and off (Intel Xeon family 6
    model 167, 2026-12-07)."""
    code, out = demo
    assert code == 0
    for name in ("training_options.json", "log.jsonl", "summary.json", "checkpoints"):
        assert os.path.exists(os.path.join(out, name)), name
    assert any(n.startswith("fakes") and n.endswith(".png") for n in os.listdir(out))
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert all(np.isfinite(entry["d_loss"]) for entry in log if "d_loss" in entry)
    assert any("fq/fq0/perplexity" in entry for entry in log)
    start = log[0]["start"]   # the start record; and the grid of reals beside fakes_init.png
    assert start["data"] == {"source": "synthetic:shapes", "images": 4096, "resolution": 32}
    assert start["parameters"]["G"] > 0 and start["parameters"]["D"] > 0
    reals = np.asarray(Image.open(os.path.join(out, "reals.png")).convert("RGB"))
    assert reals.shape == np.asarray(Image.open(os.path.join(out, "fakes_init.png"))).shape
    # reals.png in the fakes' layout, one class per column (5 columns of 32x32 cells, shown 4x).
    cells = reals[::4, ::4].reshape(-1, 32, 5, 32, 3).transpose(0, 2, 1, 3, 4)
    classes = synthetic.classify_shapes(cells.reshape(-1, 32, 32, 3)).reshape(-1, 5)
    np.testing.assert_array_equal(classes, np.tile(np.arange(5), (len(classes), 1)))

    options, nets = biggan_family.load_networks(out, which=("G",))
    assert options.iterations == 400 and options.num_d_steps == 2 and options.num_classes == 5
    rng = np.random.RandomState(1)
    labels = np.arange(200) % 5
    z = rng.randn(200, nets["G"].dim_z).astype(np.float32)
    images = np.concatenate([
        nets["G"](z[i:i + 50], labels[i:i + 50], training=options.preset("sample_training"))
        .numpy() for i in range(0, 200, 50)])
    accuracy = float(np.mean(synthetic.classify_shapes(images) == labels))
    print(f"class match {accuracy:.3f} (chance 0.2)")
    assert accuracy >= 0.4


def test_training_exports_its_g_ema_at_the_end(demo):
    """The chief exports the finished run's G_ema as a SavedModel into <run>/export
    (export/biggan.py, with the default standing statistics; its SavedModels are
    tests/test_export_biggan.py's)."""
    import export
    code, out = demo
    assert code == 0
    with open(os.path.join(out, "summary.json")) as f:
        path = json.load(f)["export"]
    assert path == os.path.join(out, "export")
    meta = export.load_generator(path).metadata
    assert (meta["family"], meta["c_dim"], meta["num_classes"], meta["z_dim"]) == (
        "biggan", 5, 5, 128)
    assert (meta["resolution"], meta["sample_mode"], meta["truncation_kind"]) == (
        32, "eval", "z_scale")
    assert (meta["iterations"], meta["config"], meta["source"]) == (
        400, "demo", f"{out} ({os.path.join(out, 'checkpoints', 'ckpt-400')})")
    assert meta["kimg"] == pytest.approx(12.8)  # 400 iterations x 2 D steps x 16 images
    assert meta["standing_statistics"] == {"accumulations": 16, "batch": 64, "seed": 0}


def checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "OBJECT_GRAPH" not in k and "save_counter" not in k}


def test_stop_and_resume_equals_an_uninterrupted_run(demo, tmp_path, capsys):
    """The folder the demo run leaves when killed after its checkpoint at 375 of 400
    iterations, resumed through run_training.py: every checkpointed variable at 400 (networks,
    G_ema, optimizers, FQ dictionaries, counter, RNG state) is bit-identical to the
    uninterrupted run's."""
    code, whole = demo
    assert code == 0
    summary = json.load(open(os.path.join(whole, "summary.json")))
    assert summary["iterations"] == 400 and summary["kimg"] == pytest.approx(12.8)

    part = str(tmp_path / "part")
    os.makedirs(part)
    assert killed_copy(whole, part, 375) == os.path.join(part, "checkpoints", "ckpt-375")
    # Continue through the command line, as a user would: the run keeps its saved options,
    # its model included (no --model).
    fv = flags.FlagValues()
    run_training.define_flags(fv)
    fv(["run_training.py", "--out", part, "--resume"])
    code, err = run_training.run(["run_training.py"], fv), capsys.readouterr().err
    assert code == 0, err
    final = json.load(open(os.path.join(part, "summary.json")))
    assert final["iterations"] == 400 and final["checkpoint"].endswith("ckpt-400")
    assert final["export"] == os.path.join(part, "export")   # exported when it finished
    # The resumed run trained iterations 376..400 only (its one tick is the last).
    logged = [json.loads(line) for line in open(os.path.join(part, "log.jsonl"))]
    assert [e["progress/iteration"] for e in logged if "progress/iteration" in e] == [400]

    assert final["state_fingerprint"] == summary["state_fingerprint"]   # every variable
    want = checkpoint_values(summary["checkpoint"])
    got = checkpoint_values(final["checkpoint"])
    assert sorted(got) == sorted(want) and len(want) > 300
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_a_batch_the_replicas_cannot_split_is_one_line(capsys, tmp_path, monkeypatch,
                                                       two_replica_strategy):
    from training import distribute
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: two_replica_strategy)
    code, err = cli(capsys, "--batch", "5", "--out", str(tmp_path / "run"))
    assert code == 2 and err.strip().splitlines() == [
        "run_training.py: error: --batch 5 is not divisible by the 2 replicas; use a multiple "
        "of 2."]
    assert not os.path.exists(tmp_path / "run")   # created by this command, removed again
