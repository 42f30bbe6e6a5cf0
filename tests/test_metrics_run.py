"""run_metrics.py end to end: an exported tiny generator, the built-in dataset, a stand-in graph."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags

import metrics
import run_metrics
from metrics import evaluate
from test_metrics_inception import write_standin_inception_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
Z_DIM, RESOLUTION = 8, 16


class TinyGenerator(tf.Module):
    """Has the project's export signature: (z [N, z_dim], truncation_psi []) -> images."""

    def __init__(self):
        super().__init__()
        rng = np.random.RandomState(0)
        self.w = tf.Variable(rng.randn(Z_DIM, RESOLUTION * RESOLUTION * 3).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, Z_DIM], tf.float32, name="z"),
                                  tf.TensorSpec([], tf.float32, name="truncation_psi")])
    def generate(self, z, truncation_psi):
        x = tf.tanh(tf.reshape(tf.matmul(z * truncation_psi, self.w),
                               [-1, RESOLUTION, RESOLUTION, 3]))
        images = tf.saturate_cast(tf.round((x + 1.0) * 127.5), tf.uint8)
        return {"images": images, "images_float": x}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("run_metrics")
    module = TinyGenerator()
    generator = str(root / "generator")
    tf.saved_model.save(module, generator, signatures={"serving_default": module.generate})
    return {"generator": generator,
            "inception": write_standin_inception_graph(str(root / "inception.pb")),
            "root": root}


def run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "run_metrics.py")] + args,
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_run_metrics_prints_a_table_and_writes_json(files, capsys):
    out = str(files["root"] / "result.json")
    cache = str(files["root"] / "cache")
    args = [f"--network={files['generator']}", "--dataset=shapes",
            f"--inception={files['inception']}", "--num-images=20", "--swd-images=16",
            "--ms-ssim-images=8", "--batch=8", f"--cache-dir={cache}", f"--out={out}"]
    proc = run(args, files["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(out))
    names = {"fid", "kid", "kid_std", "is", "is_std", "is_reals", "SWDx1e3_16", "SWDx1e3_avg",
             "ms_ssim", "ms_ssim_reals"}
    assert set(result["metrics"]) == names
    assert all(np.isfinite(v) for v in result["metrics"].values())
    table = proc.stdout[proc.stdout.index("metric"):]
    for name, value in result["metrics"].items():
        assert f"{name} " in table and f"{value:.6g}" in table
    assert len(os.listdir(cache)) == 1
    # A progress line per image set read (stdout is a pipe: plain lines, the last one final).
    for what, total in (("Inception features, reals", 20), ("Inception features, generated", 20),
                        ("SWD, reals", 16), ("SWD, generated", 16), ("MS-SSIM, generated", 8),
                        ("MS-SSIM, reals", 8)):
        assert f"{what}: {total}/{total} images  " in proc.stdout, what

    # A second run, in-process: reads the cached real features, never overwrites a result, and
    # agrees with the first (up to float differences of the generator between processes, which
    # can move a uint8 pixel by one).
    with pytest.raises(app.UsageError, match="already exists"):
        main_with_flags(args)
    main_with_flags(args[:-1] + [f"--out={out}.2"])
    assert "read from cache" in capsys.readouterr().out
    again = json.load(open(out + ".2"))["metrics"]
    for name in names - {"kid_std"}:
        assert again[name] == pytest.approx(result["metrics"][name], rel=1e-2, abs=1e-3), name


def test_compute_metrics_equals_the_library_functions(files):
    generator = evaluate.Generator(files["generator"])
    reals = evaluate.RealImages("shapes", RESOLUTION)
    inception = metrics.InceptionV3(files["inception"])
    results, _ = evaluate.compute_metrics(generator, reals, list(evaluate.METRICS), inception,
                                          num_images=20, swd_images=16, ms_ssim_images=8,
                                          batch_size=8, log=lambda _: None)
    # The library functions get the same minibatches of 8 as compute_metrics: Inception's
    # matmuls and convolutions block by batch size, so other batchings give float32-different
    # features (batching is test_metrics_inception's concern); here the inputs are bit-identical.
    fake_batches = list(generator.batches(20, 0, 8, 1.0))
    real_batches = list(reals.batches(20, 8))
    real_images = np.concatenate(real_batches)
    assert real_images.shape == (20, 16, 16, 3) and real_images.dtype == np.uint8
    real_out, fake_out = inception.run(real_batches), inception.run(fake_batches)
    # Bit-identical features, same float64 code: only eigh/BLAS order, ~2048*eps64*cond << 1e-9.
    assert results["fid"] == pytest.approx(
        metrics.frechet_inception_distance(real_out["features"], fake_out["features"]), rel=1e-9)
    kid = metrics.kernel_inception_distance(real_out["features"], fake_out["features"], seed=0)
    # Same seeded subsets of bit-identical features; float64 sums of 20^2 terms: ~1e-13 << 1e-9.
    assert (results["kid"], results["kid_std"]) == pytest.approx((kid["kid"], kid["kid_std"]),
                                                                 rel=1e-9)
    # Bit-identical logits, same float64 softmax/KL code: float64 rounding only, ~1e-14 << 1e-9.
    assert results["is"] == pytest.approx(
        metrics.inception_score(fake_out["logits"])["inception_score"], rel=1e-9)
    swd = metrics.sliced_wasserstein_distance(
        real_images[:16], np.concatenate(list(generator.batches(16, 1, 8, 1.0))), seed=0,
        minibatch_size=8)
    # Same minibatches of 8, same float32 kernels: bit-identical descriptors, same float64 mean.
    assert results["SWDx1e3_avg"] == pytest.approx(swd["SWDx1e3_avg"], rel=1e-12)
    ms = metrics.ms_ssim(np.concatenate(list(generator.batches(8, 2, 8, 1.0))))
    # Float64 throughout: means of <= 16*16*3 terms err <= 768 * eps64 ~ 2e-13 relative.
    assert results["ms_ssim"] == pytest.approx(ms, rel=1e-12)
    assert results["ms_ssim_reals"] == pytest.approx(metrics.ms_ssim(real_images[:8]), rel=1e-12)
    # Streaming over odd-sized minibatches pairs across their boundaries, as one array would;
    # float64 per-pair terms, batch-independent to <= 768 * eps64 ~ 2e-13 relative.
    batches = [real_images[:3], real_images[3:10], real_images[10:16]]
    assert evaluate.streamed_ms_ssim(batches) == pytest.approx(metrics.ms_ssim(real_images[:16]),
                                                               rel=1e-12)
    with pytest.raises(ValueError, match="even number"):
        evaluate.streamed_ms_ssim([real_images[:3]])
    # Truncation reaches the generator.
    assert not np.array_equal(next(generator.batches(2, 0, 2, 0.5)),
                              next(generator.batches(2, 0, 2, 1.0)))


def main_with_flags(args):
    """run_metrics.main with its own FlagValues: nothing is added to the global absl FLAGS."""
    flag_values = flags.FlagValues()
    run_metrics.define_flags(flag_values)
    flag_values(["run_metrics.py"] + args)
    run_metrics.main(["run_metrics.py"], flag_values)


def test_run_metrics_usage_errors_are_one_clear_line(files, tmp_path):
    base = [f"--network={files['generator']}", "--dataset=shapes",
            f"--out={tmp_path / 'm.json'}"]
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    (run_folder / "training_options.json").write_text('{"model": "stylegan2"}')
    proc = run(base, tmp_path)  # default metrics include fid/kid/is
    assert proc.returncode == 2
    assert "--inception=/path/to/classify_image_graph_def.pb" in proc.stderr
    # Flags are checked before TensorFlow starts: the error is the only output.
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    cases = [
        (["--inception=/nonexistent/classify_image_graph_def.pb"],
         "/nonexistent/classify_image_graph_def.pb not found"),
        (["--metrics=swd,fidd"], r"unknown \['fidd'\]"),
        (["--metrics=ms_ssim", "--ms-ssim-images=7"], "must be even"),
        (["--metrics=swd", f"--network={tmp_path}"], "--network: .* SavedModel"),
        (["--metrics=swd", "--dataset=/nonexistent/folder"], "/nonexistent/folder"),
        (["--metrics=swd", "--dataset=/nonexistent/folder", "--batch=0"], "--batch"),
        (["--metrics=swd", "--snapshots=all"], "--snapshots picks snapshots of a run folder, "
                                               "and --network .* is a savedmodel"),
        (["--metrics=swd", f"--network={run_folder}", "--snapshots=last,9"],
         "--snapshots must be last, all or checkpoint numbers"),
        (["--metrics=swd", f"--network={run_folder}"], "--out: the results of a run go to its "
                                                       "run folder"),
    ]
    for extra, message in cases:
        with pytest.raises(app.UsageError, match=message):
            main_with_flags(base + extra)
    assert not os.path.exists(tmp_path / "m.json")


def test_real_images_from_a_tfrecord_folder_at_the_generator_resolution(tmp_path):
    # A grayscale 32x32 multi-LOD dataset read at its 16x16 level, as for a 16x16 generator.
    from datasets.tfrecords import MultiLodWriter, lod_pyramid
    images = np.random.RandomState(0).randint(0, 256, (10, 1, 32, 32)).astype(np.uint8)
    folder = tmp_path / "gray"
    folder.mkdir()
    with MultiLodWriter(str(folder), 32, 1, name="gray") as writer:
        writer.add_images(images)
    reals = evaluate.RealImages(str(folder), 16)
    assert (reals.num_images, reals.resolution) == (10, 16)
    batches = list(reals.batches(7, 4))
    assert [b.shape for b in batches] == [(4, 16, 16, 3), (3, 16, 16, 3)]
    level16 = lod_pyramid(images)[1].transpose(0, 2, 3, 1)  # the stored 16x16 records
    np.testing.assert_array_equal(np.concatenate(batches), np.repeat(level16[:7], 3, axis=-1))
    # The cache identity follows the files: rewriting the dataset changes it.
    identity = reals.identity
    with MultiLodWriter(str(folder), 32, 1, name="gray") as writer:
        writer.add_images(images[:9])
    assert evaluate.RealImages(str(folder), 16).identity != identity
    with pytest.raises(ValueError, match="no 64x64 level"):
        evaluate.RealImages(str(folder), 64)


class TinyConditionalGenerator(tf.Module):
    """Export signature with labels: every pixel of an image is its class index (uint8)."""

    @tf.function(input_signature=[tf.TensorSpec([None, Z_DIM], tf.float32, name="z"),
                                  tf.TensorSpec([], tf.float32, name="truncation_psi"),
                                  tf.TensorSpec([None, 5], tf.float32, name="labels")])
    def generate(self, z, truncation_psi, labels):
        classes = tf.cast(tf.argmax(labels, axis=1), tf.uint8)
        images = tf.broadcast_to(classes[:, None, None, None], [tf.shape(z)[0], 4, 4, 3])
        return {"images": images, "images_float": tf.cast(images, tf.float32)}


def test_conditional_exports_get_uniformly_drawn_one_hot_labels(tmp_path):
    module = TinyConditionalGenerator()
    path = str(tmp_path / "conditional")
    tf.saved_model.save(module, path, signatures={"serving_default": module.generate})
    generator = evaluate.Generator(path)
    assert generator.c_dim == 5
    classes = np.concatenate([b[:, 0, 0, 0] for b in generator.batches(500, 0, 64, 1.0)])
    counts = np.bincount(classes, minlength=5)
    assert len(classes) == 500 and counts.min() > 60  # ~100 each; uniform
    again = np.concatenate([b[:, 0, 0, 0] for b in generator.batches(500, 0, 64, 1.0)])
    np.testing.assert_array_equal(classes, again)  # seeded
