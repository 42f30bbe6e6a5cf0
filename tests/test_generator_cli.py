"""run_generator.py and run_export.py on a real (tiny) training run and on exported models.

The run: conditional StyleGAN v1 on the built-in shapes, 8x8 grown from 4x4, stopped mid-fade
(lod 0.5), so loading a run exercises labels, the stage and the fade.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

import export
import run_export
import run_generator
import run_training
from networks import progan, stylegan2
from training.stylegan import TrainingOptions, training_loop, validate
from training.logs import grid_upscale, image_grid

from test_export import graph_optimizer_off

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("cli") / "run")
    os.makedirs(folder)
    options = TrainingOptions(
        model="stylegan", config="demo", dataset="shapes", resolution=8, conditional=True,
        kimg=0.032, batch=16, initial_resolution=4, stabilize_kimg=0.016, transition_kimg=0.032,
        tick_kimg=0.016, snapshot_ticks=2, metrics=(), fq_blocks=None)
    validate(options)
    summary = run_training.export_finished_run(   # as run_training.py does
        folder, training_loop(options, folder, log=lambda *args: None))
    assert summary["checkpoint"].endswith("ckpt-32")
    return folder


@pytest.fixture(scope="module")
def run_export_dir(run_dir):
    """The SavedModel training wrote at the end of the run (the same functions and settings as
    export.export_run(run_dir), which run_export.py checks below from a checkpoint)."""
    with open(os.path.join(run_dir, "summary.json")) as f:
        path = json.load(f)["export"]
    assert path == os.path.join(run_dir, "export") and export.path_kind(path)[0] == "savedmodel"
    return path


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """An unconditional StyleGAN2 and a ProGAN SavedModel."""
    root = tmp_path_factory.mktemp("models")
    G2 = stylegan2.Generator(z_dim=8, w_dim=8, resolution=8, mapping_layers=1, fmap_base=32,
                             fmap_max=8, seed=0)
    P = progan.Generator(resolution=8, latent_size=8, fmap_base=32, fmap_max=8)
    return {"stylegan2": export.export_generator(G2, str(root / "stylegan2")),
            "progan": export.export_generator(P, str(root / "progan"))}


def cli(module, args, capsys):
    """(exit status, stdout, stderr) of module.run with fresh flags."""
    fv = flags.FlagValues()
    module.define_flags(fv)
    argv = fv([f"{module.__name__}.py"] + args)
    capsys.readouterr()
    status = module.run(argv, fv)
    out, err = capsys.readouterr()
    return status, out, err


def read_png(path):
    return np.asarray(Image.open(path).convert("RGB"))


def read_figure(path, resolution):
    """A figure PNG of `resolution`-pixel images at their own size: the PNG must be the
    nearest-neighbour upscale by grid_upscale(resolution) of what this returns."""
    shown, factor = read_png(path), grid_upscale(resolution)
    grid = shown[::factor, ::factor]
    np.testing.assert_array_equal(shown, np.repeat(np.repeat(grid, factor, 0), factor, 1))
    return grid


def plain_tf_images(path, seeds, psi, class_index=None):
    """Images for seeds from the SavedModel, calling it as a user would."""
    model = tf.saved_model.load(path)
    serve = model.signatures["serving_default"]
    z_dim = serve.structured_input_signature[1]["z"].shape[-1]
    images = []
    for seed in seeds:
        z = np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)
        extra = {}
        if class_index is not None:
            c_dim = serve.structured_input_signature[1]["labels"].shape[-1]
            extra["labels"] = tf.one_hot([class_index], c_dim)
        images.append(serve(z=tf.constant(z), truncation_psi=tf.constant(psi, tf.float32),
                            **extra)["images"].numpy()[0])
    return images

#----------------------------------------------------------------------------
# Export of a run.


def test_export_of_a_run_is_its_last_sample_grid(run_dir, run_export_dir):
    """Gs at the stage and lod the run reached: the export's functions redraw the run's final
    fakes grid exactly.

    Compared with TensorFlow's graph optimizer off, as the loop drew the grid eagerly: after 32
    images StyleGAN v1's 4x4 maps are nearly constant (variance ~1e-11, far below the instance
    norm's epsilon 1e-8), so the optimizer's arithmetic rewrites, harmless rounding elsewhere,
    move pixels by a few levels there, in any traced function (training steps included).
    """
    meta = export.load_generator(run_export_dir).metadata
    assert (meta["family"], meta["resolution"], meta["lod"], meta["kimg"]) == (
        "stylegan", 8, 0.5, 0.032)
    assert meta["c_dim"] > 0 and meta["truncation_cutoff"] == 8
    with graph_optimizer_off():
        gen = export.load_generator(run_dir)  # the same functions, traced in memory
        assert gen.metadata["lod"] == 0.5 and gen.metadata["resolution"] == 8
        # The loop's grid latents and labels (StyleGANRun._grid: one class per column, 8 rows),
        # 16 per call.
        z = np.random.RandomState(0 + 123).randn(40, gen.z_dim).astype(np.float32)
        labels = np.eye(gen.c_dim, dtype=np.float32)[np.arange(40) % gen.c_dim]
        images = np.concatenate([gen("serving_default", z=z[i:i + 16], truncation_psi=1.0,
                                     labels=labels[i:i + 16])["images"] for i in (0, 16, 32)])
    grid = read_png(os.path.join(run_dir, "fakes000000_032.png"))   # 32 images
    # The PNG shows each 8x8 sample as 128x128 (16x nearest neighbour, training/logs.py).
    assert grid.shape == (8 * 128, 5 * 128, 3) and grid_upscale(8) == 16
    np.testing.assert_array_equal(image_grid(images, columns=5, upscale=16), grid)
    np.testing.assert_array_equal(grid[::16, ::16], image_grid(images, columns=5))


def test_reals_grid_of_a_conditional_run_has_the_fakes_class_layout(run_dir):
    """Column c of the class-conditional run's fakes grid shows class c (5 columns, 8 rows: cell
    i has class i % 5); reals.png holds, in the same cell, a training image of that class (every cell is one of
    the dataset's images, no two the same)."""
    import datasets
    data = datasets.open_dataset("shapes", resolution=8).pipeline(
        4096, dtype=tf.uint8, shuffle=False, repeat=False, drop_remainder=False)
    images, labels = next(iter(data))
    class_of = {image.tobytes(): label for image, label in
                zip(images.numpy(), np.argmax(labels.numpy(), axis=1))}
    grid = np.asarray(Image.open(os.path.join(run_dir, "reals.png")).convert("RGB"))
    upscale = grid.shape[1] // (5 * 8)   # fakes_init's: grid_upscale of the first stage (4)
    assert upscale == grid_upscale(4) and grid.shape[0] == 8 * 8 * upscale
    cells = grid[::upscale, ::upscale].reshape(8, 8, 5, 8, 3).transpose(0, 2, 1, 3, 4)
    cells = cells.reshape(40, 8, 8, 3)
    assert len({cell.tobytes() for cell in cells}) == 40
    assert [class_of[cell.tobytes()] for cell in cells] == [i % 5 for i in range(40)]


def test_run_export_cli(run_dir, run_export_dir, tmp_path, capsys):
    status, _, err = cli(run_export, ["--network", run_dir], capsys)
    assert status == 2 and err.count("\n") == 1 and "already exists" in err
    out_dir = str(tmp_path / "e")
    status, out, err = cli(run_export, ["--network", os.path.join(run_dir, "checkpoints",
                                                                  "ckpt-32"),
                                        "--outdir", out_dir, "--truncation-cutoff", "all"], capsys)
    assert status == 0, err
    assert out_dir in out and "serving_default, mapping, synthesis" in out
    meta = export.load_generator(out_dir).metadata
    assert meta["truncation_cutoff"] is None and meta["source"].endswith("ckpt-32)")
    status, _, err = cli(run_export, ["--network", out_dir, "--outdir", str(tmp_path / "f")],
                         capsys)
    assert status == 2 and "already an exported SavedModel" in err and err.count("\n") == 1
    status, _, err = cli(run_export, ["--network", run_dir, "--truncation-cutoff", "x",
                                      "--outdir", str(tmp_path / "g")], capsys)
    assert status == 2 and "--truncation-cutoff 'x'" in err
    assert not os.path.exists(tmp_path / "f") and not os.path.exists(tmp_path / "g")

#----------------------------------------------------------------------------
# generate-images.


def test_same_seeds_same_pngs_from_run_checkpoint_and_savedmodel(run_dir, run_export_dir,
                                                                  tmp_path, capsys):
    sources = {"run": run_dir, "again": run_dir,
               "checkpoint": os.path.join(run_dir, "checkpoints", "ckpt-32"),
               "savedmodel": run_export_dir}
    for name, network in sources.items():
        status, out, err = cli(run_generator, [
            "generate-images", "--network", network, "--seeds", "0-3,10", "--trunc", "0.7",
            "--class", "1", "--outdir", str(tmp_path / name)], capsys)
        assert status == 0, err
        assert "Wrote 5 PNG files" in out
        # The progress line, not a terminal: quarters of 5 seeds (2, 3, 4) and the final line.
        assert [line.split("  ")[0] for line in out.splitlines() if "Generating" in line] == [
            f"Generating: {n}/5 seeds" for n in (2, 3, 4, 5)]
    files = sorted(os.listdir(tmp_path / "run"))
    assert files == ["seed0000.png", "seed0001.png", "seed0002.png", "seed0003.png",
                     "seed0010.png"]
    for name in sources:
        assert sorted(os.listdir(tmp_path / name)) == files
        for f in files:
            assert (tmp_path / name / f).read_bytes() == (tmp_path / "run" / f).read_bytes()
    # NVlabs latents: RandomState(seed).randn(z_dim), through the plain SavedModel.
    expected = plain_tf_images(run_export_dir, [0, 1, 2, 3, 10], 0.7, class_index=1)
    for f, image in zip(files, expected):
        np.testing.assert_array_equal(read_png(tmp_path / "run" / f), image)
    assert np.abs(expected[0].astype(int) - expected[1].astype(int)).max() > 0


def test_outdir_created_and_never_overwritten(other_models, tmp_path, capsys):
    outdir = tmp_path / "a" / "b"
    args = ["generate-images", "--network", other_models["stylegan2"], "--seeds", "4,2",
            "--grid", "--outdir", str(outdir)]
    assert cli(run_generator, args, capsys)[0] == 0
    names = sorted(os.listdir(outdir))
    assert names == ["generate-images.png", "seed0002.png", "seed0004.png"]
    before = {n: (outdir / n).read_bytes() for n in names}
    mtimes = {n: os.stat(outdir / n).st_mtime_ns for n in names}
    status, _, err = cli(run_generator, args, capsys)
    assert status == 2 and err.count("\n") == 1
    assert "seed0004.png already exists (and 2 more)" in err and "--overwrite" in err
    assert {n: os.stat(outdir / n).st_mtime_ns for n in names} == mtimes
    assert cli(run_generator, args + ["--overwrite"], capsys)[0] == 0
    assert {n: (outdir / n).read_bytes() for n in names} == before
    grid = read_figure(outdir / "generate-images.png", 8)  # 2 images in a 2x1 grid, seed order
    assert read_png(outdir / "generate-images.png").shape == (128, 256, 3)   # 8 x 8 shown x16
    np.testing.assert_array_equal(grid[:, :8], read_png(outdir / "seed0004.png"))
    np.testing.assert_array_equal(grid[:, 8:], read_png(outdir / "seed0002.png"))

#----------------------------------------------------------------------------
# style-mixing-example and truncation-sweep.


def test_style_mixing_takes_the_column_styles_from_the_column_seed(run_export_dir):
    gen = export.load_generator(run_export_dir)
    rows, cols, styles = [1, 2], [3, 4, 5], [2, 3]  # 4 layers at 8x8: 2, 3 are the fine ones
    ws, mixed, images = run_generator.style_mixing(gen, rows, cols, 0.7, styles, 0)
    labels = np.eye(gen.c_dim, dtype=np.float32)[[0]]
    for s in rows + cols:
        z = np.random.RandomState(s).randn(1, gen.z_dim).astype(np.float32)
        np.testing.assert_array_equal(
            ws[s], gen("mapping", z=z, truncation_psi=0.7, labels=labels)["w"][0])
    for r in rows:
        for c in cols:
            w = mixed[(r, c)]
            np.testing.assert_array_equal(w[:2], ws[r][:2])   # the row's coarse styles
            np.testing.assert_array_equal(w[2:], ws[c][2:])   # the column's fine styles
            np.testing.assert_array_equal(
                images[(r, c)], gen("synthesis", w=w[np.newaxis])["images"][0])
    # Taking every layer from the column reproduces the column seed's own image.
    _, mixed_all, images_all = run_generator.style_mixing(gen, rows, cols, 0.7, [0, 1, 2, 3], 0)
    for r in rows:
        for c in cols:
            np.testing.assert_array_equal(images_all[(r, c)], images_all[(c, c)])


def test_style_mixing_grid_is_nvlabs_figure(run_export_dir, tmp_path, capsys):
    rows, cols = [1, 2], [3, 4, 5]
    status, out, err = cli(run_generator, [
        "style-mixing-example", "--network", run_export_dir, "--row-seeds", "1,2",
        "--col-seeds", "3-5", "--col-styles", "2-3", "--trunc", "0.7", "--class", "0",
        "--outdir", str(tmp_path)], capsys)
    assert status == 0, err
    gen = export.load_generator(run_export_dir)
    _, _, images = run_generator.style_mixing(gen, rows, cols, 0.7, [2, 3], 0)
    grid = read_figure(tmp_path / "style-mixing-example.png", 8)
    assert grid.shape == (8 * 3, 8 * 4, 3)

    def cell(i, j):
        return grid[8 * i:8 * i + 8, 8 * j:8 * j + 8]
    assert cell(0, 0).max() == 0
    for j, c in enumerate(cols):
        np.testing.assert_array_equal(cell(0, j + 1), images[(c, c)])
    for i, r in enumerate(rows):
        np.testing.assert_array_equal(cell(i + 1, 0), images[(r, r)])
        for j, c in enumerate(cols):
            np.testing.assert_array_equal(cell(i + 1, j + 1), images[(r, c)])
            np.testing.assert_array_equal(read_png(tmp_path / f"{r}-{c}.png"), images[(r, c)])
    assert len(os.listdir(tmp_path)) == 5 + 6 + 1


def test_truncation_sweep_rows_are_seeds_columns_are_psis(run_dir, run_export_dir, tmp_path,
                                                          capsys):
    status, _, err = cli(run_generator, [
        "truncation-sweep", "--network", run_dir, "--seeds", "0-2", "--psis", "1,0.5,0",
        "--class", "2", "--outdir", str(tmp_path)], capsys)
    assert status == 0, err
    grid = read_figure(tmp_path / "truncation-sweep.png", 8)
    assert grid.shape == (8 * 3, 8 * 3, 3)
    plain = {psi: plain_tf_images(run_export_dir, [0, 1, 2], psi, class_index=2)
             for psi in (1.0, 0.5, 0.0)}
    for i, seed in enumerate([0, 1, 2]):
        for j, psi in enumerate([1.0, 0.5, 0.0]):
            cell = grid[8 * i:8 * i + 8, 8 * j:8 * j + 8]
            np.testing.assert_array_equal(cell, plain[psi][i])
            np.testing.assert_array_equal(
                read_png(tmp_path / f"seed{seed:04d}-psi{psi:g}.png"), cell)
    # psi = 0: every seed gives the average image (the 4 layers used are all below cutoff 8).
    np.testing.assert_array_equal(plain[0.0][0], plain[0.0][1])
    np.testing.assert_array_equal(plain[0.0][0], plain[0.0][2])
    assert np.abs(plain[1.0][0].astype(int) - plain[1.0][1].astype(int)).max() > 0

#----------------------------------------------------------------------------
# Bad input: one line each, nothing written.


BAD_INPUTS = {
    "missing path": (["generate-images", "--network", "{tmp}/nope", "--seeds", "1"],
                     "no such file or directory"),
    "file, not a model": (["generate-images", "--network", "{tmp}/x.png", "--seeds", "1"],
                          "not a generator"),
    "empty folder": (["generate-images", "--network", "{tmp}/empty", "--seeds", "1"],
                     "not a generator"),
    "seed range down": (["generate-images", "--network", "{run}", "--seeds", "5-2"],
                        "--seeds 5-2: the range ends below its start; write 2-5."),
    "seeds not numbers": (["generate-images", "--network", "{run}", "--seeds", "a-b"],
                          "expected non-negative integers"),
    "seed twice": (["generate-images", "--network", "{run}", "--seeds", "1,0-2"],
                   "1 is listed twice"),
    "psi not a number": (["generate-images", "--network", "{run}", "--seeds", "1",
                          "--trunc", "abc"], "--trunc 'abc' is not a number"),
    "psis not numbers": (["truncation-sweep", "--network", "{run}", "--seeds", "1",
                          "--psis", "1,x"], "--psis 'x' is not a number"),
    "no command": (["--network", "{run}", "--seeds", "1"], "give a command"),
    "unknown command": (["make-art", "--network", "{run}"], "(not 'make-art')"),
    "flag of another command": (["generate-images", "--network", "{run}", "--seeds", "1",
                                 "--col-seeds", "1"], "--col-seeds is for style-mixing"),
    "missing seeds": (["generate-images", "--network", "{run}"], "needs --seeds"),
    "outdir is a file": (["generate-images", "--network", "{run}", "--seeds", "1",
                          "--outdir", "{tmp}/x.png"], "is a file"),
    "conditional without class": (["generate-images", "--network", "{export}",
                                   "--seeds", "1"], "conditional"),
    "class out of range": (["generate-images", "--network", "{export}", "--seeds", "1",
                            "--class", "99"], "--class 99: the model has classes"),
    "class for unconditional": (["generate-images", "--network", "{stylegan2}", "--seeds", "1",
                                 "--class", "0"], "unconditional"),
    "progan truncation": (["generate-images", "--network", "{progan}", "--seeds", "1",
                           "--trunc", "0.7"], "no truncation"),
    "progan sweep": (["truncation-sweep", "--network", "{progan}", "--seeds", "1"],
                     "needs a mapping network"),
    "progan mixing": (["style-mixing-example", "--network", "{progan}", "--row-seeds", "1",
                       "--col-seeds", "2"], "needs the mapping and synthesis"),
    "style layer out of range": (["style-mixing-example", "--network", "{export}",
                                  "--row-seeds", "1", "--col-seeds", "2", "--class", "0"],
                                 "--col-styles: layer 4 does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_clear_line(case, run_dir, run_export_dir, other_models, tmp_path,
                                        capsys):
    (tmp_path / "x.png").write_bytes(b"not a model")
    (tmp_path / "empty").mkdir()
    args, message = BAD_INPUTS[case]
    paths = {"tmp": str(tmp_path), "run": run_dir, "export": run_export_dir, **other_models}
    args = [a.format(**paths) for a in args]
    outdir = str(tmp_path / "out")
    if "--outdir" not in args:
        args += ["--outdir", outdir]
    status, out, err = cli(run_generator, args, capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("run_generator.py: error: "), err
    assert message in err and "Traceback" not in err + out
    assert not os.path.exists(outdir)


def test_script_reports_bad_input_in_one_line_before_loading_tensorflow(tmp_path):
    cases = [(["--network", str(tmp_path / "nope"), "--seeds", "1"], "no such file"),
             (["--network", str(tmp_path), "--seeds", "5-2"], "ends below its start"),
             (["--network", str(tmp_path), "--seeds", "1", "--trunc", "x"], "not a number")]
    for args, message in cases:
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "run_generator.py"), "generate-images",
             "--outdir", str(tmp_path / "out")] + args,
            capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "out")


def test_seed_parsing():
    assert run_generator.parse_int_list("0-3,7, 10-11", "seeds") == [0, 1, 2, 3, 7, 10, 11]
    assert run_generator.parse_int_list("4294967295", "seeds") == [2 ** 32 - 1]
    for text in ("", "1,", "-1", "1.5", "4294967296", "0-200000"):
        with pytest.raises(run_generator.app.UsageError):
            run_generator.parse_int_list(text, "seeds")
