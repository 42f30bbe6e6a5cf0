"""export/biggan.py and class-conditional run_generator.py on a real (tiny) BigGAN run folder.

The run: the demo preset (CIFAR architecture at ch 4) on the built-in labelled shapes (5
classes), written as training writes it after 4 eager trainer iterations (the compiled training
loop, and the export it writes at the end of training, are tests/test_biggan_loop.py's), and
exported as `export.export_run` (run_export.py) does. The SavedModel is loaded in a fresh Python
process that imports only TensorFlow and numpy, and compared with the same functions built in
memory from the run's checkpoint (`export.load_generator(run_dir)`, what run_generator.py
uses), and those with the Keras generator's eager eval-mode call.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
import export.biggan as export_biggan
import run_export
import run_generator
from export import ExportError
from networks import biggan, convert, stylegan2
from training import biggan as biggan_family
from training.biggan_trainer import BigGANTrainer
from training.checkpoints import Checkpoints

from test_export import export_run_folder, graph_optimizer_off
from test_generator_cli import cli, read_figure, read_png

NUM_CLASSES = 5
PSIS = (1.0, 0.5, 0.0)
ITERATIONS = 4
# Standing statistics of each source's export (accumulations, batch, seed): the run's export
# has the defaults (checked below); the 64x64 hierarchical generator is exported with fewer,
# smaller train-mode forwards (16 x 64 of them were most of this module's time).
STANDING = {"run": (16, 64, 0), "hier": (4, 16, 0)}


def write_run(run_dir):
    """A demo BigGAN run folder as the training loop leaves it (training_options.json, and the
    trainer's whole state in checkpoints/ckpt-4) after ITERATIONS eager iterations of its
    trainer (1 D step of 8 images each) on the built-in shapes."""
    options = biggan_family.BigGANOptions(iterations=8, batch=8, d_steps=1, metrics=())
    dataset, counts = biggan_family.open_training_data(options)
    biggan_family.resolve(options, dataset)
    options.save(run_dir)
    keras.utils.set_random_seed(options.seed)
    G, D = biggan_family.build_networks(options)
    trainer = BigGANTrainer(G, D, options.settings(), class_probabilities=counts,
                            seed=options.seed)
    batches = iter(dataset.pipeline(options.batch, options.resolution, seed=options.seed))
    for _ in range(ITERATIONS):
        trainer.train_step((next(batches),), options.batch)
        trainer.finish_step()
    return Checkpoints(trainer.checkpoint_state(), run_dir).save(ITERATIONS)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(run folder, {"checkpoint": its checkpoint, "export": its SavedModel, "generator": the
    same functions in memory})."""
    folder = str(tmp_path_factory.mktemp("biggan") / "run")
    os.makedirs(folder)
    checkpoint = write_run(folder)
    path, generator = export_run_folder(folder)
    return folder, {"checkpoint": checkpoint, "export": path, "generator": generator}


@pytest.fixture(scope="module")
def hier_generator():
    """The ImageNet 64x64 architecture (shared embedding, hierarchical z, attention), tiny."""
    G, _ = biggan.make_biggan("imagenet64", fq=False, ch=2, num_classes=3, dim_z=22,
                              shared_dim=8)
    G.build()
    rng = np.random.RandomState(3)
    for v in G.non_trainable_variables:  # non-trivial running statistics
        if v.path.endswith("stored_mean"):
            v.assign(rng.randn(*v.shape).astype(np.float32) * 0.1)
        elif v.path.endswith("stored_var"):
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype(np.float32))
    for v in G.trainable_variables:
        if v.path.endswith("gamma"):  # attention switched on
            v.assign(0.5)
    return G


def inputs(z_dim, num_classes, batch=7, seed=7):
    rng = np.random.RandomState(seed)
    z = rng.randn(batch, z_dim).astype(np.float32)
    ids = (np.arange(batch) % num_classes).astype(np.int32)
    return z, ids


LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cases = json.loads(sys.argv[1])
    results = {}
    for name, case in cases.items():
        m = tf.saved_model.load(case["path"])
        sig = m.signatures
        data = np.load(case["inputs"])
        z, ids = tf.constant(data["z"]), tf.constant(data["ids"])
        c_dim = sig["serving_default"].structured_input_signature[1]["labels"].shape[-1]
        labels = tf.one_hot(ids, c_dim)
        for psi in case["psis"]:
            p = tf.constant(psi, tf.float32)
            for key, out in (
                    ("onehot", sig["serving_default"](z=z, truncation_psi=p, labels=labels)),
                    ("ids", sig["classes"](z=z, truncation_psi=p, class_ids=ids)),
                    ("batch1", sig["classes"](z=z[:1], truncation_psi=p, class_ids=ids[:1]))):
                results[f"{name}/{psi}/{key}/images"] = out["images"].numpy()
                results[f"{name}/{psi}/{key}/images_float"] = out["images_float"].numpy()
        results[f"{name}/metadata"] = np.array(m.metadata.numpy())
        results[f"{name}/signatures"] = np.array(sorted(sig.keys()))
    project = [n for n in ("networks", "export", "training", "fq_keras", "datasets")
               if n in sys.modules]
    results["project_modules"] = np.array(project, dtype=str)
    np.savez(sys.argv[2], **results)
""")


@pytest.fixture(scope="module")
def exported(run, hier_generator, tmp_path_factory):
    """The run's export and a hierarchical-z export, evaluated in a fresh process, and the
    in-memory functions and Keras generators they must equal."""
    run_dir, summary = run
    root = tmp_path_factory.mktemp("exported")
    # The hierarchical export: one module (export_generator's build_module) saved and used in
    # memory; the generator's variables recorded first (exporting must not change them).
    hier_state = [v.numpy() for v in hier_generator.variables]
    accumulations, batch, seed = STANDING["hier"]
    hier = export.build_module(hier_generator, standing_accumulations=accumulations,
                               standing_batch=batch, standing_seed=seed)
    sources = {
        "run": (summary["export"], summary["generator"],
                biggan_family.load_networks(run_dir)[1]["Gs"]),
        "hier": (export.save_module(hier, str(root / "hier")),
                 export.Generator.from_module(hier, "hier"), hier_generator),
    }
    cases = {}
    for name, (path, generator, _) in sources.items():
        z, ids = inputs(generator.z_dim, generator.c_dim)
        np.savez(str(root / f"{name}.npz"), z=z, ids=ids)
        cases[name] = {"path": path, "inputs": str(root / f"{name}.npz"), "psis": list(PSIS)}
    out = str(root / "results.npz")
    # -I: isolated mode, neither the working directory nor PYTHONPATH on sys.path.
    proc = subprocess.run([sys.executable, "-I", "-c", LOADER, json.dumps(cases), out],
                          cwd=str(root), capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        results = {k: f[k] for k in f.files}
    return {"results": results, "sources": sources, "states": {"hier": hier_state}}


@pytest.fixture(scope="module")
def standing(exported):
    """{source: float32 eager copy of its generator with the standing statistics its export
    computes (STANDING)}."""
    copies = {}
    for name, (_, _, G) in exported["sources"].items():
        copies[name] = export_biggan.EXPORTER.copy(G)
        export_biggan.accumulate_standing_statistics(copies[name], *STANDING[name])
    return copies


def to_uint8(x):
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


#----------------------------------------------------------------------------
# The SavedModel.


def test_run_folder_exports_its_g_ema(run, exported):
    run_dir, summary = run
    assert summary["export"] == os.path.join(run_dir, "export")
    results = exported["results"]
    assert list(results["run/signatures"]) == ["classes", "serving_default"]
    meta = json.loads(results["run/metadata"].item())
    assert (meta["family"], meta["c_dim"], meta["num_classes"], meta["z_dim"]) == (
        "biggan", NUM_CLASSES, NUM_CLASSES, 128)
    assert (meta["resolution"], meta["sample_mode"], meta["truncation_kind"]) == (
        32, "eval", "z_scale")
    assert (meta["iterations"], meta["config"], meta["source"]) == (
        ITERATIONS, "demo", f"{run_dir} ({summary['checkpoint']})")
    assert meta["kimg"] == pytest.approx(0.032)  # 4 iterations x 1 D step x 8 images
    assert meta["standing_statistics"] == {"accumulations": 16, "batch": 64, "seed": 0}
    hier = json.loads(results["hier/metadata"].item())
    assert (hier["z_dim"], hier["shared_dim"], hier["hier"], hier["resolution"]) == (
        20, 8, True, 64)  # dim_z 22 rounded down to 5 chunks of 4, as BigGAN-PyTorch


def test_fresh_process_never_imported_the_project(exported):
    assert exported["results"]["project_modules"].size == 0


@pytest.mark.parametrize("name", ["run", "hier"])
def test_savedmodel_in_a_fresh_process_equals_the_in_memory_generator(exported, name):
    results = exported["results"]
    _, generator, _ = exported["sources"][name]
    z, ids = inputs(generator.z_dim, generator.c_dim)
    for psi in PSIS:
        memory = generator("classes", z=z, truncation_psi=psi, class_ids=ids)
        for key in ("onehot", "ids"):
            got_float = results[f"{name}/{psi}/{key}/images_float"]
            got_uint8 = results[f"{name}/{psi}/{key}/images"]
            assert got_float.dtype == np.float32 and got_uint8.dtype == np.uint8
            assert got_uint8.shape == got_float.shape == memory["images"].shape
            # [-1, 1] images: 1e-5 is ~80 float32 ulp(1) = 1.2e-7, room for the loaded
            # graph's own optimizer rewrites of the same ops.
            np.testing.assert_allclose(got_float, memory["images_float"], rtol=0, atol=1e-5)
            np.testing.assert_array_equal(got_uint8, memory["images"])


@pytest.mark.parametrize("name", ["run", "hier"])
def test_export_functions_compute_the_keras_generator_in_eval_mode(exported, standing, name):
    """truncation_psi scales z: the signature is G(psi * z, ids, training=False) of G with
    standing statistics (standing_accumulations=0: of G itself); with the graph optimizer off
    exactly (its rewrites move floats by rounding, see tests/test_export.py). The standing
    functions are the source's in-memory export (from the run folder / the hierarchical
    module), run with the optimizer off per call."""
    _, generator, G = exported["sources"][name]
    z, ids = inputs(generator.z_dim, generator.c_dim)
    state = exported["states"].get(name) or [v.numpy() for v in G.variables]
    running = export.Generator.from_module(export.build_module(G, standing_accumulations=0),
                                           "running")
    with graph_optimizer_off():
        outputs = {(kind, psi): function("classes", z=z, truncation_psi=psi, class_ids=ids)
                   for kind, function in (("standing", generator), ("running", running))
                   for psi in PSIS}
    accumulations, batch, seed = STANDING[name]
    assert generator.metadata["standing_statistics"] == dict(
        accumulations=accumulations, batch=batch, seed=seed)
    assert running.metadata["standing_statistics"] is None
    for psi in PSIS:
        for kind, network in (("standing", standing[name]), ("running", G)):
            x = network(np.float32(psi) * z, ids, training=False).numpy()
            exact = outputs[(kind, psi)]
            # The eager kernels on the same shapes: 1e-6 is ~8 ulp(1) for [-1, 1] values.
            np.testing.assert_allclose(exact["images_float"], np.clip(x, -1, 1), rtol=0,
                                       atol=1e-6)
            np.testing.assert_array_equal(exact["images"], to_uint8(x))
        out = generator("classes", z=z, truncation_psi=psi, class_ids=ids)
        x = standing[name](np.float32(psi) * z, ids, training=False).numpy()
        # With the optimizer's rewrites: ~1e-5 (tests/test_export.py), 10x margin.
        np.testing.assert_allclose(out["images_float"], np.clip(x, -1, 1), rtol=0, atol=1e-4)
    # Neither exporting nor sampling changed G (the statistics are the export copy's).
    for v, before in zip(G.variables, state):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.path)


def test_standing_statistics_are_batch_statistics(exported, standing):
    _, _, G = exported["sources"]["run"]
    copy = export_biggan.EXPORTER.copy(G)
    before = {v.path: v.numpy() for v in copy.variables}
    export_biggan.accumulate_standing_statistics(copy, 1, 64, 5)
    changed = sorted(p for p, value in before.items()
                     if not np.array_equal(value, next(v for v in copy.variables
                                                       if v.path == p).numpy()))
    # Only the 7 batch norms' statistics (3 GBlocks x 2 + the output BN); SN u put back.
    assert len(changed) == 14 and all(p.endswith(("stored_mean", "stored_var"))
                                      for p in changed), changed
    norms = [copy.output_bn] + [bn for b in copy.blocks for bn in (b.bn1, b.bn2)]
    assert all(bn.momentum == 0.1 for bn in norms)
    # One accumulation stores that batch's mean and biased variance, with which train mode
    # normalises: eval mode then reproduces train mode on the same draws.
    rng = np.random.RandomState(5)
    z = rng.randn(64, G.dim_z).astype(np.float32)
    labels = rng.randint(NUM_CLASSES, size=64).astype(np.int32)
    train = export_biggan.EXPORTER.copy(G)(z, labels, training=True).numpy()
    # The stored biased variance against the batch's (the same float32 sums over 64 x h x w
    # values, reduced in another order): ~1e-6 on [-1, 1] images; 1e-5 = 80 ulp(1).
    np.testing.assert_allclose(copy(z, labels, training=False).numpy(), train, rtol=0,
                               atol=1e-5)
    # The default 16 x 64 draws approximate the statistics of any large batch: eval mode on a
    # fresh batch of 256 is far closer to its train-mode images than with the running
    # statistics of this short training (measured 0.063 vs 0.31 mean absolute difference).
    rng = np.random.RandomState(9)
    z = rng.randn(256, G.dim_z).astype(np.float32)
    labels = rng.randint(NUM_CLASSES, size=256).astype(np.int32)
    train = export_biggan.EXPORTER.copy(G)(z, labels, training=True).numpy()
    with_standing = np.abs(standing["run"](z, labels, training=False).numpy() - train).mean()
    with_running = np.abs(G(z, labels, training=False).numpy() - train).mean()
    assert with_standing < with_running / 2, (with_standing, with_running)


@pytest.mark.parametrize("name", ["run", "hier"])
def test_int_and_one_hot_labels_agree(exported, name):
    results = exported["results"]
    for psi in PSIS:
        for kind in ("images", "images_float"):
            np.testing.assert_array_equal(results[f"{name}/{psi}/onehot/{kind}"],
                                          results[f"{name}/{psi}/ids/{kind}"])


@pytest.mark.parametrize("name", ["run", "hier"])
def test_batch_of_one_and_of_seven(exported, name):
    """Eval mode is batch-independent: image 0 of a batch of 7 is the image of batch 1."""
    results = exported["results"]
    for psi in PSIS:
        seven = results[f"{name}/{psi}/ids/images_float"]
        one = results[f"{name}/{psi}/batch1/images_float"]
        assert seven.shape[0] == 7 and one.shape[0] == 1
        # Different batch sizes run different oneDNN kernels: equal up to float rounding
        # (a few ulp per op, grown through the layers; values in [-1, 1]).
        np.testing.assert_allclose(one[0], seven[0], rtol=0, atol=1e-4)


def test_psi_zero_gives_one_image_per_class(exported):
    results = exported["results"]
    _, generator, _ = exported["sources"]["run"]
    _, ids = inputs(generator.z_dim, generator.c_dim)   # classes 0..4, then 0, 1
    zero = results["run/0.0/ids/images"]
    np.testing.assert_array_equal(zero[0], zero[5])
    np.testing.assert_array_equal(zero[1], zero[6])
    one = results["run/1.0/ids/images_float"]
    assert np.abs(one[0] - one[5]).max() > 1e-3              # z matters at psi = 1
    assert np.abs(results["hier/0.0/ids/images_float"][0]
                  - results["hier/0.0/ids/images_float"][1]).max() > 1e-3  # class matters


def test_bad_labels_fail_inside_the_savedmodel(run):
    model = tf.saved_model.load(run[1]["export"])
    serve, classes = model.signatures["serving_default"], model.signatures["classes"]
    z = tf.zeros([2, 128])
    psi = tf.constant(1.0)
    cases = [
        (lambda: classes(z=z, truncation_psi=psi, class_ids=tf.constant([0, 5])),
         r"class ids must be in \[0, 5\)"),
        (lambda: classes(z=z, truncation_psi=psi, class_ids=tf.constant([-1, 0])),
         r"class ids must be in \[0, 5\)"),
        (lambda: serve(z=z, truncation_psi=psi, labels=tf.one_hot([0, 1], 5) * 0.5),
         "labels must be one-hot rows"),
        (lambda: serve(z=z, truncation_psi=psi, labels=tf.one_hot([0, 1], 5) + tf.one_hot(
            [2, 3], 5)), "labels must be one-hot rows"),
        (lambda: classes(z=z, truncation_psi=psi, class_ids=tf.constant([0, 1, 2])),
         "same batch size"),
    ]
    for call, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call()


def test_export_settings_are_refused_before_writing(hier_generator, tmp_path):
    with pytest.raises(ExportError, match="BigGAN exports take no noise_mode"):
        export.export_generator(hier_generator, str(tmp_path / "e"), noise_mode="const")
    for settings in ({"standing_batch": 0}, {"standing_accumulations": -1},
                     {"standing_accumulations": 1.5}, {"standing_seed": True}):
        with pytest.raises(ExportError, match="must be an integer >="):
            export.export_generator(hier_generator, str(tmp_path / "e"), **settings)
    assert os.listdir(tmp_path) == []


def test_mixed_precision_generator_exports_in_float32(tmp_path, mixed_precision):
    half = mixed_precision
    G, _ = biggan.make_biggan("cifar10", fq=False, ch=4, num_classes=3)
    G.build()
    assert G.dtype_policy.compute_dtype == half.name
    # Without standing statistics, so that the export copy is compared with G itself.
    gen = export.Generator.from_savedmodel(export.export_generator(
        G, str(tmp_path / "e"), standing_accumulations=0))
    assert gen.input_spec("classes", "z").dtype == tf.float32
    z, ids = inputs(G.dim_z, 3, batch=3)
    out = gen("classes", z=z, truncation_psi=1.0, class_ids=ids)["images_float"]
    assert out.dtype == np.float32
    x = G(z, ids, training=False).numpy().astype(np.float32)   # half compute
    # float16 rounds at ulp(1) = 9.8e-4 per op: 2e-2 is ~20 of them on [-1, 1] images (bfloat16:
    # ulp(1) = 7.8e-3, 8x).
    np.testing.assert_allclose(out, np.clip(x, -1, 1), rtol=0, atol=2e-2 * (half.unit_roundoff / 2.0 ** -11))


def test_generator_with_mirrored_variables(tmp_path, two_replica_strategy):
    """A G_ema built in strategy.scope() (as in training) exports outside it, plain variables."""
    with two_replica_strategy.scope():
        G, _ = biggan.make_biggan("cifar10", fq=False, ch=4, num_classes=3)
        G.build()
    z, ids = inputs(G.dim_z, 3, batch=3)
    x = G(z, ids, training=False).numpy()
    gen = export.Generator.from_savedmodel(export.export_generator(
        G, str(tmp_path / "e"), standing_accumulations=0))
    out = gen("classes", z=z, truncation_psi=1.0, class_ids=ids)["images_float"]
    # SavedModel (optimizer on) against eager, [-1, 1]: ~1e-5 of rewrites, 10x margin.
    np.testing.assert_allclose(out, np.clip(x, -1, 1), rtol=0, atol=1e-4)

def test_converted_networks_folder(tmp_path):
    """run_convert.py output (networks.convert.save_networks): load_networks rebuilds BigGAN
    networks unbuilt, restored when built; the export builds them and gets the weights."""
    G, D = biggan.make_biggan("cifar10", fq=False, ch=4, num_classes=3)
    G.build()
    D.build()
    folder = convert.save_networks(str(tmp_path / "converted"), G=G, D=D)
    gen = export.load_generator(folder)
    assert gen.metadata["family"] == "biggan" and gen.c_dim == 3
    z, ids = inputs(G.dim_z, 3, batch=3)
    out = gen("classes", z=z, truncation_psi=1.0, class_ids=ids)["images_float"]
    standing = export_biggan.EXPORTER.copy(G)
    export_biggan.accumulate_standing_statistics(standing, 16, 64, 0)
    x = standing(z, ids, training=False).numpy()
    # In-memory functions (optimizer on) against eager, [-1, 1]: as above.
    np.testing.assert_allclose(out, np.clip(x, -1, 1), rtol=0, atol=1e-4)
    assert np.abs(x).max() > 1e-3  # not an all-zero image

#----------------------------------------------------------------------------
# run_generator.py and run_export.py.


_LOADED = {}


def plain_tf_class_images(path, seeds, class_index, psi=1.0):
    """Images for seeds from the SavedModel's integer-label signature, called as a user would
    (each SavedModel loaded once per test module)."""
    if path not in _LOADED:
        _LOADED[path] = tf.saved_model.load(path)
    classes = _LOADED[path].signatures["classes"]
    z_dim = classes.structured_input_signature[1]["z"].shape[-1]
    return [classes(z=tf.constant(np.random.RandomState(s).randn(1, z_dim), tf.float32),
                    truncation_psi=tf.constant(psi),
                    class_ids=tf.constant([class_index]))["images"].numpy()[0] for s in seeds]


def test_same_seeds_same_pngs_from_run_and_savedmodel(run, tmp_path, capsys):
    """(A --network checkpoint path: test_run_export_cli_on_a_biggan_checkpoint.)"""
    run_dir, summary = run
    sources = {"run": run_dir, "savedmodel": summary["export"]}
    for name, network in sources.items():
        status, out, err = cli(run_generator, [
            "generate-images", "--network", network, "--seeds", "0-9", "--class", "3",
            "--outdir", str(tmp_path / name)], capsys)
        assert status == 0, err
        assert "5 classes" in out and "Wrote 10 PNG files" in out
    files = [f"seed{s:04d}.png" for s in range(10)]
    for name in sources:
        assert sorted(os.listdir(tmp_path / name)) == files
        for f in files:
            assert (tmp_path / name / f).read_bytes() == (tmp_path / "run" / f).read_bytes()
    # NVlabs latents, class 3 through the plain SavedModel's integer-label signature.
    expected = plain_tf_class_images(summary["export"], range(10), 3)
    for f, image in zip(files, expected):
        np.testing.assert_array_equal(read_png(tmp_path / "run" / f), image)
    assert expected[0].shape == (32, 32, 3)
    assert np.abs(expected[0].astype(int) - expected[1].astype(int)).max() > 0


def test_classes_write_every_seed_in_every_class(run, tmp_path, capsys):
    run_dir, summary = run
    status, out, err = cli(run_generator, [
        "generate-images", "--network", summary["export"], "--seeds", "4,2",
        "--classes", "0,3-4", "--grid", "--outdir", str(tmp_path)], capsys)
    assert status == 0, err
    classes = [0, 3, 4]
    names = [f"seed{s:04d}-class{c}.png" for s in (4, 2) for c in classes]
    assert sorted(os.listdir(tmp_path)) == sorted(names + ["generate-images.png"])
    grid = read_figure(tmp_path / "generate-images.png", 32)   # shown x4
    assert grid.shape == (2 * 32, 3 * 32, 3)   # rows seeds, columns classes
    for i, seed in enumerate((4, 2)):
        for j, c in enumerate(classes):
            cell = grid[32 * i:32 * i + 32, 32 * j:32 * j + 32]
            np.testing.assert_array_equal(cell, plain_tf_class_images(summary["export"],
                                                                      [seed], c)[0])
            np.testing.assert_array_equal(read_png(tmp_path / f"seed{seed:04d}-class{c}.png"),
                                          cell)
    # The same z in another class is another image.
    assert np.abs(grid[:32, :32].astype(int) - grid[:32, 32:64].astype(int)).max() > 0


def test_truncation_sweep_scales_z(run, tmp_path, capsys):
    run_dir, summary = run
    status, _, err = cli(run_generator, [
        "truncation-sweep", "--network", summary["export"], "--seeds", "0-1", "--psis", "1,0.5,0",
        "--class", "2", "--outdir", str(tmp_path)], capsys)
    assert status == 0, err
    for psi in (1.0, 0.5, 0.0):
        expected = plain_tf_class_images(summary["export"], [0, 1], 2, psi)
        for seed, image in zip((0, 1), expected):
            np.testing.assert_array_equal(read_png(tmp_path / f"seed{seed:04d}-psi{psi:g}.png"),
                                          image)
    np.testing.assert_array_equal(read_png(tmp_path / "seed0000-psi0.png"),
                                  read_png(tmp_path / "seed0001-psi0.png"))


def test_run_export_cli_on_a_biggan_checkpoint(run, tmp_path, capsys):
    run_dir, summary = run
    out_dir = str(tmp_path / "e")
    status, out, err = cli(run_export, ["--network", summary["checkpoint"], "--outdir", out_dir],
                           capsys)
    assert status == 0, err
    assert "Exported biggan generator (32x32, z_dim 128, 5 label dims)" in out
    assert "serving_default, classes" in out
    a = plain_tf_class_images(out_dir, [5], 1)[0]
    np.testing.assert_array_equal(a, plain_tf_class_images(summary["export"], [5], 1)[0])
    status, _, err = cli(run_export, ["--network", run_dir, "--noise-mode", "none",
                                      "--outdir", str(tmp_path / "f")], capsys)
    assert status == 2 and err.count("\n") == 1 and "BigGAN exports take no noise_mode" in err
    assert not os.path.exists(tmp_path / "f")


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
    G = stylegan2.Generator(z_dim=8, w_dim=8, resolution=8, mapping_layers=1, fmap_base=32,
                            fmap_max=8, seed=0)
    return export.export_generator(G, str(tmp_path_factory.mktemp("uncond") / "stylegan2"))


BAD_CLASSES = {
    "class out of range": (["--network", "{export}", "--class", "5"],
                           "--class 5: the model has classes 0..4."),
    "class out of range (export)": (["--network", "{export}", "--class", "12"],
                                    "--class 12: the model has classes 0..4."),
    "classes out of range": (["--network", "{export}", "--classes", "1,7-8"],
                             "--classes 7: the model has classes 0..4."),
    "class not an integer": (["--network", "{run}", "--class", "3.5"],
                             "--class '3.5': a class index is a non-negative integer"),
    "class negative": (["--network", "{run}", "--class", "-1"],
                       "--class '-1': a class index is a non-negative integer"),
    "class a list": (["--network", "{run}", "--class", "1,2"],
                     "(several classes: --classes 0,3,5)"),
    "classes not integers": (["--network", "{run}", "--classes", "a,b"],
                             "--classes 'a,b': expected non-negative integers"),
    "classes twice": (["--network", "{run}", "--classes", "1,0-2"], "1 is listed twice"),
    "class and classes": (["--network", "{run}", "--class", "1", "--classes", "2"],
                          "give --class (every image of one class) or --classes"),
    "no class": (["--network", "{export}"],
                 "the model is conditional (5 classes): give --class 0..4 or --classes"),
    "class, unconditional": (["--network", "{uncond}", "--class", "0"],
                             "--class given, but the model is unconditional; drop --class."),
    "classes, unconditional": (["--network", "{uncond}", "--classes", "0-1"],
                               "--classes given, but the model is unconditional"),
}


@pytest.mark.parametrize("case", list(BAD_CLASSES))
def test_bad_class_ids_give_one_clear_line(case, run, unconditional, tmp_path, capsys):
    args, message = BAD_CLASSES[case]
    paths = {"run": run[0], "export": run[1]["export"], "uncond": unconditional}
    args = ["generate-images", "--seeds", "1", "--outdir", str(tmp_path / "out")] + [
        a.format(**paths) for a in args]
    status, out, err = cli(run_generator, args, capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("run_generator.py: error: "), err
    assert message in err and "Traceback" not in err + out
    assert not os.path.exists(tmp_path / "out")


def test_classes_are_for_generate_images_only(run, tmp_path, capsys):
    status, _, err = cli(run_generator, [
        "truncation-sweep", "--network", run[0], "--seeds", "1", "--classes", "0,1",
        "--outdir", str(tmp_path / "out")], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "--classes is for generate-images, not truncation-sweep" in err
    status, _, err = cli(run_generator, [
        "style-mixing-example", "--network", run[1]["export"], "--row-seeds", "1",
        "--col-seeds", "2", "--class", "0", "--outdir", str(tmp_path / "out")], capsys)
    assert status == 2 and "ProGAN and BigGAN have no styles" in err
    assert not os.path.exists(tmp_path / "out")
