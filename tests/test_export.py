"""export: StyleGAN-family SavedModels against the in-memory generators.

The SavedModels are loaded once, in a fresh Python process that imports only TensorFlow and
numpy. Their outputs are compared with the in-memory generators run through the same functions
(`export.build_module`, what run_generator.py uses for checkpoints), and those functions with
the Keras generators' eager calls. The second comparison runs with TensorFlow's graph optimizer
(grappler) off: its arithmetic rewrites and op fusions change float results of any traced
function by ~1e-5 against eager execution at 64x64, which is TensorFlow's doing, not the
export's; with it off, the export functions reproduce the eager generator exactly.
"""

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import export
from export import ExportError
from networks import convert, progan, stylegan, stylegan2

Z_DIM = 16
PSIS = (1.0, 0.7, 0.0)


def randomise_buffers(G, seed):
    """Non-zero noise strengths and a random dlatent_avg: const noise and truncation matter."""
    rng = np.random.RandomState(seed)
    for v in G.weights:
        if v.path.endswith("strength") or (v.path.endswith("bias") and "mapping" not in v.path):
            v.assign(rng.uniform(0.1, 0.5, v.shape).astype(np.float32))
    if hasattr(G, "dlatent_avg"):
        G.dlatent_avg.assign(rng.randn(*G.dlatent_avg.shape).astype(np.float32))
    return G


def make_generators():
    small = dict(mapping_layers=2, fmap_base=64, fmap_max=16, seed=1)
    return {
        "stylegan2": stylegan2.Generator(z_dim=Z_DIM, w_dim=Z_DIM, resolution=16, **small),
        "stylegan2_cond": stylegan2.Generator(z_dim=Z_DIM, w_dim=Z_DIM, c_dim=3, resolution=8,
                                              **small),
        # 64x64: 10 dlatent layers, so the official cutoff 8 leaves the last two untruncated.
        "stylegan": stylegan.Generator(z_dim=Z_DIM, w_dim=Z_DIM, mapping_fmaps=Z_DIM,
                                       resolution=64, **small),
        "progan": progan.Generator(resolution=8, latent_size=Z_DIM, fmap_base=64, fmap_max=16),
        # SQ-GAN: w quantised with a 64-entry codebook of 4-d codes (4 sub-vectors per w).
        "stylegan2_sq": stylegan2.Generator(z_dim=Z_DIM, w_dim=Z_DIM, resolution=8,
                                            sq_num_codes=64, **small),
    }


# name -> (generator key, export settings, keyword arguments of the in-memory call)
EXPORTS = {
    "stylegan2": ("stylegan2", {}, {"noise_mode": "const"}),
    "stylegan2_cond": ("stylegan2_cond", {}, {"noise_mode": "const"}),
    "stylegan": ("stylegan", {}, {"noise_mode": "const", "truncation_cutoff": 8}),
    # A progressive stage mid-fade: the 32x32 network fading in over the 16x16 one.
    "stylegan_stage": ("stylegan", {"resolution": 32, "lod": 1.25},
                       {"noise_mode": "const", "truncation_cutoff": 8, "resolution": 32,
                        "lod": 1.25}),
    "progan": ("progan", {}, {}),
    "stylegan2_sq": ("stylegan2_sq", {}, {"noise_mode": "const"}),
}


def inputs(name, c_dim):
    rng = np.random.RandomState(7)
    z = rng.randn(7, Z_DIM).astype(np.float32)
    labels = np.eye(c_dim, dtype=np.float32)[rng.randint(c_dim, size=7)] if c_dim else None
    return z, labels


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
        z = tf.constant(data["z"])
        extra = {"labels": tf.constant(data["labels"])} if "labels" in data else {}
        psis = [1.0] if case["progan"] else case["psis"]
        for psi in psis:
            p = tf.constant(psi, tf.float32)
            out = sig["serving_default"](z=z, truncation_psi=p, **extra)
            results[f"{name}/{psi}/images"] = out["images"].numpy()
            results[f"{name}/{psi}/images_float"] = out["images_float"].numpy()
            one = sig["serving_default"](z=z[:1], truncation_psi=p,
                                         **{k: v[:1] for k, v in extra.items()})
            results[f"{name}/{psi}/batch1"] = one["images_float"].numpy()
            if not case["progan"]:
                w = sig["mapping"](z=z, truncation_psi=p, **extra)["w"]
                results[f"{name}/{psi}/w"] = w.numpy()
                results[f"{name}/{psi}/synthesis"] = sig["synthesis"](w=w)["images"].numpy()
        results[f"{name}/metadata"] = np.array(m.metadata.numpy())
        if not case["progan"]:
            results[f"{name}/dlatent_avg"] = m.dlatent_avg.numpy()
        if hasattr(m, "sq_codebook"):
            results[f"{name}/sq_codebook"] = m.sq_codebook.numpy()
        results[f"{name}/signatures"] = np.array(sorted(sig.keys()))
    project = [n for n in ("networks", "export", "training", "fq_keras", "datasets")
               if n in sys.modules]
    results["project_modules"] = np.array(project, dtype=str)
    np.savez(sys.argv[2], **results)
""")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Generators, their exports, and the exports' outputs computed in a fresh process."""
    root = tmp_path_factory.mktemp("export")
    generators = {k: randomise_buffers(G, i) for i, (k, G) in enumerate(make_generators().items())}
    # One module per export (what export_generator builds and saves) is saved, and its
    # functions run in memory with the graph optimizer on and off: the setting applies per
    # call (the runtime instantiates a function once per optimizer configuration).
    modules = {name: export.build_module(generators[key], **settings)
               for name, (key, settings, _) in EXPORTS.items()}
    cases = {}
    for name, (key, settings, _) in EXPORTS.items():
        G = generators[key]
        path = export.save_module(modules[name], str(root / name))
        z, labels = inputs(name, G.c_dim)
        data = {"z": z} if labels is None else {"z": z, "labels": labels}
        np.savez(str(root / f"{name}.npz"), **data)
        cases[name] = {"path": path, "inputs": str(root / f"{name}.npz"), "psis": list(PSIS),
                       "progan": key == "progan"}
    out = str(root / "results.npz")
    # -I: isolated mode, neither the working directory nor PYTHONPATH on sys.path.
    proc = subprocess.run([sys.executable, "-I", "-c", LOADER, json.dumps(cases), out],
                          cwd=str(root), capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
        results = {k: f[k] for k in f.files}
    memory = {name: run_module(modules[name], generators[EXPORTS[name][0]], name)
              for name in EXPORTS}
    with graph_optimizer_off():
        exact = {name: run_module(modules[name], generators[EXPORTS[name][0]], name)
                 for name in EXPORTS}
    return {"generators": generators, "results": results, "cases": cases, "root": root,
            "memory": memory, "exact": exact}


@contextlib.contextmanager
def graph_optimizer_off():
    previous = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": bool(previous)})


def export_run_folder(run_dir):
    """(<run>/export, export.Generator in memory): export.export_run(run_dir) and
    export.load_generator(run_dir) (what run_export.py and run_generator.py do with a run
    folder) with one module, built once, saved and kept in memory."""
    network, family, settings, metadata = export.load_network(run_dir)
    module = export.build_module(network, family, **settings)
    module.update_metadata(metadata)
    path = export.save_module(module, export.default_export_dir(run_dir))
    return path, export.Generator.from_module(module, f"{run_dir} (run)")


def run_module(module, G, name):
    """serving_default outputs of G's in-memory export module for the test inputs, per psi."""
    signatures = module.signatures()
    z, labels = inputs(name, G.c_dim)
    extra = {} if labels is None else {"labels": tf.constant(labels)}
    return {psi: {k: v.numpy() for k, v in signatures["serving_default"](
        z=tf.constant(z), truncation_psi=tf.constant(psi), **extra).items()}
        for psi in ([1.0] if name == "progan" else PSIS)}


def reference(G, name, psi):
    """The in-memory generator's float output for the test inputs, as the export computes it."""
    z, labels = inputs(name, G.c_dim)
    kwargs = dict(EXPORTS[name][2])
    if name != "progan":
        kwargs["truncation_psi"] = psi
    return G(z, labels, **kwargs).numpy()


def to_uint8(x):
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def test_fresh_process_never_imported_the_project(exported):
    assert exported["results"]["project_modules"].size == 0


@pytest.mark.parametrize("name", list(EXPORTS))
def test_savedmodel_in_a_fresh_process_equals_the_in_memory_generator(exported, name):
    results = exported["results"]
    for psi, memory in exported["memory"][name].items():
        got_float = results[f"{name}/{psi}/images_float"]
        got_uint8 = results[f"{name}/{psi}/images"]
        assert got_float.dtype == np.float32 and got_uint8.dtype == np.uint8
        assert got_uint8.shape == got_float.shape[:3] + (3,)
        # Values in [-1, 1]: 1e-5 is ~80 float32 ulp(1) = 1.2e-7, room for the loaded graph's
        # own optimizer rewrites (other fusions, summation orders) of the same ops.
        np.testing.assert_allclose(got_float, memory["images_float"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(got_uint8, memory["images"])


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_functions_compute_the_keras_generator(exported, name):
    """With the graph optimizer off, the signature equals the eager Keras call exactly."""
    G = exported["generators"][EXPORTS[name][0]]
    for psi, out in exported["exact"][name].items():
        x = reference(G, name, psi)
        # The eager kernels on the same shapes: 1e-6 is ~8 ulp(1) for values in [-1, 1].
        np.testing.assert_allclose(out["images_float"], np.clip(x, -1.0, 1.0), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out["images"], to_uint8(x))
    # With it on (the default everywhere), the rewrites stay at float rounding level.
    for psi, out in exported["memory"][name].items():
        x = np.clip(reference(G, name, psi), -1.0, 1.0)
        # ~1e-5 from the rewrites at 64x64 (module docstring), with a 10x margin.
        np.testing.assert_allclose(out["images_float"], x, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(EXPORTS))
def test_batch_of_one_and_of_seven(exported, name):
    results = exported["results"]
    for psi in ([1.0] if name == "progan" else PSIS):
        seven = results[f"{name}/{psi}/images_float"]
        one = results[f"{name}/{psi}/batch1"]
        assert seven.shape[0] == 7 and one.shape[0] == 1
        # Different batch sizes run different oneDNN kernels: equal up to float rounding
        # (per-element differences of a few ulp, grown through the layers; values in [-1, 1]).
        np.testing.assert_allclose(one[0], seven[0], rtol=0, atol=1e-4)


def test_output_sizes_follow_the_stage(exported):
    results = exported["results"]
    assert results["stylegan/1.0/images"].shape == (7, 64, 64, 3)
    assert results["stylegan_stage/1.0/images"].shape == (7, 32, 32, 3)
    meta = json.loads(results["stylegan_stage/metadata"].item())
    assert (meta["resolution"], meta["network_resolution"], meta["lod"]) == (32, 64, 1.25)
    assert meta["num_ws"] == 10 and meta["num_ws_used"] == 8


@pytest.mark.parametrize("name", ["stylegan2", "stylegan2_cond", "stylegan_stage"])
def test_psi_zero_gives_the_average_image_for_every_z(exported, name):
    """Truncation covers every layer used: psi = 0 -> synthesis(dlatent_avg) for all z."""
    G = exported["generators"][EXPORTS[name][0]]
    results = exported["results"]
    images = results[f"{name}/0.0/images_float"]
    # The same w for all 7 latents. Rows of one batch may take different kernel paths in oneDNN
    # (main loop or tail, thread partition) and round differently, and StyleGAN v1's instance
    # normalisation divides those differences by small per-channel deviations (see below): the
    # bound is the graph rewrites' below (1e-4; 1.07e-5 seen with oneDNN on), still 100x under
    # what a truncation that missed a layer leaves (> 0.01 at psi = 1, the last line).
    assert np.ptp(images, axis=0).max() < 1e-4
    # The eager synthesis of w_avg for a batch of 7 too: the same kernels on the same shapes (a
    # batch of 1 sums in other orders, and StyleGAN v1's instance normalisation divides such
    # rounding differences by small per-channel deviations: up to 2.4e-5 measured; with the
    # same batch the graph functions give the eager values bit for bit, oneDNN on and off).
    w_avg = np.tile(G.dlatent_avg.numpy()[None, None], [images.shape[0], G.num_ws, 1])
    stage_args = {k: v for k, v in EXPORTS[name][2].items() if k in ("resolution", "lod")}
    average = np.clip(G.synthesis(w_avg, noise_mode="const", **stage_args).numpy(), -1, 1)
    # Graph (optimizer off) against eager, same kernels: rounding only (1e-5 = 80 ulp(1)).
    np.testing.assert_allclose(exported["exact"][name][0.0]["images_float"], average,
                               rtol=0, atol=1e-5)
    # and with the graph optimizer's rewrites (~1e-5, see the module docstring) on top
    np.testing.assert_allclose(images, average, rtol=0, atol=1e-4)
    assert np.ptp(results[f"{name}/1.0/images_float"], axis=0).max() > 0.01


def test_stylegan_v1_truncates_the_first_eight_layers_only(exported):
    """Official StyleGAN cutoff 8: at 64x64 (10 layers) w[:, 8:] keeps its own values."""
    G = exported["generators"]["stylegan"]
    results = exported["results"]
    w_avg = G.dlatent_avg.numpy()
    w1, w07, w0 = (results[f"stylegan/{psi}/w"] for psi in PSIS)
    # w is O(1) (normalised mapping outputs): 1e-6 is ~8 ulp of 1, for psi = 0 (w_avg + 0 *
    # (w - w_avg) rounds once) and the untruncated layers (the same mapping ops); the lerp
    # against numpy's float64 arithmetic rounds a few times more (1e-5).
    np.testing.assert_allclose(w0[:, :8], np.broadcast_to(w_avg, w0[:, :8].shape), atol=1e-6)
    np.testing.assert_allclose(w0[:, 8:], w1[:, 8:], rtol=0, atol=1e-6)
    np.testing.assert_allclose(w07[:, :8], w_avg + 0.7 * (w1[:, :8] - w_avg), atol=1e-5)
    assert np.ptp(results["stylegan/0.0/images_float"], axis=0).max() > 0.01  # fine styles vary
    meta = json.loads(results["stylegan/metadata"].item())
    assert meta["truncation_cutoff"] == 8 and meta["family"] == "stylegan"


def test_stylegan2_truncates_every_layer(exported):
    G = exported["generators"]["stylegan2"]
    results = exported["results"]
    w1, w07 = results["stylegan2/1.0/w"], results["stylegan2/0.7/w"]
    w_avg = G.dlatent_avg.numpy()
    # O(1) values: the lerp rounds a few times against numpy (1e-5 = 80 ulp of 1); the
    # mapping is the same ops in the SavedModel and eagerly (1e-6 = 8 ulp).
    np.testing.assert_allclose(w07, w_avg + 0.7 * (w1 - w_avg), rtol=0, atol=1e-5)
    z, _ = inputs("stylegan2", 0)
    np.testing.assert_allclose(w1, G.mapping(z).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(results["stylegan2/dlatent_avg"], w_avg)
    assert json.loads(results["stylegan2/metadata"].item())["truncation_cutoff"] is None


@pytest.mark.parametrize("name", ["stylegan2", "stylegan2_cond", "stylegan", "stylegan_stage",
                                  "stylegan2_sq"])
def test_serving_default_is_synthesis_of_mapping(exported, name):
    results = exported["results"]
    for psi in PSIS:
        np.testing.assert_array_equal(results[f"{name}/{psi}/synthesis"],
                                      results[f"{name}/{psi}/images"])


def numpy_style_quantize(w, codebook):
    """Hyperspherical SQ: every 4-d sub-vector of w -> the unit codebook entry nearest its
    direction (largest cosine)."""
    z = w.reshape(-1, codebook.shape[1]).astype(np.float64)
    c = codebook / np.linalg.norm(codebook, axis=1, keepdims=True)
    return c[np.argmax(z @ c.T, axis=1)].reshape(w.shape).astype(np.float32)


def test_style_quantized_generator_applies_its_codebook(exported):
    """SQ-GAN export: `mapping` gives the continuous truncated w; the SavedModel's images are
    the in-memory synthesis of w snapped onto the codebook (numpy), for every psi; psi = 0 gives
    synthesis(sq(dlatent_avg)); `synthesis` is idempotent on quantised w; the codebook is in the
    SavedModel and its settings in the metadata."""
    G = exported["generators"]["stylegan2_sq"]
    results = exported["results"]
    codebook = G.sq.codebook.numpy()
    z, _ = inputs("stylegan2_sq", 0)
    w1 = G.mapping(z).numpy()
    for psi in PSIS:
        w = results[f"stylegan2_sq/{psi}/w"]
        expected_w = w1 if psi == 1.0 else G.truncate(w1, psi).numpy()
        # Continuous W, O(1): the loaded graph's rounding of the same ops (1e-5 = 80 ulp of 1).
        np.testing.assert_allclose(w, expected_w, rtol=0, atol=1e-5)
        quantised = numpy_style_quantize(w, codebook)
        expected = np.clip(G.synthesis(quantised, noise_mode="const").numpy(), -1, 1)
        images = results[f"stylegan2_sq/{psi}/images_float"]
        # [-1, 1] images, batch of 7 in the SavedModel (optimizer on) against eager: ~1e-5.
        np.testing.assert_allclose(images, expected, rtol=0, atol=1e-4)
        plain = np.clip(G.synthesis(w, noise_mode="const").numpy(), -1, 1)
        assert np.abs(plain - images).max() > 1e-2  # without the codebook: other images
    average = numpy_style_quantize(np.tile(G.dlatent_avg.numpy()[None, None], [1, G.num_ws, 1]),
                                   codebook)
    np.testing.assert_allclose(   # as above: rounding ~1e-5 of [-1, 1] images
        results["stylegan2_sq/0.0/images_float"],
        np.broadcast_to(np.clip(G.synthesis(average, noise_mode="const").numpy(), -1, 1),
                        (7, 8, 8, 3)), rtol=0, atol=1e-4)
    loaded = tf.saved_model.load(exported["cases"]["stylegan2_sq"]["path"])
    w = tf.constant(results["stylegan2_sq/0.7/w"])
    once = loaded.signatures["synthesis"](w=w)["images_float"].numpy()
    twice = loaded.signatures["synthesis"](
        w=tf.constant(numpy_style_quantize(w.numpy(), codebook)))["images_float"].numpy()
    # Re-quantising the codes is exact; the two calls' images differ by rounding only.
    np.testing.assert_allclose(twice, once, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(results["stylegan2_sq/sq_codebook"], codebook)
    meta = json.loads(results["stylegan2_sq/metadata"].item())
    assert meta["style_quantization"] == {"num_codes": 64, "code_dim": 4, "hyperspherical": True}
    assert json.loads(results["stylegan2/metadata"].item())["style_quantization"] is None
    assert "stylegan2/sq_codebook" not in results


def test_signatures_and_metadata(exported):
    results = exported["results"]
    assert list(results["stylegan2/signatures"]) == ["mapping", "serving_default", "synthesis"]
    assert list(results["progan/signatures"]) == ["serving_default"]
    meta = json.loads(results["stylegan2_cond/metadata"].item())
    assert {k: meta[k] for k in ("family", "z_dim", "c_dim", "w_dim", "num_ws", "resolution",
                                 "noise_mode", "format")} == {
        "family": "stylegan2", "z_dim": Z_DIM, "c_dim": 3, "w_dim": Z_DIM, "num_ws": 4,
        "resolution": 8, "noise_mode": "const", "format": "fq-gan-generator"}
    loaded = tf.saved_model.load(exported["cases"]["stylegan2_cond"]["path"])
    spec = loaded.signatures["serving_default"].structured_input_signature[1]
    assert {k: (v.shape.as_list(), v.dtype) for k, v in spec.items()} == {
        "z": ([None, Z_DIM], tf.float32), "truncation_psi": ([], tf.float32),
        "labels": ([None, 3], tf.float32)}


def test_conditional_labels_change_the_image_and_must_match_z(exported):
    G = exported["generators"]["stylegan2_cond"]
    loaded = tf.saved_model.load(exported["cases"]["stylegan2_cond"]["path"])
    serve = loaded.signatures["serving_default"]
    z = tf.constant(np.random.RandomState(3).randn(3, Z_DIM).astype(np.float32))
    psi = tf.constant(1.0)
    by_class = [serve(z=z, truncation_psi=psi, labels=tf.one_hot([c] * 3, 3))["images_float"]
                for c in range(3)]
    assert np.abs(by_class[0].numpy() - by_class[1].numpy()).max() > 1e-3
    ref = G(z, tf.one_hot([2] * 3, 3), noise_mode="const").numpy()
    # [-1, 1] images, the SavedModel against eager: 1e-5 = 80 ulp(1) (default rtol 1e-7 adds
    # under 1 ulp).
    np.testing.assert_allclose(by_class[2].numpy(), np.clip(ref, -1, 1), atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="same batch size"):
        serve(z=z, truncation_psi=psi, labels=tf.one_hot([0, 1], 3))


def test_progan_refuses_truncation(exported):
    loaded = tf.saved_model.load(exported["cases"]["progan"]["path"])
    z = tf.zeros([2, Z_DIM])
    loaded.signatures["serving_default"](z=z, truncation_psi=tf.constant(1.0))
    with pytest.raises(tf.errors.InvalidArgumentError, match="no truncation"):
        loaded.signatures["serving_default"](z=z, truncation_psi=tf.constant(0.7))
    meta = json.loads(loaded.metadata.numpy())
    assert meta["truncation"] is False and meta["family"] == "progan"


def test_loaded_generator_handle_calls_by_name(exported):
    gen = export.load_generator(exported["cases"]["stylegan2"]["path"])
    assert (gen.z_dim, gen.c_dim, gen.has_truncation) == (Z_DIM, 0, True)
    z, _ = inputs("stylegan2", 0)
    out = gen("serving_default", z=z, truncation_psi=0.7)
    np.testing.assert_array_equal(out["images"], exported["results"]["stylegan2/0.7/images"])
    with pytest.raises(ValueError, match="missing"):
        gen("serving_default", z=z)

#----------------------------------------------------------------------------
# Sources other than a plain float32 generator.


# Below, SavedModels (graph optimizer on) against eager Keras calls on [-1, 1] images: the same
# float32 ops, fused and summed in other orders, differ by ~1e-6; atol 1e-5 is ~80 ulp(1).


def _tiny_stylegan2(**kwargs):
    return randomise_buffers(stylegan2.Generator(
        z_dim=8, w_dim=8, resolution=8, mapping_layers=1, fmap_base=32, fmap_max=8, seed=3,
        **kwargs), 5)


def _serve(path, z, psi=1.0):
    loaded = tf.saved_model.load(path)
    return loaded.signatures["serving_default"](
        z=tf.constant(z), truncation_psi=tf.constant(psi))["images_float"].numpy()


def test_mixed_precision_generator_exports_in_float32(tmp_path):
    G32 = _tiny_stylegan2()
    z = np.random.RandomState(0).randn(4, 8).astype(np.float32)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        G16 = _tiny_stylegan2()
        for dst, src in zip(G16.variables, G32.variables):
            dst.assign(src)
        half = G16(z, noise_mode="const").numpy()
        path = export.export_generator(G16, str(tmp_path / "mp"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    full = np.clip(G32(z, noise_mode="const").numpy(), -1, 1)
    np.testing.assert_allclose(_serve(path, z), full, rtol=0, atol=1e-5)   # see above
    assert np.abs(np.clip(half, -1, 1) - full).max() > 1e-5  # float16 really differed


def test_generator_with_mirrored_variables(tmp_path, two_replica_strategy):
    with two_replica_strategy.scope():
        G = _tiny_stylegan2()
    assert isinstance(G.dlatent_avg.value, tf.distribute.DistributedValues)
    z = np.random.RandomState(1).randn(3, 8).astype(np.float32)
    path = export.export_generator(G, str(tmp_path / "mirrored"))
    np.testing.assert_allclose(_serve(path, z, 0.5),   # atol: see above _tiny_stylegan2
                               np.clip(G(z, truncation_psi=0.5).numpy(), -1, 1), atol=1e-5)


def test_fused_modconv_generator_gets_a_dynamic_batch(tmp_path):
    G = _tiny_stylegan2(fused_modconv=True)
    serve = tf.saved_model.load(export.export_generator(G, str(tmp_path / "fused"))) \
        .signatures["serving_default"]
    for n in (1, 7):
        z = np.random.RandomState(n).randn(n, 8).astype(np.float32)
        out = serve(z=tf.constant(z), truncation_psi=tf.constant(1.0))["images_float"].numpy()
        np.testing.assert_allclose(out, np.clip(G(z).numpy(), -1, 1), atol=1e-5)  # as above


def test_converted_networks_folder(tmp_path):
    G = _tiny_stylegan2()
    folder = convert.save_networks(str(tmp_path / "converted"), G=G)
    assert export.path_kind(folder)[0] == "converted"
    gen = export.load_generator(folder)
    z = np.random.RandomState(2).randn(2, 8).astype(np.float32)
    # in-memory functions (optimizer on) against eager: as above
    np.testing.assert_allclose(gen("serving_default", z=z, truncation_psi=0.5)["images_float"],
                               np.clip(G(z, truncation_psi=0.5).numpy(), -1, 1), atol=1e-5)
    path = export.export_run(folder)
    assert path == os.path.join(folder, "export")
    np.testing.assert_allclose(_serve(path, z, 0.5),   # atol: see above _tiny_stylegan2
                               np.clip(G(z, truncation_psi=0.5).numpy(), -1, 1), atol=1e-5)

#----------------------------------------------------------------------------
# Writing: never over something, never half.


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


@pytest.mark.one_float_path
def test_existing_export_is_kept_unless_overwrite(tmp_path):
    G1, G2 = _tiny_stylegan2(), randomise_buffers(_tiny_stylegan2(), 9)
    z = np.random.RandomState(4).randn(2, 8).astype(np.float32)
    path = export.export_generator(G1, str(tmp_path / "g"))
    first = _serve(path, z)
    with pytest.raises(ExportError, match="already exists"):
        export.export_generator(G2, path)
    np.testing.assert_array_equal(_serve(path, z), first)
    export.export_generator(G2, path, overwrite=True)
    second = _serve(path, z)
    np.testing.assert_allclose(second, np.clip(G2(z).numpy(), -1, 1), atol=1e-5)  # as above
    assert np.abs(second - first).max() > 1e-3
    assert _leftovers(str(tmp_path)) == []


@pytest.mark.one_float_path
def test_overwrite_never_replaces_a_folder_that_is_not_an_export(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a SavedModel"):
        export.export_generator(_tiny_stylegan2(), str(folder), overwrite=True)
    assert (folder / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("settings, message", [
    ({"lod": 0.5}, "fixed-resolution"),
    ({"resolution": 4}, "fixed-resolution"),
    ({"resolution": 12}, "power of two"),
    ({"noise_mode": "random"}, "deterministic"),
    ({"truncation_cutoff": 0}, "truncation_cutoff"),
])
def test_bad_settings_fail_before_writing(tmp_path, settings, message):
    with pytest.raises(ExportError, match=message):
        export.export_generator(_tiny_stylegan2(), str(tmp_path / "x"), **settings)
    assert os.listdir(tmp_path) == []


def test_lod_outside_the_stage(tmp_path):
    G = progan.Generator(resolution=16, latent_size=8, fmap_base=32, fmap_max=8)
    with pytest.raises(ExportError, match=r"outside stage 8's range \[1, 2\]"):
        export.export_generator(G, str(tmp_path / "x"), resolution=8, lod=0.5)
    with pytest.raises(ExportError, match="no truncation"):
        export.export_generator(G, str(tmp_path / "x"), truncation_cutoff=None)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing"), "no such file"),
    (lambda p: (p / "file.png").write_bytes(b"x") and str(p / "file.png"), "not a generator"),
    (lambda p: str(p), "not a generator"),
])
def test_wrong_paths(tmp_path, make, message):
    with pytest.raises(ExportError, match=message):
        export.load_generator(make(tmp_path))


def test_unknown_family():
    with pytest.raises(ExportError, match="no exporter for model family 'nope'"):
        export.exporter_for("nope")


@pytest.mark.one_float_path
@pytest.mark.parametrize("model", ["stylegan2", "biggan", "ugatit"])
def test_a_run_without_its_checkpoint_is_one_clear_error(tmp_path, model):
    """A run folder killed before its first snapshot (options, no checkpoint), and a named
    checkpoint that is not there: one line that says where it looked, nothing written."""
    from training.run_options import family_module
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    family_module(model).Options(model=model).save(run_dir)
    checkpoints = os.path.join(run_dir, "checkpoints")
    expected = f"{run_dir}: no checkpoint in {checkpoints} (the run has not saved one yet"
    with pytest.raises(ExportError, match="^" + re.escape(expected)):
        export.export_run(run_dir, str(tmp_path / "out"))
    missing = os.path.join(checkpoints, "ckpt-8")
    with pytest.raises(ExportError, match=f"looked for {re.escape(missing)}.index"):
        export.exporter_for(model).load_run(run_dir, missing)
    assert sorted(os.listdir(tmp_path)) == ["run"] and os.listdir(run_dir) == [
        "training_options.json"]
