"""U-GAT-IT runs: exact resume, learning on the built-in pair, outputs, CLIs, data stream.

One module fixture trains the tiny configuration (a compiled U-GAT-IT step takes long to
trace, so every training_loop call costs a trace): straight through 80 iterations, then the
folder a run killed after its checkpoint at 60 leaves (options + that checkpoint, cut from the
straight run) is resumed through run_training.py. The tests read those runs.
"""

import glob
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

import run_training
import run_translation
from datasets import open_unpaired, synthetic
from datasets.errors import DatasetError
from training.checkpoints import init_from, latest_checkpoint
from training.ugatit import Options, build_networks, load_networks, open_pair, training_loop
from training.ugatit_trainer import UGATITTrainer

# 16x16 built-in pair: global D 4 layers (FQ after convs 1, 2), local D 4 layers; ticks every
# 10 iterations, snapshots every 20.
TINY = dict(img_size=16, ngf=8, ndf=8, n_blocks=1, light=True, batch=4, iterations=80,
            learning_rate=2e-3, fq_layers=(1, 2), tick_kimg=0.04, snapshot_ticks=2,
            synthetic_images=256, sample_images=2)


def quiet(*args):
    pass


def run_cli(module, argv):
    fv = flags.FlagValues()
    module.define_flags(fv)
    fv([module.__name__ + ".py"] + argv)
    return module.run([module.__name__ + ".py"], fv)


def checkpoint_values(run_dir):
    reader = tf.train.load_checkpoint(latest_checkpoint(run_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("state/")}


def mean_intensity(images):
    """The documented statistic (datasets.synthetic.MEAN_INTENSITY): mean pixel value in [0, 1]."""
    return float(np.mean((np.asarray(images) + 1.0) / 2.0))


def killed_copy(run_dir, out, iteration):
    """What a run killed right after its checkpoint at `iteration` leaves in its folder for
    --resume: training_options.json and that checkpoint, the latest."""
    source, target = os.path.join(run_dir, "checkpoints"), os.path.join(out, "checkpoints")
    os.makedirs(target)
    shutil.copy(os.path.join(run_dir, "training_options.json"), out)
    files = glob.glob(os.path.join(source, f"ckpt-{iteration}.*"))
    assert files, f"no checkpoint at {iteration} in {source}"
    for path in files:
        shutil.copy(path, target)
    with open(os.path.join(target, "checkpoint"), "w") as f:   # tf.train.CheckpointManager's
        f.write(f'model_checkpoint_path: "ckpt-{iteration}"\n'
                f'all_model_checkpoint_paths: "ckpt-{iteration}"\n')
    return latest_checkpoint(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ugatit_runs")
    straight, stopped = str(root / "straight"), str(root / "stopped")
    os.makedirs(straight), os.makedirs(stopped)
    # Both runs with op determinism on, as `run_training.py --deterministic` sets it.
    from tensorflow.python.framework import config as tf_config
    tf.config.experimental.enable_op_determinism()
    try:
        summary = run_training.export_finished_run(   # as run_training.py does
            straight, training_loop(Options(**TINY), straight, log=quiet))
        stopped_at = killed_copy(straight, stopped, 60)
        assert run_cli(run_training, ["--out", stopped, "--resume",   # no --model: kept
                                      "--deterministic"]) == 0
    finally:
        tf_config.disable_op_determinism()
    return dict(root=root, straight=straight, stopped=stopped, summary=summary,
                stopped_at=stopped_at)


def test_resume_equals_an_uninterrupted_run(runs):
    """Killed after its checkpoint at 60 of 80 iterations (in the second half, where the
    learning rate decays with the restored counter) and resumed through run_training.py
    --resume --deterministic (op determinism on for both runs): networks (spectral-norm
    vectors, FQ dictionaries), optimisers and counter are bit-identical to the straight run's."""
    assert runs["stopped_at"] == os.path.join(runs["stopped"], "checkpoints", "ckpt-60")
    # The resumed run trained iterations 61..80 only: its ticks (every 10) are 70 and 80.
    logged = [json.loads(line) for line in open(os.path.join(runs["stopped"], "log.jsonl"))]
    assert [e["progress/iteration"] for e in logged if "progress/iteration" in e] == [70, 80]
    assert latest_checkpoint(runs["straight"]).endswith("ckpt-80")
    assert latest_checkpoint(runs["stopped"]).endswith("ckpt-80")
    a, b = checkpoint_values(runs["straight"]), checkpoint_values(runs["stopped"])
    assert sorted(a) == sorted(b) and len(a) > 300
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    with open(os.path.join(runs["stopped"], "summary.json")) as f:
        resumed = json.load(f)
    assert resumed["state_fingerprint"] == runs["summary"]["state_fingerprint"]
    assert resumed["iterations"] == 80 and resumed["kimg"] == pytest.approx(0.32)


def test_short_run_lowers_cycle_and_identity_and_translates_toward_b(runs):
    """80 iterations on the built-in shapes2cartoon pair: cycle and identity L1 fall, and
    genA2B moves test A images toward domain B by mean intensity (A ~0.43, B ~0.68): it closes
    most of the gap, where the untrained generator does not."""
    logged = [json.loads(line) for line in open(os.path.join(runs["straight"], "log.jsonl"))]
    losses = [entry for entry in logged if "g_cycle_loss" in entry]
    assert len(losses) == 8
    for key in ("g_cycle_loss", "g_identity_loss"):
        first = np.mean([e[key] for e in losses[:2]])
        last = np.mean([e[key] for e in losses[-2:]])
        assert last < 0.92 * first, (key, first, last)

    options, nets = load_networks(runs["straight"])
    pair = open_pair(options)
    test_a = np.concatenate([x.numpy() for x in pair.test_pipeline("A", 16, 32)])
    test_b = np.concatenate([x.numpy() for x in pair.test_pipeline("B", 16, 32)])
    m_a, m_b = mean_intensity(test_a), mean_intensity(test_b)
    assert m_a == pytest.approx(synthetic.MEAN_INTENSITY["A"], abs=0.05)
    assert m_b == pytest.approx(synthetic.MEAN_INTENSITY["B"], abs=0.05)

    def gap_closed(generator):
        return (mean_intensity(generator(test_a)[0].numpy()) - m_a) / (m_b - m_a)

    keras.utils.set_random_seed(options.seed)
    untrained = build_networks(options)["genA2B"]
    assert gap_closed(untrained) < 0.5
    assert gap_closed(nets["genA2B"]) > 0.7


def test_run_folder_outputs(runs):
    run_dir = runs["straight"]
    names = set(os.listdir(run_dir))
    assert {"checkpoints", "tensorboard", "log.jsonl", "training_options.json",
            "summary.json"} <= names
    # Official 7-panel strips: 2 train + 2 test images per domain as columns.
    for direction in ("A2B", "B2A"):
        strips = sorted(glob.glob(os.path.join(run_dir, f"fakes-{direction}-*.png")))
        assert [os.path.basename(s) for s in strips] == [
            f"fakes-{direction}-{i:07d}.png" for i in (20, 40, 60, 80)]
        image = np.asarray(Image.open(strips[-1]))
        assert image.shape == (7 * 16, 4 * 16, 3)
        # Row 0 is the real images: the training images resized, in file order.
        pair = open_pair(Options.load(run_dir))
        reals = next(iter(pair.train_pipeline(16, 2, flip=False, augment_size=16,
                                              shuffle=False, repeat=False)))
        first = reals[0 if direction == "A2B" else 1].numpy()[0]
        # uint8 levels: one level for the strip's rint of floats that differ by rounding.
        np.testing.assert_allclose(image[:16, :16].astype(int),
                                   np.rint((first + 1) * 127.5).astype(int), atol=1)
    tags = set()
    for path in glob.glob(os.path.join(run_dir, "tensorboard", "*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags |= {value.tag for value in event.summary.value}
    assert {"A2B", "B2A", "d_loss", "g_cam_loss", "fq/disGA/fq1/perplexity"} <= tags
    last = json.loads(open(os.path.join(run_dir, "log.jsonl")).read().splitlines()[-1])
    for key in ("d_loss", "d_fq_loss", "g_adv_loss", "g_cycle_loss", "g_identity_loss",
                "g_cam_loss", "g_fq_loss", "learning_rate", "fq/disGB/fq2/perplexity",
                "progress/iteration", "progress/img_per_sec"):
        assert key in last, key
    assert last["progress/iteration"] == 80
    # The learning rate decays linearly over the second half (2e-3 at iteration 40, 0 at 80).
    assert last["learning_rate"] < 0.3 * 2e-3
    saved = Options.load(run_dir)
    assert saved == Options(**TINY) and saved.kimg == pytest.approx(0.32)
    # reals.png: 16 training images of A, then 16 of B, 8 per row, shown 128 pixels wide.
    assert np.asarray(Image.open(os.path.join(run_dir, "reals.png"))).shape == (512, 1024, 3)
    # Every start, the resumed one too, is logged: both generators, all four discriminators.
    nets = build_networks(saved)
    for net in nets.values():
        net.build((None, 16, 16, 3))
    parameters = {   # trainable weights (not the FQ dictionaries or spectral-norm vectors)
        role: sum(int(np.prod(w.shape)) for name, net in nets.items()
                  if name.startswith(prefix) for w in net.trainable_weights)
        for role, prefix in (("G", "gen"), ("D", "dis"))}
    for folder in (run_dir, runs["stopped"]):
        start = json.loads(open(os.path.join(folder, "log.jsonl")).readline())["start"]
        assert start["data"] == {"source": "synthetic:shapes2cartoon", "resolution": 16,
                                 "images": {"trainA": 256, "trainB": 256}}
        assert start["parameters"] == parameters


def test_training_exports_both_generators_at_the_end(runs):
    """The chief exports both generators (of the last checkpoint) as one SavedModel into
    <run>/export at the end of training, and again at the end of a resumed run
    (export/ugatit.py; its SavedModels are tests/test_export_ugatit.py's)."""
    import export
    assert runs["summary"]["export"] == os.path.join(runs["straight"], "export")
    for run_dir in (runs["straight"], runs["stopped"]):
        with open(os.path.join(run_dir, "summary.json")) as f:
            path = json.load(f)["export"]
        assert path == os.path.join(run_dir, "export")
        assert export.path_kind(path)[0] == "savedmodel"
        meta = export.load_generator(path).metadata
        assert {k: meta[k] for k in ("family", "class", "resolution", "light", "ngf",
                                     "n_blocks", "iterations", "kimg", "source", "tool")} == {
            "family": "ugatit", "class": "networks.ugatit.UGATITGenerator", "resolution": 16,
            "light": True, "ngf": 8, "n_blocks": 1, "iterations": 80, "kimg": 0.32,
            "source": f"{run_dir} ({os.path.join(run_dir, 'checkpoints', 'ckpt-80')})",
            "tool": "run_translation.py"}


def write_images(folder, images, names):
    for image, name in zip(images, names):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(image).save(path)


def test_translation_cli_writes_translations_and_strips(runs, tmp_path, capsys):
    a, _ = synthetic.shapes2cartoon(3, 32, seed=5, split="test")
    src = str(tmp_path / "photos")
    write_images(src, a, ["x.png", "sub/y.jpg", "z.png"])
    out = str(tmp_path / "anime")
    assert run_cli(run_translation, ["--network", runs["straight"], "--input", src, "--outdir",
                                     out, "--strips", "--batch", "2"]) == 0
    assert "Translated 3 images A2B at 16x16" in capsys.readouterr().out
    written = sorted(os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "**", "*.png"),
                                                                recursive=True))
    assert written == sorted(["x.png", os.path.join("sub", "y.png"), "z.png",
                              os.path.join("strips", "x.png"), os.path.join("strips", "sub",
                                                                            "y.png"),
                              os.path.join("strips", "z.png")])
    _, nets = load_networks(runs["straight"])
    resized = tf.image.resize(a[0], [16, 16], "bilinear", antialias=True).numpy() / 127.5 - 1
    expected = nets["genA2B"](resized[np.newaxis])[0].numpy()[0]
    got = np.asarray(Image.open(os.path.join(out, "x.png")))
    # uint8 levels: one level where the export functions' float (optimizer on, other batch)
    # and the eager one round to different sides of a .5 boundary.
    np.testing.assert_allclose(got.astype(int), np.rint((expected + 1) * 127.5).astype(int),
                               atol=1)
    strip = np.asarray(Image.open(os.path.join(out, "strips", "x.png")))
    assert strip.shape == (7 * 16, 16, 3)
    np.testing.assert_array_equal(strip[4 * 16:5 * 16], got)   # panel 5 is the translation
    # B2A uses the other generator (here from the run's SavedModel, <run>/export).
    out_b = str(tmp_path / "back")
    assert run_cli(run_translation, ["--network", os.path.join(runs["straight"], "export"),
                                     "--input", src, "--outdir", out_b, "--direction",
                                     "B2A"]) == 0
    assert not np.array_equal(np.asarray(Image.open(os.path.join(out_b, "x.png"))), got)


def test_translation_cli_errors_are_one_line(runs, tmp_path, capsys):
    src = str(tmp_path / "photos")
    write_images(src, synthetic.shapes2cartoon(1, 16, seed=1)[0], ["a.png"])
    no_ckpt = str(tmp_path / "fresh_run")
    os.makedirs(no_ckpt)
    Options(**TINY).save(no_ckpt)
    full = str(tmp_path / "full")
    os.makedirs(full)
    (tmp_path / "full" / "f.txt").write_text("x")
    other = tmp_path / "stylegan_run"
    other.mkdir()
    (other / "training_options.json").write_text(json.dumps({"model": "stylegan2", "kimg": 1}))
    bad = str(tmp_path / "bad")
    write_images(bad, synthetic.shapes2cartoon(1, 16, seed=1)[0], ["a.png"])
    (tmp_path / "bad" / "b.png").write_bytes(b"not a png")
    cases = [
        (["--network", no_ckpt, "--input", src, "--outdir", str(tmp_path / "o1")],
         f"no checkpoint in {os.path.join(no_ckpt, 'checkpoints')}"),
        (["--network", runs["straight"], "--checkpoint", os.path.join(runs["straight"], "x"),
          "--input", src, "--outdir", str(tmp_path / "o2")], "looked for"),
        (["--network", str(tmp_path), "--input", src, "--outdir", str(tmp_path / "o3")],
         "neither a U-GAT-IT run folder"),
        (["--network", str(other), "--input", src, "--outdir", str(tmp_path / "o6")],
         "is a stylegan2 run, not a U-GAT-IT one"),
        (["--network", runs["straight"], "--input", src, "--outdir", full],
         "exists and is not empty"),
        (["--network", runs["straight"], "--input", bad, "--outdir", str(tmp_path / "o4")],
         "b.png"),
        (["--network", runs["straight"], "--input", src, "--outdir", str(tmp_path / "o5"),
          "--resolution", "30"], "--resolution 30: must be divisible by 4"),
    ]
    for argv, message in cases:
        assert run_cli(run_translation, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("run_translation.py: error: "), err
        assert message in err[0], (message, err[0])
    # Nothing was written for the failed runs.
    assert not [p for p in os.listdir(tmp_path) if p.startswith("o")]

# ---------------------------------------------------------------------------------------------
# run_training.py --model ugatit: flags, presets, one-line errors.


def options_from(argv):
    fv = flags.FlagValues()
    run_training.define_flags(fv)
    fv(["run_training.py", "--model", "ugatit"] + argv)
    from training import ugatit as ugatit_family
    options = ugatit_family.options_from_flags(fv)
    ugatit_family.validate(options)
    return options


def test_presets_and_flags():
    demo = options_from([])
    assert (demo.dataset, demo.size, demo.minibatch, demo.lr) == ("shapes2cartoon", 64, 1, 1e-4)
    assert demo.resolved("ngf") == 16 and demo.discriminator_layers == (6, 5)
    assert demo.fq_config() == ((1, 2, 3), {"commitment_cost": 2.0, "decay": 0.85})
    official = options_from(["--config", "official"])
    assert (official.size, official.total_iterations, official.resolved("ngf"),
            official.resolved("ndf"), official.resolved("n_blocks"), official.light) == (
        256, 1_000_000, 64, 64, 4, False)
    assert official.discriminator_layers == (7, 5)
    paper = options_from(["--fq-preset", "paper", "--light", "--resolution", "128"])
    assert paper.fq_config() == ((2,), {"num_embeddings": 1024, "commitment_cost": 0.25,
                                        "decay": 0.8, "forward": "quantized"})
    # The paper's warm-up: a quarter of the run (alpha ramp, then the quantised forward).
    assert (paper.fq_warmup_iterations, official.fq_warmup_iterations) == (2500, 0)
    custom = options_from(["--fq-layers", "2", "--fq-num-embeddings", "256", "--fq-decay",
                           "0.9", "--iterations", "500", "--batch", "2", "--lr", "2e-4"])
    assert custom.fq_config() == ((2,), {"num_embeddings": 256, "commitment_cost": 2.0,
                                         "decay": 0.9})
    assert (custom.total_iterations, custom.minibatch, custom.lr) == (500, 2, 2e-4)
    assert custom.kimg == 1.0
    assert options_from(["--kimg", "2", "--batch", "4"]).total_iterations == 500
    assert options_from(["--fq-layers", ""]).fq_config()[0] == ()
    nets = build_networks(options_from(["--fq-layers", "2,4", "--resolution", "96"]))
    assert nets["disGA"].n_layers == 7 and nets["disGA"].fq_layer_indices == (2, 4)
    assert [fq.num_embeddings for fq in nets["disGB"].fq_layers] == [128, 128]


@pytest.mark.parametrize("argv, message", [
    (["--config", "e"], "--config 'e': U-GAT-IT presets are demo, official."),
    (["--fq-layers", "1,5"], "--fq-layers 5: not a conv of the global discriminator at 64x64 "
                             "(6 layers); valid: 0,1,2,3,4"),
    (["--fq-layers", "a"], "--fq-layers must be comma-separated discriminator conv indices"),
    (["--fq-layers", "1,1"], "--fq-layers '1,1' names a value twice."),
    (["--fq-blocks", "16"], "--fq-blocks: not used by --model ugatit"),
    (["--resolution", "30"], "--resolution 30: must be divisible by 4"),
    (["--dataset", "/no/such/folder"], "--dataset: /no/such/folder: neither a folder"),
    (["--dataset", "shapes"], "--dataset: shapes: neither a folder"),
    (["--dataset", "shapes", "--resolution", "96"], "--dataset: shapes: neither a folder"),
    (["--kimg", "1", "--iterations", "5"], "--kimg and --iterations both set"),
    (["--xla", "--strategy", "mirrored"], "--xla works with --strategy default only"),
])
def test_cli_usage_errors_are_one_line(argv, message, capsys):
    assert run_cli(run_training, ["--model", "ugatit"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_training.py: error: "), err
    assert message in err[0]


def test_dataset_folder_without_trainb_is_a_usage_error(tmp_path, capsys):
    write_images(str(tmp_path / "trainA"), synthetic.shapes2cartoon(1, 16)[0], ["a.png"])
    assert run_cli(run_training, ["--model", "ugatit", "--dataset", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "trainB is missing" in err and len(err.splitlines()) == 1

# ---------------------------------------------------------------------------------------------
# The unpaired data stream: resumable, and N replicas see what one device sees.


def test_unpaired_stream_resumes_at_start_image():
    pair = open_unpaired("shapes2cartoon", resolution=16, num_images=12, seed=3)
    kwargs = dict(seed=7)
    straight = [tuple(x.numpy() for x in batch)
                for batch in pair.train_pipeline(16, 4, **kwargs).take(8)]   # 2.7 epochs
    for k in (1, 3, 5):
        resumed = pair.train_pipeline(16, 4, start_image=4 * k, **kwargs).take(8 - k)
        for (a, b), (ra, rb) in zip(straight[k:], resumed):
            np.testing.assert_array_equal(a, ra.numpy())
            np.testing.assert_array_equal(b, rb.numpy())
    with pytest.raises(DatasetError, match="not a multiple of the batch size"):
        pair.train_pipeline(16, 4, start_image=2)
    with pytest.raises(DatasetError, match="needs repeat=True"):
        pair.train_pipeline(16, 4, start_image=4, repeat=False)


def test_two_replicas_read_the_one_device_batches(two_replica_strategy):
    """The distributed stream split over 2 replicas holds the one-device batches of the same
    global size (so the loop's replicas-equal-one-device property extends to the data)."""
    pair = open_unpaired("shapes2cartoon", resolution=16, num_images=12, seed=3)
    single = [tuple(x.numpy() for x in batch)
              for batch in pair.train_pipeline(16, 4, seed=1, start_image=8).take(3)]
    distributed = iter(pair.distribute(two_replica_strategy, 4, 16, start_image=8, seed=1))
    for a, b in single:
        da, db = next(distributed)
        local = two_replica_strategy.experimental_local_results
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x in local(da)]), a)
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x in local(db)]), b)
    with pytest.raises(DatasetError, match="multiple of the global batch"):
        pair.distribute(two_replica_strategy, 4, 16, start_image=2)


def test_a_batch_the_replicas_cannot_split_is_one_line(capsys, tmp_path, monkeypatch,
                                                       two_replica_strategy):
    from training import distribute
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: two_replica_strategy)
    code = run_cli(run_training, ["--model", "ugatit", "--batch", "3", "--resolution", "16",
                                  "--fq-layers", "1,2",
                                  "--out", str(tmp_path / "run")])
    assert code == 2 and capsys.readouterr().err.strip().splitlines() == [
        "run_training.py: error: --batch 3 is not divisible by the 2 replicas; use a multiple "
        "of 2."]
    assert not os.path.exists(tmp_path / "run")   # created by this command, removed again


def test_init_from_converted_official_weights(tmp_path):
    """A TINY run from converted UGATIT-pytorch weights (all six networks, no FQ), stopped
    before its first step: its first checkpoint holds the converted networks' variables bit
    for bit, the global discriminators' FQ dictionaries start fresh (logged), and the counter
    is 0; networks initialised from that run folder train (one iteration)."""
    from networks import convert
    from test_convert_ugatit import discriminator_state, generator_state
    rng = np.random.RandomState(2)
    global_layers, local_layers = Options(**TINY).discriminator_layers
    gen = dict(ngf=8, n_blocks=1, light=True, img_size=16)
    state = {"genA2B": generator_state(rng, **gen), "genB2A": generator_state(rng, **gen),
             "disGA": discriminator_state(rng, ndf=8, n_layers=global_layers),
             "disGB": discriminator_state(rng, ndf=8, n_layers=global_layers),
             "disLA": discriminator_state(rng, ndf=8, n_layers=local_layers),
             "disLB": discriminator_state(rng, ndf=8, n_layers=local_layers)}
    source = str(tmp_path / "converted")
    converted = convert.from_ugatit_pytorch(state, img_size=16)
    convert.save_networks(source, **converted)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    messages = []
    training_loop(Options(**TINY, init_from=source), run_dir, log=messages.append,
                  stop_after_iterations=0)
    assert f"Initialised from {source}: genA2B, genB2A, disGA, disGB, disLA, disLB." in messages
    for name in ("disGA", "disGB"):
        assert f"FQ dictionaries of {name} (fq1, fq2) start fresh: {source} has none." in messages
    assert latest_checkpoint(run_dir).endswith("ckpt-0")
    _, loaded = load_networks(run_dir, which=tuple(converted))
    for name, network in converted.items():
        ours = {v.path.removeprefix(name + "/"): v.numpy() for v in loaded[name].variables}
        for v in network.variables:
            key = v.path.removeprefix(network.name + "/")
            np.testing.assert_array_equal(ours[key], v.numpy(), err_msg=f"{name} {key}")
    # And they train: one iteration of the run's trainer (eager; the compiled loop after
    # --init-from is the family-independent one test_training_loop runs) changes every network
    # and keeps it finite.
    options = Options(**TINY)
    trainer = UGATITTrainer(build_networks(options), (16, 16, 3), options.total_iterations,
                            weights=options.loss_weights(), learning_rate=options.lr)
    loaded = {name: getattr(trainer, name) for name in converted}
    init_from(run_dir, loaded, "ugatit", log=quiet)   # the run's ckpt-0: the converted weights
    before = {name: [v.numpy() for v in loaded[name].trainable_variables] for name in loaded}
    a, b = next(iter(open_pair(options).train_pipeline(16, options.minibatch)))
    trainer.train_step((a, b), options.minibatch)
    trainer.finish_step()
    for name, network in loaded.items():
        after = [v.numpy() for v in network.trainable_variables]
        assert all(np.all(np.isfinite(x)) for x in after), name
        assert any(np.any(x != y) for x, y in zip(after, before[name])), name
