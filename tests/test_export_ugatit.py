"""export/ugatit.py: U-GAT-IT SavedModels (a2b / b2a on uint8 images, CAM heatmaps) against the
in-memory generators, run_export.py / export_run of a run folder, run_translation.py from a
SavedModel.

One tiny U-GAT-IT run folder (light, 16x16) is written once for the module as training writes
it, after 2 eager trainer iterations (the compiled training loop, and the export it writes at
the end of training, are tests/test_ugatit_loop.py's: tracing its step would be most of this
module's time), and exported into <run>/export. That SavedModel is loaded once in a fresh
Python process that imports only TensorFlow and numpy. As in tests/test_export.py, its outputs
are compared with the same functions traced in memory from the run folder (exact), and those,
with TensorFlow's graph optimizer off, with the eager Keras generators and the training strips'
heatmap of the official `cam()` transcribed in numpy (`numpy_cam_heatmap`), exactly.
"""

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import export
import run_export
import run_generator
import run_translation
from datasets import open_unpaired, synthetic
from export import ExportError
from export.ugatit import GeneratorPair
from networks import convert, ugatit
from networks.ugatit import cam_heatmap, jet_colormap, jet_table
from training.checkpoints import Checkpoints
from training.ugatit import Options, build_networks, load_networks, open_pair
from training.ugatit_trainer import UGATITTrainer, strip, to_uint8, translation_panels

from test_export import export_run_folder, graph_optimizer_off
from test_generator_cli import cli as run_cli

SIZE = 16
# 16x16 built-in pair, light mode, FQ in the global discriminators.
TINY = dict(img_size=SIZE, ngf=4, ndf=4, n_blocks=1, light=True, batch=2, iterations=4,
            learning_rate=2e-3, fq_layers=(1,), synthetic_images=16)
ITERATIONS = 2   # trained (of 4) when the run folder's checkpoint is written
OUTPUTS = ("images", "images_float", "heatmap", "cam_logit")


def quiet(*args):
    pass


def make_inputs():
    """uint8 images at the training size (5), one of them alone, other sizes, float images."""
    rng = np.random.RandomState(11)
    x5 = rng.randint(0, 256, (5, SIZE, SIZE, 3)).astype(np.uint8)
    odd = rng.randint(0, 256, (3, 20, 28, 3)).astype(np.uint8)
    f5 = rng.uniform(-1, 1, (5, SIZE, SIZE, 3)).astype(np.float32)
    return {"x5": x5, "x1": x5[:1], "odd": odd, "f5": f5}


LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    m = tf.saved_model.load(sys.argv[1])
    sig = m.signatures
    data = np.load(sys.argv[2])
    results = {}
    for name in ("a2b", "b2a", "serving_default"):
        for key in ("x5", "x1", "odd"):
            for output, value in sig[name](images=tf.constant(data[key])).items():
                results[f"{name}/{key}/{output}"] = value.numpy()
    for name in ("a2b_float", "b2a_float"):
        for output, value in sig[name](images_float=tf.constant(data["f5"])).items():
            results[f"{name}/f5/{output}"] = value.numpy()
    fake = sig["a2b_float"](images_float=tf.constant(data["f5"]))["images_float"]
    results["cycle"] = sig["b2a_float"](images_float=fake)["images_float"].numpy()
    results["metadata"] = np.array(m.metadata.numpy())
    results["signatures"] = np.array(sorted(sig.keys()))
    specs = {name: {k: [v.shape.as_list(), v.dtype.name]
                    for k, v in fn.structured_input_signature[1].items()}
             for name, fn in sig.items()}
    results["specs"] = np.array(json.dumps(specs, sort_keys=True))
    project = [n for n in ("networks", "export", "training", "fq_keras", "datasets")
               if n in sys.modules]
    results["project_modules"] = np.array(project, dtype=str)
    np.savez(sys.argv[3], **results)
""")


def run_module(generator, inputs):
    """The same calls as LOADER on an export.Generator (in-memory or loaded)."""
    out = {}
    for name in ("a2b", "b2a", "serving_default"):
        for key in ("x5", "x1", "odd"):
            for output, value in generator(name, images=inputs[key]).items():
                out[f"{name}/{key}/{output}"] = value
    for name in ("a2b_float", "b2a_float"):
        for output, value in generator(name, images_float=inputs["f5"]).items():
            out[f"{name}/f5/{output}"] = value
    return out


def write_run(run_dir):
    """A U-GAT-IT run folder as the training loop leaves it (training_options.json, and the
    trainer's whole state in checkpoints/ckpt-2) after ITERATIONS eager iterations of its
    trainer on the run's data."""
    options = Options(**TINY)
    options.save(run_dir)
    keras.utils.set_random_seed(options.seed)
    trainer = UGATITTrainer(build_networks(options), (SIZE, SIZE, 3), options.total_iterations,
                            weights=options.loss_weights(), learning_rate=options.lr)
    batch = options.minibatch
    for a, b in open_pair(options).train_pipeline(SIZE, batch).take(ITERATIONS):
        trainer.train_step((a, b), batch)
        trainer.finish_step()
    return Checkpoints(trainer.checkpoint_state(), run_dir).save(ITERATIONS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ugatit_export")
    run_dir = str(root / "run")
    os.makedirs(run_dir)
    checkpoint = write_run(run_dir)
    path, generator = export_run_folder(run_dir)
    summary = {"checkpoint": checkpoint, "export": path}
    inputs = make_inputs()
    np.savez(str(root / "inputs.npz"), **inputs)
    out = str(root / "results.npz")
    # -I: isolated mode, neither the working directory nor PYTHONPATH on sys.path.
    proc = subprocess.run([sys.executable, "-I", "-c", LOADER, summary["export"],
                           str(root / "inputs.npz"), out], cwd=str(root), capture_output=True,
                          text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        results = {k: f[k] for k in f.files}
    _, nets = load_networks(run_dir)
    # The functions traced in memory, run with the graph optimizer on and off (the setting
    # applies per call: the runtime instantiates a function per optimizer configuration).
    memory = run_module(generator, inputs)
    with graph_optimizer_off():
        exact = run_module(generator, inputs)
    return dict(root=root, run_dir=run_dir, summary=summary, inputs=inputs, results=results,
                nets=nets, memory=memory, exact=exact)


@pytest.fixture(scope="module")
def saved(trained):
    """export.Generator of the training's SavedModel, loaded once for the module."""
    return export.load_generator(trained["summary"]["export"])


def eager(G, images_float):
    """(images_float, images, heatmap, cam_logit) of the Keras generator as training shows them."""
    image, cam_logit, heatmap = (t.numpy() for t in G(images_float))
    return {"images_float": np.clip(image, -1, 1), "images": to_uint8(image),
            "heatmap": numpy_cam_heatmap(heatmap, image.shape[1]), "cam_logit": cam_logit}


def as_float(images):
    """uint8 -> [-1, 1] as the test pipeline does (at the training size the resize is the
    identity)."""
    return (images.astype(np.float32) * np.float32(2.0 / 255.0) - 1.0).astype(np.float32)

#----------------------------------------------------------------------------
# The SavedModel in a fresh process.


def test_run_folder_exports_both_generators(trained):
    summary, run_dir = trained["summary"], trained["run_dir"]
    assert summary["export"] == os.path.join(run_dir, "export")
    assert export.path_kind(summary["export"])[0] == "savedmodel"
    meta = json.loads(trained["results"]["metadata"].item())
    assert {k: meta[k] for k in ("family", "class", "resolution", "light", "ngf", "n_blocks",
                                 "iterations", "kimg", "source", "tool")} == {
        "family": "ugatit", "class": "networks.ugatit.UGATITGenerator", "resolution": SIZE,
        "light": True, "ngf": 4, "n_blocks": 1, "iterations": ITERATIONS, "kimg": 0.004,
        "source": f"{run_dir} ({summary['checkpoint']})", "tool": "run_translation.py"}


def test_fresh_process_never_imported_the_project(trained):
    assert trained["results"]["project_modules"].size == 0


def test_signatures_and_their_inputs(trained):
    results = trained["results"]
    assert list(results["signatures"]) == ["a2b", "a2b_float", "b2a", "b2a_float",
                                           "serving_default"]
    specs = json.loads(results["specs"].item())
    for name in ("a2b", "b2a", "serving_default"):
        assert specs[name] == {"images": [[None, None, None, 3], "uint8"]}
    for name in ("a2b_float", "b2a_float"):
        assert specs[name] == {"images_float": [[None, SIZE, SIZE, 3], "float32"]}
    for key, shape in (("x5", 5), ("x1", 1), ("odd", 3)):
        out = {k: results[f"a2b/{key}/{k}"] for k in OUTPUTS}
        assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
            "images": ((shape, SIZE, SIZE, 3), np.uint8),
            "images_float": ((shape, SIZE, SIZE, 3), np.float32),
            "heatmap": ((shape, SIZE, SIZE, 3), np.uint8),
            "cam_logit": ((shape, 2), np.float32)}


@pytest.mark.parametrize("name", ["a2b", "b2a", "serving_default", "a2b_float", "b2a_float"])
def test_savedmodel_in_a_fresh_process_equals_the_in_memory_functions(trained, name):
    results, memory = trained["results"], trained["memory"]
    keys = [k for k in memory if k.startswith(name + "/")]
    assert len(keys) == (4 if name.endswith("_float") else 12)
    for key in keys:
        if results[key].dtype == np.uint8:
            np.testing.assert_array_equal(results[key], memory[key], err_msg=key)
        else:   # images in [-1, 1], CAM logits O(1): 1e-5 is ~80 ulp(1) of the loaded
            # graph's own optimizer rewrites (other fusions, summation orders) of the same ops
            np.testing.assert_allclose(results[key], memory[key], rtol=0, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name, generator", [("a2b", "genA2B"), ("b2a", "genB2A")])
def test_export_functions_compute_the_keras_generators(trained, name, generator):
    """With the graph optimizer off, the signatures equal the eager generator and the training
    strips' heatmap exactly; with it on, the fresh process stays within 1e-5 of them."""
    G, inputs, results = trained["nets"][generator], trained["inputs"], trained["results"]
    for key, x in (("x5", as_float(inputs["x5"])), ("f5", inputs["f5"])):
        signature = name if key == "x5" else name + "_float"
        reference = eager(G, x)
        for output in OUTPUTS:
            got = trained["exact"][f"{signature}/{key}/{output}"]
            if got.dtype == np.uint8:
                np.testing.assert_array_equal(got, reference[output], err_msg=output)
            else:   # the eager kernels on the same shapes: 1e-6 is ~8 ulp of O(1) values
                np.testing.assert_allclose(got, reference[output], rtol=0, atol=1e-6,
                                           err_msg=output)
        for output in ("images_float", "cam_logit"):   # with the rewrites: ~80 ulp(1)
            np.testing.assert_allclose(results[f"{signature}/{key}/{output}"], reference[output],
                                       rtol=0, atol=1e-5, err_msg=output)
    # The two directions are different networks.
    assert np.abs(results["a2b/x5/images_float"] - results["b2a/x5/images_float"]).max() > 1e-3


def test_serving_default_is_a2b(trained):
    results = trained["results"]
    for key in ("x5", "odd"):
        for output in OUTPUTS:
            np.testing.assert_array_equal(results[f"serving_default/{key}/{output}"],
                                          results[f"a2b/{key}/{output}"])


def test_batch_of_one_and_of_five(trained):
    results = trained["results"]
    for name in ("a2b", "b2a"):
        one, five = ({k: results[f"{name}/{key}/{k}"] for k in OUTPUTS} for key in ("x1", "x5"))
        # Different batch sizes run different oneDNN kernels: equal up to float rounding (a
        # few ulp per op, grown through the layers: 1e-5 is ~80 ulp(1) of O(1) values).
        for output in ("images_float", "cam_logit"):
            np.testing.assert_allclose(one[output][0], five[output][0], rtol=0, atol=1e-5)
        assert np.abs(one["images"][0].astype(int) - five["images"][0]).max() <= 1
        # Every image is translated on its own (per-sample normalisation).
        assert np.abs(five["images_float"][1] - five["images_float"][0]).max() > 1e-3


def test_float_signatures_chain_into_the_cycle(trained):
    nets, f5 = trained["nets"], trained["inputs"]["f5"]
    cycle = nets["genB2A"](nets["genA2B"](f5)[0])[0].numpy()
    # Two translations, SavedModel (optimizer on) against eager: ~80 ulp(1) in [-1, 1].
    np.testing.assert_allclose(trained["results"]["cycle"], cycle, rtol=0, atol=1e-5)


def test_other_sizes_are_resized_as_the_test_pipeline_does(trained, saved, tmp_path):
    """20x28 images: a2b equals a2b_float of the test pipeline's (datasets/unpaired.py) resized
    images, and the eager generator on them."""
    odd = trained["inputs"]["odd"]
    root = tmp_path / "pair"
    for folder, images in (("trainA", odd), ("trainB", odd), ("testA", odd)):
        (root / folder).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / folder / f"{i}.png")
    pair = open_unpaired(str(root))
    resized = next(iter(pair.test_pipeline("A", SIZE, batch_size=len(odd)))).numpy()
    from_float = saved("a2b_float", images_float=resized)
    results = trained["results"]
    for output in OUTPUTS:
        if from_float[output].dtype == np.uint8:
            np.testing.assert_array_equal(results[f"a2b/odd/{output}"], from_float[output])
        else:   # the same resize in both SavedModel paths: ~8 ulp of O(1) values
            np.testing.assert_allclose(results[f"a2b/odd/{output}"], from_float[output], rtol=0,
                                       atol=1e-6)
    reference = eager(trained["nets"]["genA2B"], resized)
    # SavedModel (optimizer on) against eager: ~80 ulp(1) in [-1, 1].
    np.testing.assert_allclose(results["a2b/odd/images_float"], reference["images_float"],
                               rtol=0, atol=1e-5)

#----------------------------------------------------------------------------
# The heatmap colouring.


def numpy_cam_heatmap(heatmap, size):
    """The official `cam()` in numpy: per image min-max normalise -> uint8 -> bilinear resize
    to size x size -> JET (N, h, w, 1) -> uint8 (N, size, size, 3)."""
    x = np.asarray(heatmap, np.float32)
    x = x - x.min(axis=(1, 2, 3), keepdims=True)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    x = np.where(peak > 0, x / np.where(peak > 0, peak, 1.0), 0.0)
    x = np.uint8(255 * x)
    resized = tf.image.resize(x.astype(np.float32), [size, size], "bilinear").numpy()
    resized = np.clip(np.rint(resized), 0, 255)
    return np.uint8(np.rint(255 * jet_colormap(resized[..., 0])))


def test_jet_table_is_the_training_colour_map():
    table = jet_table()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    np.testing.assert_array_equal(table, np.uint8(np.rint(255 * jet_colormap(np.arange(256)))))
    # OpenCV's COLORMAP_JET ends: dark blue at 0, dark red at 255.
    assert table[0].tolist() == [0, 0, 128] and table[255].tolist() == [128, 0, 0]


def test_graph_heatmap_equals_the_training_strips_heatmap():
    rng = np.random.RandomState(5)
    maps = rng.randn(4, 4, 4, 1).astype(np.float32) * 3
    maps[1] = 2.5                                   # constant: all zero -> dark blue
    maps[2] = np.abs(maps[2]) * 1e3                 # large values
    maps[3, 1, 2, 0] = 100.0                        # one peak
    expected = numpy_cam_heatmap(maps, SIZE)
    traced = tf.function(lambda x: cam_heatmap(x, SIZE))
    for got in (cam_heatmap(tf.constant(maps), SIZE).numpy(), traced(tf.constant(maps)).numpy()):
        assert got.shape == (4, SIZE, SIZE, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    assert (expected[1] == [0, 0, 128]).all()
    # The peak at input pixel (1, 2) is the red end of the map (output rows 4-7, columns
    # 8-11); the cold rest is blue.
    red, blue = expected[3, ..., 0].astype(int), expected[3, ..., 2].astype(int)
    assert np.unravel_index(np.argmax(red - blue), red.shape) in {
        (r, c) for r in range(4, 8) for c in range(8, 12)}
    assert red[5:7, 9:11].min() == 255 and blue[0, 0] > 100 and red[0, 0] == 0

#----------------------------------------------------------------------------
# run_translation.py from a SavedModel.




def png_files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files)


def source_images(folder):
    """Three images: two larger than the training size, one not square."""
    a, _ = synthetic.shapes2cartoon(2, 32, seed=3, split="test")
    odd = np.random.RandomState(4).randint(0, 256, (24, 20, 3)).astype(np.uint8)
    os.makedirs(os.path.join(folder, "sub"))
    for name, image in (("a.png", a[0]), ("sub/b.jpg", a[1]), ("c.png", odd)):
        Image.fromarray(image).save(os.path.join(folder, name))
    return folder


@pytest.mark.parametrize("direction, folder", [("A2B", "run"), ("B2A", "checkpoint")])
def test_translation_from_the_savedmodel_equals_the_run_folder(trained, saved, tmp_path,
                                                               capsys, direction, folder):
    """The SavedModel writes the same PNGs as the functions traced in memory from the run
    folder (A2B) and from a --checkpoint of it (B2A)."""
    src = source_images(str(tmp_path / "src"))
    sources = {folder: trained["run_dir"], "savedmodel": trained["summary"]["export"]}
    for name, network in sources.items():
        argv = ["--network", network, "--input", src, "--outdir", str(tmp_path / name),
                "--direction", direction, "--strips", "--batch", "2"]
        if name == "checkpoint":
            argv += ["--checkpoint", trained["summary"]["checkpoint"]]
        status, out, err = run_cli(run_translation, argv, capsys)
        assert status == 0, err
        assert f"Translated 3 images {direction} at {SIZE}x{SIZE}" in out
    files = png_files(str(tmp_path / folder))
    assert files == sorted(["a.png", "c.png", os.path.join("sub", "b.png"),
                            os.path.join("strips", "a.png"), os.path.join("strips", "c.png"),
                            os.path.join("strips", "sub", "b.png")])
    assert png_files(str(tmp_path / "savedmodel")) == files
    for f in files:
        assert (tmp_path / "savedmodel" / f).read_bytes() == \
            (tmp_path / folder / f).read_bytes(), f
    # The translation is the SavedModel's a2b / b2a of the image as read from disk.
    image = np.asarray(Image.open(os.path.join(src, "c.png")))
    expected = saved(direction.lower(), images=image[np.newaxis])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "savedmodel" / "c.png")),
                                  expected["images"][0])
    strip_image = np.asarray(Image.open(tmp_path / "savedmodel" / "strips" / "c.png"))
    np.testing.assert_array_equal(strip_image[3 * SIZE:4 * SIZE], expected["heatmap"][0])


def test_translation_strips_are_the_official_panels(trained, tmp_path):
    """run_translation's strips (through the export functions) equal the training strips'
    translation_panels of the eager generators (graph optimizer off, one image per batch as
    here: exact; batches of other sizes may run other kernels, which round differently)."""
    src = source_images(str(tmp_path / "src"))
    nets = trained["nets"]
    with graph_optimizer_off():
        translator = run_translation.load_translator(trained["run_dir"])
        run_translation.translate_folder(translator, src, str(tmp_path / "out"), "B2A",
                                         strips=True, batch=1, log=quiet)
    image = np.asarray(Image.open(os.path.join(src, "a.png")))
    x = tf.image.resize(image, [SIZE, SIZE], "bilinear", antialias=True).numpy()
    x = (x * (2.0 / 255.0) - 1.0)[np.newaxis].astype(np.float32)
    expected = strip(translation_panels(nets["genB2A"], nets["genA2B"], x))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "strips" / "a.png")),
                                  expected)

#----------------------------------------------------------------------------
# Other sources: converted weights (full mode), mirrored variables, run_export.py.


_PAIRS = {}


def tiny_pair(light, seed, strategy=None):
    """Two tiny generators (built once per light, seed and strategy for the module; exports
    copy them and leave them unchanged)."""
    key = (light, seed, id(strategy))
    if key not in _PAIRS:
        _PAIRS[key] = _make_tiny_pair(light, seed, strategy)
    return _PAIRS[key]


def _make_tiny_pair(light, seed, strategy):
    import keras
    keras.utils.set_random_seed(seed)
    make = lambda: ugatit.UGATITGenerator(ngf=2, n_blocks=1, light=light, img_size=SIZE)  # noqa
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:   # the variables are created in build()
        pair = GeneratorPair(make(), make())
        for G in pair:
            G.build((None, SIZE, SIZE, 3))
    return pair


_LOADED = {}


def saved_model(path):
    """tf.saved_model.load(path), once per SavedModel of the module (every test writes its
    own folders, none is rewritten)."""
    if path not in _LOADED:
        _LOADED[path] = tf.saved_model.load(path)
    return _LOADED[path]


def serve(path, name, images_float):
    loaded = saved_model(path)
    return loaded.signatures[name](images_float=tf.constant(images_float))["images_float"].numpy()


def test_converted_full_mode_generators_export(tmp_path):
    pair = tiny_pair(light=False, seed=3)
    folder = convert.save_networks(str(tmp_path / "converted"), genA2B=pair.genA2B,
                                   genB2A=pair.genB2A)
    path = export.export_run(folder)
    assert path == os.path.join(folder, "export")
    x = np.random.RandomState(6).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    for name, G in (("a2b_float", pair.genA2B), ("b2a_float", pair.genB2A)):
        # SavedModel (optimizer on) against eager: ~80 ulp(1) in [-1, 1].
        np.testing.assert_allclose(serve(path, name, x), G(x)[0].numpy(), rtol=0, atol=1e-5)
    meta = json.loads(saved_model(path).metadata.numpy())
    assert (meta["light"], meta["resolution"], meta["family"]) == (False, SIZE, "ugatit")
    only_one = convert.save_networks(str(tmp_path / "one"), genA2B=pair.genA2B)
    with pytest.raises(ExportError, match="genB2A missing.*Convert both generators"):
        export.export_run(only_one)
    assert not os.path.exists(os.path.join(only_one, "export"))


def test_generators_with_mirrored_variables(tmp_path, two_replica_strategy):
    pair = tiny_pair(light=True, seed=4, strategy=two_replica_strategy)
    assert isinstance(pair.genA2B.variables[0].value, tf.distribute.DistributedValues)
    path = export.export_generator(pair, str(tmp_path / "mirrored"))
    x = np.random.RandomState(7).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_allclose(serve(path, "b2a_float", x), pair.genB2A(x)[0].numpy(), rtol=0,
                               atol=1e-5)   # SavedModel against eager: ~80 ulp(1) in [-1, 1]


def test_light_mode_exports_at_another_size_full_mode_does_not(tmp_path):
    light = tiny_pair(light=True, seed=5)
    path = export.export_generator({"genA2B": light.genA2B, "genB2A": light.genB2A},
                                   str(tmp_path / "light24"), family="ugatit", size=24)
    x = np.random.RandomState(8).uniform(-1, 1, (2, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(serve(path, "a2b_float", x), light.genA2B(x)[0].numpy(), rtol=0,
                               atol=1e-5)   # SavedModel against eager: ~80 ulp(1) in [-1, 1]
    full = tiny_pair(light=False, seed=5)
    with pytest.raises(ExportError, match="full-mode U-GAT-IT translates only 16x16"):
        export.export_generator(full, str(tmp_path / "full24"), size=24)
    assert not os.path.exists(tmp_path / "full24")


@pytest.mark.parametrize("network, settings, message", [
    ("pair", {"size": 10}, "divisible by 4"),
    ("pair", {"noise_mode": "const"}, "noise_mode: not a U-GAT-IT export setting"),
    ("one", {}, "genB2A missing"),
    ("mixed", {}, "differ; export the two generators of one U-GAT-IT"),
])
def test_bad_exports_fail_before_writing(tmp_path, network, settings, message):
    pair = tiny_pair(light=True, seed=6)
    networks = {"pair": pair, "one": {"genA2B": pair.genA2B},
                "mixed": GeneratorPair(pair.genA2B, tiny_pair(light=False, seed=6).genB2A)}
    with pytest.raises(ExportError, match=message):
        export.export_generator(networks[network], str(tmp_path / "x"), family="ugatit",
                                **settings)
    assert os.listdir(tmp_path) == []


def test_run_export_cli_from_a_checkpoint(trained, tmp_path, capsys):
    out_dir = str(tmp_path / "e")
    status, out, err = run_cli(run_export, ["--network", trained["summary"]["checkpoint"],
                                            "--outdir", out_dir], capsys)
    assert status == 0, err
    assert f"Exported ugatit model ({SIZE}x{SIZE} images) to {out_dir}" in out
    assert "signatures['serving_default'](images=...)" in out
    generator = export.load_generator(out_dir)
    meta = generator.metadata
    assert meta["source"].endswith("ckpt-2)") and meta["iterations"] == ITERATIONS
    x = trained["inputs"]["x5"]
    np.testing.assert_array_equal(generator("b2a", images=x)["images"],
                                  trained["results"]["b2a/x5/images"])

#----------------------------------------------------------------------------
# Bad input: one clear line.


def foreign_savedmodel(path):
    """A SavedModel of another kind: a z -> images serving_default and stylegan2 metadata."""
    module = tf.Module()
    module.metadata = tf.Variable(json.dumps({"family": "stylegan2"}))
    module.serve = tf.function(lambda z: {"images": z * 2.0},
                               input_signature=[tf.TensorSpec([None, 4], tf.float32, name="z")])
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def test_bad_input_gives_one_clear_line(trained, saved, tmp_path, capsys):
    src = source_images(str(tmp_path / "src"))
    path = trained["summary"]["export"]
    other = foreign_savedmodel(str(tmp_path / "stylegan2"))
    cases = [
        (run_translation, ["--network", other, "--input", src, "--outdir", "{out}"],
         "is a stylegan2 SavedModel without the U-GAT-IT signatures (a2b, b2a"),
        (run_translation, ["--network", path, "--checkpoint", trained["summary"]["checkpoint"],
                           "--input", src, "--outdir", "{out}"],
         "--checkpoint applies to run folders"),
        (run_translation, ["--network", path, "--resolution", "24", "--input", src,
                           "--outdir", "{out}"], f"translates {SIZE}x{SIZE} images"),
        (run_translation, ["--network", str(tmp_path), "--input", src, "--outdir", "{out}"],
         "neither a U-GAT-IT run folder"),
        (run_export, ["--network", trained["run_dir"], "--noise-mode", "none", "--outdir", "{out}"],
         "noise_mode: not a U-GAT-IT export setting"),
        (run_generator, ["generate-images", "--network", path, "--seeds", "1",
                         "--outdir", "{out}"], "a ugatit model: use run_translation.py"),
    ]
    for module, argv, message in cases:
        out = str(tmp_path / "out")
        status, stdout, err = run_cli(module, [a.format(out=out) for a in argv], capsys)
        assert status == 2, (argv, err)
        assert err.count("\n") == 1 and err.startswith(f"{module.__name__}.py: error: "), err
        assert message in err and "Traceback" not in err + stdout, (message, err)
        assert not os.path.exists(out)
    with pytest.raises(ValueError, match=r"missing \['images'\]"):
        saved("a2b", images_float=trained["inputs"]["f5"])
