"""The training loop and run_training.py: resume, run folders, safety, signals, precision
settings, presets, --init-from, CLI errors. The step the loop runs (precision and XLA numbers,
compiled iterations, lanes, two replicas) is test_training_step.py's; runs of several worker
processes are test_training_multiworker.py's.

That a StyleGAN2 run through this loop learns is test_sq_training.py's short limited-data run
(StyleGAN2 with FQ in D, plus style quantization): one learning run of the loop, not two.
"""

import dataclasses
import json
import os
import shutil
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

import run_training
from datasets import open_dataset
from training import TrainingConfigError, TrainingDiverged, loop, losses
from training.checkpoints import latest_checkpoint
from training.stylegan import StyleGANRun, TrainingOptions, load_networks, training_loop

from test_ugatit_loop import killed_copy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def options(**overrides):
    """The cheapest complete run: StyleGAN v1 at 8x8 (one stage, no lazy phases, so one traced
    step), built-in shapes data, no snapshot metrics. StyleGAN2's phases are covered in
    test_trainer.py and below where it matters."""
    values = dict(model="stylegan", dataset="shapes", resolution=8, kimg=0.064, batch=8,
                  tick_kimg=0.032, snapshot_ticks=1, metrics=(), fq_blocks=(8,))
    values.update(overrides)
    return TrainingOptions(**values)


def checkpoint_values(run_dir):
    reader = tf.train.load_checkpoint(latest_checkpoint(run_dir))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith("state/")}


def quiet(*args):
    pass


# ---------------------------------------------------------------------------------------------

# Progressive StyleGAN 8 -> 16, batch 8: stabilise 8 (0-32 images), fade (32-64), stabilise 16
# (64-96), 12 steps, one tick per step, a snapshot (checkpoint and samples) after 6 steps, in the
# middle of the fade, and one (with the export) at the end.
GROW = dict(resolution=16, initial_resolution=8, stabilize_kimg=0.032, transition_kimg=0.032,
            kimg=0.096, tick_kimg=0.008, snapshot_ticks=6, fq_blocks=(8,))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The uninterrupted GROW run (op determinism on), made once: the resume test compares with
    it, the tests of a finished run folder read it, the non-finite test resumes a copy of it.
    Returns (run_dir, summary)."""
    from tensorflow.python.framework import config as tf_config
    run_dir = str(tmp_path_factory.mktemp("straight"))
    tf.config.experimental.enable_op_determinism()
    try:
        summary = training_loop(options(**GROW), run_dir, log=quiet)
    finally:
        tf_config.disable_op_determinism()
    return run_dir, summary


def test_resume_across_a_fade_in_equals_an_uninterrupted_run(tmp_path, op_determinism, straight_run):
    """GROW: the folder a run killed after its snapshot at 6 steps (inside the fade) leaves,
    resumed with `run_training.py --resume --deterministic` for the other 6 steps: networks,
    optimizers, FQ dictionaries, RNG states and counters are bit-identical to 12 steps
    straight, with op determinism on (and so the straight run's own snapshot at 6 steps
    changed nothing of its training state)."""
    straight, a = straight_run
    stopped = str(tmp_path / "stopped")
    os.makedirs(stopped)
    assert killed_copy(straight, stopped, 48) == os.path.join(stopped, "checkpoints", "ckpt-48")
    assert run_cli(["--out", stopped, "--resume", "--deterministic"]) == 0
    # The resumed run trained steps 7..12 only (one tick per step).
    ticks = [json.loads(line).get("progress/kimg") for line in
             open(os.path.join(stopped, "log.jsonl"))]
    assert [t for t in ticks if t is not None] == pytest.approx([0.056 + 0.008 * i
                                                                for i in range(6)])
    with open(os.path.join(stopped, "summary.json")) as f:
        b = json.load(f)
    assert a["kimg"] == b["kimg"] == 0.096
    values_a, values_b = checkpoint_values(straight), checkpoint_values(stopped)
    assert sorted(values_a) == sorted(values_b)
    for name in values_a:
        np.testing.assert_array_equal(values_a[name], values_b[name], err_msg=name)
    assert a["state_fingerprint"] == b["state_fingerprint"]
    # The run really crossed the fade: lod went from 1 to 0 (logged per tick). Exact: the
    # stabilising segments' lod is the constant 1.0 or 0.0 and a tick mean of equal values is exact.
    lods = [e["lod"] for e in map(json.loads, open(os.path.join(straight, "log.jsonl")))
            if "lod" in e]
    assert lods[0] == 1.0 and lods[-1] == 0.0
    assert any(0.0 < lod < 1.0 for lod in lods)


def test_a_run_records_its_default_fq_blocks_and_conditioning(tmp_path):
    """Options built without fq_blocks / conditional get the preset's defaults for the data
    (resolution, labels), and the run records them (training_options.json then rebuilds the
    same networks after a preset change); a conditional run names its classes at the start."""
    run = StyleGANRun(options(fq_blocks=None, resolution=0), str(tmp_path))
    run.open_data()
    assert (run.options.resolution, run.options.fq_blocks) == (32, (8,))
    assert (run.options.conditional, run.options.label_size) == (False, 0)
    assert "classes" not in run.data_summary()
    run = StyleGANRun(options(model="stylegan2", fq_blocks=None, resolution=0), str(tmp_path))
    run.open_data()
    assert run.options.fq_blocks == (8,)
    assert (run.options.conditional, run.options.label_size) == (True, 5)
    saved = TrainingOptions.from_json(run.options.to_json())
    assert (saved.fq_blocks, saved.conditional, saved.label_size) == ((8,), True, 5)
    _, lines = loop.start_record(tf.distribute.get_strategy(), {}, run.data_summary())
    assert lines[1] == "Data: synthetic:shapes, 4096 images, 32x32, 5 classes (conditional)"


def test_run_folder_outputs_and_loading_gs(straight_run):
    run_dir, summary = straight_run
    names = set(os.listdir(run_dir))
    assert {"checkpoints", "tensorboard", "log.jsonl", "training_options.json",
            "summary.json"} <= names
    # Snapshots at 48 and 96 images (6 ticks of 8): a grid each, not one overwritten.
    assert sorted(n for n in names if n.startswith("fakes")) == [
        "fakes000000_048.png", "fakes000000_096.png", "fakes_init.png"]
    logged = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
    for key in ("g_loss", "d_loss", "g_fq_loss", "d_fq_loss", "fq/fq8/perplexity",
                "progress/img_per_sec", "progress/kimg"):
        assert key in logged[-1], key
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    # load_networks gives the checkpoint's Gs exactly (checkpoint keys escape "." and "/").
    _, nets = load_networks(run_dir)
    stored = checkpoint_values(run_dir)
    for w in nets["Gs"].variables:
        escaped = f"Gs:{w.path}".replace(".", "..").replace("/", ".S")
        np.testing.assert_array_equal(
            w.numpy(), stored[f"state/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"], err_msg=w.path)
    assert summary["checkpoint"] == latest_checkpoint(run_dir)
    # The start record (first line): where the run ran, its data and its networks' sizes.
    start = logged[0]["start"]
    assert start["devices"] == ["CPU:0"] and start["replicas"] == 1
    assert start["precision"] == "float32"
    assert start["data"] == {"source": "synthetic:shapes", "images": 4096, "resolution": 16}
    assert start["parameters"]["G"] == sum(int(np.prod(w.shape))
                                           for w in nets["Gs"].trainable_weights) > 0


def test_snapshot_file_names_are_unique_and_sort_in_training_order():
    """NVlabs' fakesKKKKKK.png at whole kimg; between them the images past the kimg, so a
    run with ticks under 1 kimg keeps every snapshot's grid, listed in training order."""
    images = [0, 48, 96, 999, 1000, 1500, 40000, 40008, 123456789]
    names = [loop.snapshot_grid_name(n) for n in images]
    assert names[:5] == ["fakes000000.png", "fakes000000_048.png", "fakes000000_096.png",
                         "fakes000000_999.png", "fakes000001.png"]
    assert names[5:] == ["fakes000001_500.png", "fakes000040.png", "fakes000040_008.png",
                         "fakes123456_789.png"]
    assert sorted(names) == names and len(set(names)) == len(names)
    assert loop.snapshot_grid_name(2000.0) == "fakes000002.png"   # a count held as a float


def test_a_new_run_writes_reals_png_from_its_training_data(straight_run):
    """NVlabs' reals.png beside fakes_init.png: training images at the training resolution
    (16x16, though the run starts at 8x8), in the fakes' layout (32 in 8 columns, each shown
    at least 128 pixels wide): every tile is an image of the dataset."""
    run_dir, _ = straight_run
    reals = np.asarray(Image.open(os.path.join(run_dir, "reals.png")))
    fakes = np.asarray(Image.open(os.path.join(run_dir, "fakes_init.png")))
    upscale = 16   # grid_upscale(8) of the first stage's samples, shown at 16x16
    assert reals.shape == fakes.shape == (4 * 16 * upscale, 8 * 16 * upscale, 3)
    known = {image.tobytes() for image in open_dataset("shapes", resolution=16).images()}
    tiles = reals[::upscale, ::upscale].reshape(4, 16, 8, 16, 3).transpose(0, 2, 1, 3, 4)
    tiles = tiles.reshape(32, 16, 16, 3)
    assert all(tile.tobytes() in known for tile in tiles)
    assert len({tile.tobytes() for tile in tiles}) == 32


def test_reals_are_flipped_as_the_training_stream_with_mirror(tmp_path):
    """With --mirror the grid's images are flipped as training flips them (about half)."""
    run = StyleGANRun(options(mirror=True, resolution=16, num_images=256), str(tmp_path), quiet)
    run.open_data()
    images = run.real_images(32)
    dataset = {image.tobytes()
               for image in open_dataset("shapes", resolution=16, num_images=256).images()}
    flipped = [image.tobytes() not in dataset for image in images]
    assert all(image[:, ::-1].tobytes() in dataset for image, f in zip(images, flipped) if f)
    assert 4 <= sum(flipped) <= 28   # Binomial(32, 1/2): outside with probability 1e-4


def test_start_record_names_devices_precision_data_and_parameters(two_replica_strategy,
                                                                  mixed_precision, monkeypatch):
    G = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])           # 16 weights
    D = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1),
                          keras.layers.BatchNormalization()])                  # 5 + 2 trainable
    data = {"source": "synthetic:shapes", "images": 4096, "resolution": 32}
    record, lines = loop.start_record(two_replica_strategy, {"G": [G], "D": [D, G]}, data)
    assert record == {"devices": ["CPU:0", "CPU:1"], "gpus": [], "replicas": 2,
                      "precision": mixed_precision.policy, "data": data,
                      "parameters": {"G": 16, "D": 7 + 16},
                      "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads()}
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 0)
    record, lines = loop.start_record(two_replica_strategy, {"G": [G], "D": [D, G]}, data)
    assert lines == [f"Devices: CPU:0, CPU:1, 2 replica(s), precision {mixed_precision.policy}",
                     "Data: synthetic:shapes, 4096 images, 32x32",
                     "Parameters: G 16, D 23"]
    # One thread per op (run_training.py's default for the demos on a CPU) is named.
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads", lambda: 1)
    record, lines = loop.start_record(tf.distribute.get_strategy(), {"G": [G]}, dict(
        data, images={"trainA": 3, "trainB": 5}))
    assert record["devices"] == ["CPU:0"] and record["replicas"] == 1
    assert record["intra_op_threads"] == 1
    assert lines[0] == (f"Devices: CPU:0, 1 replica(s), precision {mixed_precision.policy}, "
                        "1 thread(s) per op")
    assert lines[1] == "Data: synthetic:shapes, 3 trainA + 5 trainB images, 32x32"


@pytest.mark.parametrize("nvidia_smi, visible, warned", [
    (None, None, False), ("/usr/bin/nvidia-smi", None, True), (None, "0,1", True),
    ("/usr/bin/nvidia-smi", "0", True), ("/usr/bin/nvidia-smi", "", False),
    ("/usr/bin/nvidia-smi", "-1", False)])
def test_a_gpu_machine_without_gpu_support_gets_one_warning_line(nvidia_smi, visible, warned,
                                                                  monkeypatch):
    """TensorFlow sees no GPU here; nvidia-smi on PATH or CUDA_VISIBLE_DEVICES naming devices
    says the machine has one: one line with the install command (TF_CPP_MIN_LOG_LEVEL=2 hides
    TensorFlow's own). CUDA_VISIBLE_DEVICES "" or "-1" hides the GPUs on purpose."""
    from training import distribute
    monkeypatch.setattr(distribute.shutil, "which",
                        lambda name: nvidia_smi if name == "nvidia-smi" else None)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    warning = distribute.gpu_support_warning()
    if not warned:
        assert warning is None
        return
    assert "\n" not in warning and "TensorFlow sees no GPU" in warning
    assert warning.endswith('pip install "tensorflow[and-cuda]==2.21.*"')
    monkeypatch.setattr(distribute.tf.config, "list_physical_devices",
                        lambda kind=None: ["a GPU"] if kind == "GPU" else [])
    assert distribute.gpu_support_warning() is None   # a GPU seen: nothing to say


@pytest.mark.parametrize("flags_lines, small_ops, onednn, gpus, expected", [
    ("fpu avx512f amx_bf16 amx_tile", True, True, [], "mixed_bfloat16"),
    ("fpu avx512f amx_bf16 amx_tile", False, True, [], "float32"),     # a paper-sized preset
    ("fpu avx512f amx_bf16 amx_tile", True, False, [], "float32"),      # oneDNN off
    ("fpu avx512f amx_bf16 amx_tile", True, True, ["a GPU"], "float32"),
    ("fpu avx2 avx512_bf16", True, True, [], "float32"),   # bfloat16 dot products, no AMX tiles
    ("fpu avx2 xamx_bf16x", True, True, [], "float32"),    # a whole flag only
    (None, True, True, [], "float32"),                     # no /proc/cpuinfo
])
def test_auto_precision_is_bfloat16_for_the_demos_on_a_cpu_with_amx(
        flags_lines, small_ops, onednn, gpus, expected, tmp_path, monkeypatch):
    from training import distribute
    cpuinfo = str(tmp_path / "cpuinfo")
    if flags_lines is not None:
        with open(cpuinfo, "w") as f:
            f.write(f"processor\t: 0\nflags\t\t: {flags_lines}\n\nprocessor\t: 1\n"
                    f"flags\t\t: {flags_lines}\n")
    monkeypatch.setattr(distribute, "onednn_enabled", lambda: onednn)
    monkeypatch.setattr(distribute.tf.config, "list_physical_devices",
                        lambda kind=None: gpus if kind == "GPU" else [])
    assert distribute.default_precision(small_ops, cpuinfo) == expected


def test_precision_flags_reach_the_options_and_auto_is_resolved_and_saved_by_the_loop(
        tmp_path, monkeypatch, capsys):
    """--precision goes to the options as given ("auto" by default); --mixed-precision, its old
    spelling, means mixed_float16 with a deprecation line. The loop resolves "auto" (the demo
    preset: training.distribute.default_precision) before it builds anything, so the concrete
    policy is what training_options.json saves and a resume uses; runs written before
    --precision (a mixed_precision bool) read as float32 / mixed_float16."""
    from training import distribute, stylegan
    given = []

    def probe(options, run_dir, **kwargs):
        given.append(options.precision)
        raise TrainingConfigError("probe")

    monkeypatch.setattr(stylegan, "training_loop", probe)
    for argv in ([], ["--precision", "mixed_bfloat16"], ["--mixed-precision"]):
        assert run_cli(["--out", str(tmp_path / "run"), *argv]) == 2
        assert not os.path.exists(tmp_path / "run")   # removed: it never trained
    assert given == ["auto", "mixed_bfloat16", "mixed_float16"]
    assert ("run_training.py: --mixed-precision is deprecated and goes in the next release; use "
            "--precision mixed_float16.") in capsys.readouterr().err

    monkeypatch.setattr(distribute, "default_precision",
                        lambda small_ops: "mixed_bfloat16" if small_ops else "float32")
    seen = []

    class Built(Exception):
        pass

    class Probe(StyleGANRun):
        def build_trainer(self):
            seen.append(keras.mixed_precision.global_policy().name)
            raise Built

    for config, policy in (("demo", "mixed_bfloat16"), ("ffhq", "float32")):
        run = Probe(options(precision="auto", config=config), str(tmp_path), quiet)
        with pytest.raises(Built):
            loop.training_loop(run)
        assert run.options.precision == policy and seen[-1] == policy
        saved = TrainingOptions.from_json(run.options.to_json())
        assert saved.precision == policy and saved.loss_scaling is False
    old = json.loads(options(precision="float32").to_json())
    del old["precision"]
    for mixed, policy in ((True, "mixed_float16"), (False, "float32")):
        read = TrainingOptions.from_json(json.dumps({**old, "mixed_precision": mixed}))
        assert read.precision == policy and read.loss_scaling == mixed


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, straight_run):
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run[0], run_dir)  # a finished run with its checkpoint at 96 images
    good = latest_checkpoint(run_dir)
    assert good.startswith(run_dir) and good.endswith("ckpt-96")
    good_values = checkpoint_values(run_dir)
    original = losses.d_logistic
    monkeypatch.setattr(losses, "d_logistic", lambda r, f: original(r, f) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"Non-finite loss at kimg .*\(.*(nan|non-finite).*\)"
                                               r".*last good checkpoint is .*ckpt-96"):
        training_loop(options(**{**GROW, "kimg": 0.128}), run_dir, resume=True, log=quiet)
    assert latest_checkpoint(run_dir) == good
    for name, value in checkpoint_values(run_dir).items():
        np.testing.assert_array_equal(value, good_values[name])
        assert np.all(np.isfinite(value)) or value.dtype.kind not in "f"


# ---------------------------------------------------------------------------------------------
# run_training.py: flags and one-line errors.

def run_cli(argv):
    fv = flags.FlagValues()
    run_training.define_flags(fv)
    fv(["run_training.py"] + argv)
    return run_training.run(["run_training.py"], fv)


@pytest.mark.parametrize("argv, message", [
    (["--fq-blocks", "64"], "--fq-blocks 64: not a discriminator block at resolution 32; valid "
                            "blocks: 32,16,8"),
    (["--fq-blocks", "16,x"], "--fq-blocks must be comma-separated resolutions like 16,32 "
                              "(\"\" for none), got '16,x'."),
    (["--fq-blocks", "16,16"], "--fq-blocks '16,16' names a value twice."),
    (["--batch", "6"], "--batch 6: must be a multiple of the minibatch-stddev group size 4"),
    (["--config", "cifar10"], "--config 'cifar10': stylegan2 presets are demo, e, f, limited."),
    (["--config", "limited", "--batch", "36"], "--batch 36: must be a multiple of the "
                                               "minibatch-stddev group size 8"),
    (["--config", "limited", "--model", "stylegan"],
     "--config 'limited' is a stylegan2 preset; stylegan presets are demo, ffhq."),
    (["--config", "f", "--model", "progan"],
     "--config 'f' is a stylegan2 preset; progan presets are demo, celebahq."),
    (["--config", "celebahq"],
     "--config 'celebahq' is a progan preset; stylegan2 presets are demo, e, f, limited."),
    (["--xla", "--strategy", "mirrored"], "--xla works with --strategy default only"),
    (["--cpu-replicas", "2"], "--cpu-replicas needs --strategy mirrored"),
    (["--dataset", "/no/such/folder"], "--dataset: /no/such/folder: neither a dataset folder"),
    (["--resume"], "--resume needs --out pointing at an existing run folder"),
    (["--mixed-precision", "--precision", "float32"],
     "--mixed-precision is the old spelling of --precision mixed_float16; give only --precision"),
])
def test_cli_usage_errors_are_one_line(argv, message, capsys):
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_training.py: error: ")
    assert message in err[0]


def test_cli_refuses_a_non_empty_out_folder(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert run_cli(["--out", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_sigterm_checkpoints_and_the_resumed_run_equals_an_uninterrupted_one(
        tmp_path, op_determinism, straight_run, monkeypatch, capsys):
    """Stop and resume at any moment, through run_training.py, with the GROW run's options:
    1. `--resume` on a folder with options but no checkpoint (a run killed before its first
       one; a stale log line in it) starts the run from the beginning and says so;
    2. with --checkpoint-minutes tiny it writes a checkpoint after every step, without sample
       grids (its first snapshot would be at 48 images);
    3. SIGTERM during the step that reaches 40 images (between snapshots): a checkpoint there,
       the resume command on stdout, exit 128 + 15;
    4. `--resume` (no --model) trains 40..96: every variable bit-identical to the straight run
       (op determinism on for both)."""
    straight, a = straight_run
    out = str(tmp_path / "stopped")
    os.makedirs(out)
    shutil.copy(os.path.join(straight, "training_options.json"), out)
    with open(os.path.join(out, "log.jsonl"), "w") as f:
        f.write('{"kimg": 0.0, "stale": 1}\n')
    original = StyleGANRun.step

    def step(self, nimg, max_images):
        nimg = original(self, nimg, max_images)   # one iteration: a tick is one iteration
        if nimg == 40:
            os.kill(os.getpid(), signal.SIGTERM)   # handled: the loop stops after this step
        return nimg

    monkeypatch.setattr(StyleGANRun, "step", step)
    code = run_cli(["--out", out, "--resume", "--deterministic", "--checkpoint-minutes", "1e-9"])
    printed = capsys.readouterr().out
    assert code == 128 + signal.SIGTERM
    assert f"No checkpoint in {out} yet: starting the run from the beginning." in printed
    ckpt = os.path.join(out, "checkpoints", "ckpt-40")
    assert (f"Stopped by SIGTERM at kimg 0.04, checkpoint {ckpt}; continue with: "
            f"python run_training.py --out {out} --resume") in printed
    assert latest_checkpoint(out) == ckpt
    names = os.listdir(os.path.join(out, "checkpoints"))
    assert {"ckpt-24.index", "ckpt-32.index", "ckpt-40.index"} <= set(names)   # keep 3
    assert sorted(n for n in os.listdir(out) if n.endswith(".png")) == ["fakes_init.png",
                                                                        "reals.png"]
    entries = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert not any("stale" in e for e in entries)
    # The start: devices, precision, data and parameter counts, printed and logged.
    start = entries[0]["start"]
    assert start["devices"] == ["CPU:0"] and start["precision"] == "float32"
    threads = start["intra_op_threads"]   # 1 if this process's first run_cli set it (a demo)
    assert ("Devices: CPU:0, 1 replica(s), precision float32"
            + (f", {threads} thread(s) per op" if threads else "") + "\n"
            f"Data: synthetic:shapes, 4096 images, 16x16\n"
            f"Parameters: G {start['parameters']['G']:,}, D {start['parameters']['D']:,}\n") \
        in printed
    assert [e["progress/kimg"] for e in entries if "progress/kimg" in e] == pytest.approx(
        [0.008, 0.016, 0.024, 0.032, 0.040])
    with open(os.path.join(out, "summary.json")) as f:
        stopped = json.load(f)
    assert stopped["interrupted"] == "SIGTERM" and not stopped["finished"]

    monkeypatch.setattr(StyleGANRun, "step", original)
    assert run_cli(["--out", out, "--resume", "--deterministic"]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        b = json.load(f)
    assert b["kimg"] == 0.096 and b["finished"] and "interrupted" not in b
    values_a, values_b = checkpoint_values(straight), checkpoint_values(out)
    assert sorted(values_a) == sorted(values_b)
    for name in values_a:
        np.testing.assert_array_equal(values_a[name], values_b[name], err_msg=name)
    assert a["state_fingerprint"] == b["state_fingerprint"]



def test_resume_keeps_the_runs_options_and_reports_a_changed_one(straight_run, capsys):
    """A resumed run is the run of its folder: --model need not be given; another --model, or
    a flag that would change an option other than the length and the placement, is one line
    naming it (exit 2), never silently ignored."""
    straight, _ = straight_run
    for argv, message in (
            (["--model", "stylegan2"], f"--model stylegan2: {straight} is a stylegan run, and a "
                                       "resumed run keeps its model; drop --model."),
            (["--lr", "0.01", "--fq-blocks", "8", "--seed", "3"],
             "--resume keeps the run's options, and --lr, --seed would change"),
            (["--xla"], "--xla would change"),
            (["--precision", "mixed_bfloat16"], "--precision would change")):
        assert run_cli(["--out", straight, "--resume", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("run_training.py: error: "), err
        assert message in err[0], err[0]


@pytest.mark.parametrize("model", ["stylegan2", "biggan", "ugatit"])
def test_run_folder_errors_are_the_same_one_line_for_every_family(model, tmp_path, capsys):
    """A non-empty --out, and --resume on a folder that is not a run: the same message and exit
    2 whatever the family (run_training.py checks both before the family builds anything)."""
    (tmp_path / "something").write_text("x")
    assert run_cli(["--model", model, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"run_training.py: error: --out {tmp_path} exists and is not empty; pick a "
                   "new folder or add --resume to continue that run."]
    assert run_cli(["--model", model, "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"run_training.py: error: --resume: {tmp_path}: no training_options.json; "
                   "not a run folder written by run_training.py."]


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("family", ["stylegan", "biggan", "ugatit"])
def test_the_loop_sets_mixed_precision_for_building_and_restores_the_policy(family, precision,
                                                                            tmp_path):
    """One place sets and restores the precision policy for every family: the networks are
    built under the run's policy, and the global policy is float32 again when the loop returns,
    also when it fails."""
    from training import biggan, ugatit
    from test_ugatit_loop import TINY
    run_class, run_options = {
        "stylegan": (StyleGANRun, options(precision=precision)),
        "biggan": (biggan.BigGANRun, biggan.BigGANOptions(iterations=1, precision=precision)),
        "ugatit": (ugatit.UGATITRun, ugatit.Options(**TINY, precision=precision)),
    }[family]
    seen = []

    class Built(Exception):
        pass

    class Probe(run_class):
        def build_trainer(self):
            seen.append(keras.mixed_precision.global_policy().name)
            raise Built

    with pytest.raises(Built):
        loop.training_loop(Probe(run_options, str(tmp_path), quiet))
    assert seen == [precision]
    assert keras.mixed_precision.global_policy().name == "float32"


def test_batch_and_replica_checks():
    from training.stylegan import check_batch as _check_batch
    from training import TrainingConfigError
    _check_batch(16, 2, 4)
    with pytest.raises(TrainingConfigError, match="not divisible by the 2 replicas"):
        _check_batch(7, 2, 4)
    with pytest.raises(TrainingConfigError, match="per-replica batch 6 is not divisible by the "
                                                  "minibatch-stddev group size 4"):
        _check_batch(12, 2, 4)
    with pytest.raises(TrainingConfigError, match="per-replica batch 12 is not divisible by the "
                                                  "minibatch-stddev group size 8"):
        _check_batch(24, 2, 8)
    _check_batch(16, 2, 8)  # 8 per replica: one group


def test_limited_config_is_stylegan2_ada_paper256():
    """--config limited = stylegan2-ada-pytorch `--cfg paper256`: fmaps 0.5 (channel_base 16384
    in its per-resolution convention = fmap_base 8192 here), 8-layer mapping, batch 64, lr
    0.0025, gamma 1, G_ema half-life 20 kimg, no ramp-up, minibatch-stddev groups of 8."""
    from training.stylegan import build_networks
    options = TrainingOptions(config="limited", resolution=256, sq=True)
    loss = options.loss_settings()
    assert (options.minibatch, options.lr, loss.r1_gamma, loss.g_ema_kimg, loss.g_ema_rampup) == (
        64, 0.0025, 1.0, 20.0, 0.0)
    G, D = build_networks(options, 3, 0)   # not built: constructing is cheap
    assert (G.mapping.num_layers, G.w_dim, D.b4.mbstd_group_size) == (8, 512, 8)
    # paper256 widths: 512 channels up to 32^2, then 256 at 64^2, 128 at 128^2, 64 at 256^2.
    assert [D.channels[r] for r in (32, 64, 128, 256)] == [512, 256, 128, 64]


# Channels per resolution of ProGAN's and StyleGAN's official networks at 256^2 (fmap_base 8192).
OFFICIAL_WIDTHS_256 = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}


def test_stylegan_ffhq_preset_is_nvlabs_stylegan_ffhq_one_gpu():
    """--model stylegan --config ffhq = NVlabs/stylegan train.py (FFHQ, -1gpu) and
    networks_stylegan.py: fmap_base 8192, fmap_max 512, 512-d z and w, 8 mapping layers, R1
    gamma 10, growing from 8^2, Gs half-life 10 kimg without ramp-up, 25000 kimg."""
    from training.stylegan import build_networks
    options = TrainingOptions(model="stylegan", config="ffhq", resolution=256)
    loss = options.loss_settings()
    assert (loss.kind, loss.r1_gamma, loss.g_ema_kimg, loss.g_ema_rampup, loss.g_ema_beta) == (
        "logistic", 10.0, 10.0, 0.0, 0.0)
    assert (options.first_resolution, options.preset("kimg")) == (8, 25000.0)
    G, D = build_networks(options, 3, 0)
    assert (G.z_dim, G.w_dim, G.get_config()["mapping_layers"]) == (512, 512, 8)
    # nf(s) = min(8192 / 2^s, 512): 512 channels up to 32^2, then 256, 128, 64 (config-f's
    # 16384 would double every width from 64^2 on).
    assert G.synthesis.channels == D.channels == OFFICIAL_WIDTHS_256
    assert D.get_config()["mbstd_group_size"] == 4


def test_progan_celebahq_preset_is_progressive_growing_of_gans_preset_v2_1gpu():
    """--model progan --config celebahq = progressive_growing_of_gans config.py (CelebA-HQ,
    preset-v2-1gpu) and networks.py / train.py / loss.py defaults: fmap_base 8192, fmap_max 512,
    latent 512, growing from 4^2, WGAN-GP (lambda 10, drift 0.001, target 1), Gs beta 0.999 per
    step (G_smoothing), 12000 kimg."""
    from training.stylegan import build_networks
    options = TrainingOptions(model="progan", config="celebahq", resolution=256)
    loss = options.loss_settings()
    assert (loss.kind, loss.wgan_lambda, loss.wgan_epsilon, loss.wgan_target, loss.r1_gamma) == (
        "wgan_gp", 10.0, 0.001, 1.0, 0.0)
    assert float(loss.g_ema_beta_at(128, 0)) == float(loss.g_ema_beta_at(4, 10 ** 7)) == 0.999
    assert (options.first_resolution, options.preset("kimg")) == (4, 12000.0)
    G, D = build_networks(options, 3, 0)
    assert G.latent_size == 512
    assert G.channels == D.channels == OFFICIAL_WIDTHS_256
    assert D.get_config()["mbstd_group_size"] == 4


@pytest.mark.parametrize("model, config, minibatch, learning_rate", [
    # NVlabs/stylegan train.py, FFHQ -1gpu: minibatch_base 4; G/D_lrate_dict.
    ("stylegan", "ffhq", {8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4},
     {8: 0.001, 64: 0.001, 128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}),
    # progressive_growing_of_gans config.py, preset-v2-1gpu: minibatch_base 4; lrate {1024: 0.0015}.
    ("progan", "celebahq", {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4,
                            1024: 4},
     {4: 0.001, 128: 0.001, 512: 0.001, 1024: 0.0015}),
])
def test_progressive_presets_schedule_the_official_minibatch_and_lr(model, config, minibatch,
                                                                     learning_rate):
    """The schedule of a 1024^2 run: minibatch and lr at each stage as the official code's
    TrainingSchedule (the higher resolution's during a fade); --batch / --lr fix them."""
    schedule = TrainingOptions(model=model, config=config, resolution=1024).schedule()
    assert {r: schedule.minibatch_at(r) for r in minibatch} == minibatch
    assert {r: schedule.learning_rate_at(r) for r in learning_rate} == learning_rate
    first = 4 if model == "progan" else 8
    assert schedule.initial_resolution == first
    # The first segment, the first fade (to 2 * first, at 600 kimg) and the last stretch.
    segments = [schedule.segment_at(k) for k in (0.0, 600.0, 1e6)]
    assert [(s.resolution, s.minibatch, s.learning_rate, s.fading) for s in segments] == [
        (first, minibatch[first], learning_rate.get(first, 0.001), False),
        (2 * first, minibatch[2 * first], 0.001, True), (1024, 4, learning_rate[1024], False)]
    fixed = TrainingOptions(model=model, config=config, resolution=256, batch=32,
                            learning_rate=0.003).schedule()
    assert fixed.minibatch_at(8) == fixed.minibatch_at(256) == 32
    assert fixed.learning_rate_at(8) == fixed.learning_rate_at(256) == 0.003


def test_a_preset_of_another_model_is_a_usage_error_before_any_run_folder(capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(["--model", "stylegan", "--config", "f", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "run_training.py: error: --config 'f' is a stylegan2 preset; stylegan presets are "
        "demo, ffhq."]
    assert not out.exists()


def test_resuming_a_run_of_a_preset_the_model_no_longer_has_is_one_line(capsys, tmp_path):
    """A StyleGAN run written with --config f (StyleGAN2's, before the presets were per model)."""
    values = json.loads(TrainingOptions(model="stylegan").to_json())
    (tmp_path / "training_options.json").write_text(json.dumps({**values, "config": "f"}))
    assert run_cli(["--resume", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "run_training.py: error: --resume: --config 'f' is a stylegan2 preset; stylegan presets "
        "are demo, ffhq."]


def test_config_help_lists_each_models_presets():
    """--help names every preset of each StyleGAN-family model (the table in training/stylegan.py)
    and no model offers another's."""
    from training.stylegan import CONFIG_PRESETS
    fv = flags.FlagValues()
    run_training.define_flags(fv)
    text = " ".join(fv["config"].help.split())
    wording = {"stylegan2": "stylegan2: e, f (StyleGAN2 config-e / config-f), limited",
               "stylegan": "stylegan: ffhq", "progan": "progan: celebahq"}
    for model, presets in CONFIG_PRESETS.items():
        assert list(presets)[0] == "demo" and wording[model] in text
        assert [p for p in presets if p != "demo"] == [
            w.strip(",") for w in wording[model].split(": ")[1].split()
            if w.strip(",") in presets]
    assert "Every model: demo" in text


def test_demo_drops_path_length_and_mixing_and_the_paper_configs_keep_them():
    """The StyleGAN2 demo runs as stylegan2-ada's small cifar config: no path-length phase and
    no style mixing (batch 8, lr 0.004, 40 kimg for its widths); --config e / f keep
    StyleGAN2's (path length 2 every 4 iterations, mixing 0.9), StyleGAN v1 its mixing in the
    demo and ffhq, and the progressive demos batch 16, lr 0.002 and 28 kimg."""
    from training.trainer import GANTrainer

    def iteration(options):
        loss = options.loss_settings()
        # Only the loss settings decide the phases (an unbuilt trainer is enough).
        phases = GANTrainer.phases_of_iteration(
            type("Trainer", (), {"loss_settings": loss})(), True, True)
        return phases, loss.pl_weight, loss.style_mixing_prob

    demo = TrainingOptions()
    assert (demo.config, demo.minibatch, demo.lr, demo.preset("kimg")) == ("demo", 8, 0.004, 40)
    # Its D learns at three times G's rate and Gs follows G closely early on; the others as
    # official.
    assert (demo.preset("d_lr_multiplier"), demo.loss_settings().g_ema_rampup) == (3.0, 0.01)
    for model, config in (("stylegan2", "e"), ("stylegan2", "f"), ("stylegan2", "limited"),
                          ("stylegan", "demo"), ("progan", "demo"), ("progan", "celebahq")):
        assert TrainingOptions(model=model, config=config).preset("d_lr_multiplier") == 1.0
    assert iteration(demo) == (("Gmain", "Dmain", "Dreg"), 0.0, 0.0)
    for config in ("e", "f"):
        assert iteration(TrainingOptions(config=config)) == (
            ("Gmain", "Greg", "Dmain", "Dreg"), 2.0, 0.9)
    for config in ("demo", "ffhq"):
        assert iteration(TrainingOptions(model="stylegan", config=config))[2] == 0.9
    for model in ("stylegan", "progan"):
        options = TrainingOptions(model=model)
        assert (options.minibatch, options.lr, options.preset("kimg")) == (16, 0.002, 28)


def test_demo_snapshots_every_two_ticks_unless_told():
    """The README's default run (--config demo) writes a sample grid every 2 ticks (8 kimg) and
    at the end; --snapshot-ticks overrides that, and the other configs keep the flag's 10."""
    from training.stylegan import DEMO_SNAPSHOT_TICKS, options_from_flags

    def snapshot_ticks(*argv):
        fv = flags.FlagValues()
        run_training.define_flags(fv)
        fv(["run_training.py", *argv])
        return options_from_flags(fv).snapshot_ticks

    assert DEMO_SNAPSHOT_TICKS == 2 and snapshot_ticks() == 2
    assert snapshot_ticks("--snapshot-ticks", "5") == 5
    assert snapshot_ticks("--config", "e") == 10


def test_a_config_error_leaves_no_run_folder_behind(capsys, tmp_path, monkeypatch,
                                                    two_replica_strategy):
    """Found once the devices are known (per-replica batch 6, minibatch-stddev groups of 4),
    after the run folder got its options and logs: one line, exit 2, and the folder this
    command created is gone (nothing was trained into it)."""
    from training import distribute
    monkeypatch.setattr(distribute, "make_strategy", lambda *args: two_replica_strategy)
    out = str(tmp_path / "run")
    assert run_cli(["--batch", "12", "--strategy", "mirrored", "--out", out]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "run_training.py: error: per-replica batch 6 is not divisible by the minibatch-stddev "
        "group size 4; use a per-replica batch that is a multiple of 4."]
    assert not os.path.exists(out)


# ---------------------------------------------------------------------------------------------
# --init-from: a new run from converted official weights, a run folder or a checkpoint.

def converted_stylegan2(folder):
    """stylegan2-ada-pytorch G_ema and D at 8x8 with the demo widths (64 channels, 64-d
    latents, 2 mapping layers), synthetic official state dicts converted with run_convert.py's
    importer; D has no FQ (the official networks have none)."""
    from networks import convert
    from test_convert import official_d_state, official_g_state
    rng = np.random.RandomState(1)
    state = {f"G_ema.{k}": v for k, v in official_g_state(
        rng, resolution=8, z_dim=64, w_dim=64, channel_base=512, channel_max=64).items()}
    state.update({f"D.{k}": v for k, v in official_d_state(
        rng, resolution=8, channel_base=512, channel_max=64).items()})
    nets = convert.from_stylegan2_ada_pytorch(state)
    convert.save_networks(folder, G=nets.G, D=nets.D)
    return nets


def values_by_path(network):
    """{variable path without the network's name: value} (converted networks have other
    names than a run's G and D)."""
    return {v.path.removeprefix(network.name + "/"): v.numpy() for v in network.variables
            if v.name != "seed_generator_state"}   # RNG states: the new run's own


def test_init_from_converted_weights_starts_the_first_step_from_them(tmp_path, monkeypatch):
    """A StyleGAN2 run (8x8, FQ after block 8) from converted official G_ema and D: when its
    first step starts, G and Gs hold the converted G's variables and D the converted D's,
    bit for bit; D's FQ dictionary starts fresh and the log says so; then training proceeds
    (one step, with all four phases, changes G and D)."""
    source = str(tmp_path / "converted")
    nets = converted_stylegan2(source)
    first, messages = {}, []
    original = StyleGANRun.step

    def step(self, nimg, max_images):
        if not first:
            first.update({n: values_by_path(getattr(self.trainer, n)) for n in ("G", "Gs", "D")})
        return original(self, nimg, max_images)

    monkeypatch.setattr(StyleGANRun, "step", step)
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    # The StyleGAN2 demo conditions on the labelled shapes; the converted networks have no
    # label input, and the mismatch names the flag that removes it.
    run = options(model="stylegan2", kimg=0.008, tick_kimg=0.008, init_from=source)
    with pytest.raises(TrainingConfigError, match=r"c_dim 0 there, 5 here.* \(--conditional / "
                       r"--noconditional choose this run's label input\)\.$"):
        training_loop(run, str(tmp_path), log=messages.append)
    assert not first
    summary = training_loop(dataclasses.replace(run, conditional=False), run_dir,
                            log=messages.append)
    assert f"Initialised from {source}: G, Gs (from G), D." in messages
    assert f"FQ dictionaries of D (fq8) start fresh: {source} has none." in messages
    fq = {k for k in first["D"] if k.startswith("fq8/")}
    assert fq and set(first["D"]) - fq == set(values_by_path(nets.D))
    for name, network in (("G", nets.G), ("Gs", nets.G), ("D", nets.D)):
        converted = values_by_path(network)
        assert set(converted) <= set(first[name])
        for key, value in converted.items():
            np.testing.assert_array_equal(first[name][key], value, err_msg=f"{name} {key}")
    assert summary["finished"] and summary["kimg"] == 0.008
    _, trained = load_networks(run_dir, which=("G", "D"))
    for name in ("G", "D"):
        after = values_by_path(trained[name])
        assert any(not np.array_equal(after[k], v) for k, v in first[name].items()), name


def test_init_from_plain_weights_into_an_sq_run_keeps_its_fresh_sq_codebook(tmp_path):
    """SQ-GAN fine-tuning of official weights (--init-from converted --sq): G and Gs take every
    converted variable and keep their own fresh SQ codebook and usage counts, and the log says
    so. Back from an SQ generator into a plain one is one line naming the --sq flags."""
    from networks import convert
    from training.checkpoints import init_from
    from training.stylegan import build_networks, build_trainer
    source = str(tmp_path / "converted")
    nets = converted_stylegan2(source)
    run = options(model="stylegan2", resolution=8, conditional=False, sq=True, fq_blocks=())
    trainer = build_trainer(run, *build_networks(run, 3, 0))
    networks = {name: getattr(trainer, name) for name in ("G", "Gs", "D")}
    fresh = {name: values_by_path(networks[name]) for name in ("G", "Gs")}
    messages = []
    init_from(source, networks, "stylegan2", log=messages.append)
    assert messages == [f"Initialised from {source}: G, Gs (from G), D.",
                        f"The SQ codebook of G (sq) starts fresh: {source} has none.",
                        f"The SQ codebook of Gs (sq) starts fresh: {source} has none."]
    converted = values_by_path(nets.G)
    for name in ("G", "Gs"):
        after = values_by_path(networks[name])
        sq = {k for k in after if k.startswith("sq/")}
        assert sq == {"sq/codebook", "sq/usage_counts"} and set(after) - sq == set(converted)
        for key in sq:
            np.testing.assert_array_equal(after[key], fresh[name][key], err_msg=key)
        for key, value in converted.items():
            np.testing.assert_array_equal(after[key], value, err_msg=f"{name} {key}")
    sq_source = convert.save_networks(str(tmp_path / "sq"), G=networks["G"])
    plain, _ = build_networks(dataclasses.replace(run, sq=False), 3, 0)
    with pytest.raises(TrainingConfigError, match=(
            r"its G differs from this run's: sq_num_codes \d+ there, 0 here.* \(--sq and the "
            r"--sq-\* flags choose this run's style quantization\)\.$")):
        init_from(sq_source, {"G": plain}, "stylegan2", log=quiet)


def test_init_from_a_checkpoint_takes_its_networks_only(straight_run, tmp_path):
    """A new GROW run from the straight run's snapshot inside the fade (ckpt-48), stopped
    before its first step: its first checkpoint (ckpt-0) holds exactly the networks of ckpt-48
    (G, Gs, D with the FQ dictionary) and a fresh image counter and optimizer."""
    straight, _ = straight_run
    source = os.path.join(straight, "checkpoints", "ckpt-48")
    run_dir = str(tmp_path)
    messages = []
    training_loop(options(**GROW, init_from=source), run_dir, log=messages.append,
                  stop_after_kimg=0)
    assert f"Initialised from {source}: G, Gs, D." in messages
    assert latest_checkpoint(run_dir).endswith("ckpt-0")
    new = checkpoint_values(run_dir)
    reader = tf.train.load_checkpoint(source)
    networks = [k for k in new if k.split(":")[0] in ("state/G", "state/Gs", "state/D")
                and "seed_generator_state" not in k]
    assert any("fq8" in k for k in networks)
    for key in networks:
        np.testing.assert_array_equal(new[key], reader.get_tensor(key), err_msg=key)
    assert new["state/nimg/.ATTRIBUTES/VARIABLE_VALUE"] == 0
    assert reader.get_tensor("state/nimg/.ATTRIBUTES/VARIABLE_VALUE") == 48
    assert not any(new[k].any() for k in new if k.startswith("state/g_optimizer:")
                   and "momentum" in k)


@pytest.mark.parametrize("flags_, message", [
    (["--model", "stylegan", "--resolution", "8"],
     "its G differs from this run's: resolution 16 there, 8 here"),
    (["--model", "stylegan", "--resolution", "16", "--fq-blocks", "16"],
     "its D differs from this run's: fq_blocks (8,) there, (16,) here"),
    (["--model", "stylegan2", "--resolution", "8"],
     "is a stylegan run and this run trains stylegan2; the model family must be the same"),
])
def test_init_from_a_mismatched_source_is_one_line_and_leaves_no_run_folder(
        straight_run, tmp_path, capsys, flags_, message):
    """The straight run (StyleGAN, 16x16, FQ after block 8) as the source of runs with another
    resolution, other FQ blocks or another model: one line naming the mismatch, exit 2, and
    no run folder (nor a "Run folder:" line naming one)."""
    straight, _ = straight_run
    out = str(tmp_path / "run")
    assert run_cli([*flags_, "--init-from", straight, "--out", out, "--metrics", "none"]) == 2
    captured = capsys.readouterr()
    assert "Run folder" not in captured.out
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"run_training.py: error: --init-from {straight}")
    assert message in err[0], err[0]
    assert not os.path.exists(out)


def test_init_from_with_resume_is_a_usage_error(straight_run, capsys):
    straight, _ = straight_run
    assert run_cli(["--out", straight, "--resume", "--init-from", straight]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "run_training.py: error: --init-from starts a new run and --resume continues one; give "
        "one of them."]


# ---------------------------------------------------------------------------------------------
# run_metrics.py on a run folder: every kept snapshot (the straight run keeps ckpt-48, ckpt-96).

def run_metrics_cli(argv):
    import run_metrics
    fv = flags.FlagValues()
    run_metrics.define_flags(fv)
    fv(["run_metrics.py"] + argv)
    return run_metrics.run(["run_metrics.py"], fv)


def test_run_metrics_measures_every_kept_snapshot_of_a_run(straight_run, tmp_path, capsys):
    """`run_metrics.py --network RUN --snapshots all` (SWD on 16 images) measures both kept
    snapshots, appends one record per snapshot and metric to RUN/metric-swd.jsonl and prints
    a table marking the best; --snapshots K picks ckpt-K only; a K the run does not keep is
    one line naming the kept ones."""
    import run_metrics
    run_dir = str(tmp_path / "run")
    shutil.copytree(straight_run[0], run_dir)
    base = ["--network", run_dir, "--dataset", "shapes", "--metrics", "swd", "--swd-images",
            "16", "--batch", "8"]
    assert run_metrics_cli(base + ["--snapshots", "all"]) == 0
    printed = capsys.readouterr().out
    path = os.path.join(run_dir, "metric-swd.jsonl")
    records = [json.loads(line) for line in open(path)]
    assert [(r["metric"], r["snapshot"], r["kimg"], r["num_images"]) for r in records] == [
        ("swd", "ckpt-48", 0.048, 16), ("swd", "ckpt-96", 0.096, 16)]
    for r in records:
        assert set(r["results"]) == {"SWDx1e3_16", "SWDx1e3_avg"}
        assert r["checkpoint"] == os.path.join(run_dir, "checkpoints", r["snapshot"])
        assert r["seconds"] >= 0 and r["timestamp"] > 0
    best = min(records, key=lambda r: r["results"]["SWDx1e3_avg"])
    assert f"* best swd: {best['snapshot']} (lowest SWDx1e3_avg)" in printed
    row = next(line for line in printed.splitlines() if line.startswith(best["snapshot"]))
    assert f"{best['results']['SWDx1e3_avg']:.6g}*" in row
    assert run_metrics._snapshots("run", run_dir, "96") == [
        ("ckpt-96", 0.096, os.path.join(run_dir, "checkpoints", "ckpt-96"))]
    assert run_metrics_cli(base + ["--snapshots", "50"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"run_metrics.py: error: --snapshots: {run_dir} keeps no ckpt-50; its snapshots are "
        "48,96.")


def test_snapshot_swd_depends_on_the_generator_only():
    """Every snapshot's SWD takes the same patches and directions: the same generator gives the
    same value at every snapshot, and a resumed run (a new SWDState) logs the value the
    uninterrupted run logs at that snapshot; another generator gives another value."""
    import types

    def generator(shift):
        def generate(rng, count):
            images = np.tanh(rng.randn(count, 16, 16, 3)).astype(np.float32)
            return np.clip(images + shift, -1.0, 1.0)
        return generate

    shift = {"value": 0.0}
    run = types.SimpleNamespace(
        dataset=open_dataset("shapes", resolution=16),
        swd_generator=lambda position: (16, generator(shift["value"])))
    options = types.SimpleNamespace(metrics=("swd",), swd_images=32, seed=3)
    swd = loop.SWDState(run, options)
    first = swd(0)
    assert set(first) == {f"metrics/swd_32/SWDx1e3_{k}" for k in ("16", "avg")}
    assert swd(1000) == first
    assert loop.SWDState(run, options)(2000) == first   # as after a resume
    shift["value"] = 0.5
    assert swd(3000)["metrics/swd_32/SWDx1e3_avg"] != first["metrics/swd_32/SWDx1e3_avg"]


def test_swd_is_skipped_below_16x16():
    """A progressive run's 4x4 / 8x8 stages (or an 8x8 run) have no SWD pyramid level: the
    snapshot logs no SWD there instead of failing (`--metrics swd` is the default)."""
    import types

    def generate(rng, count):
        raise AssertionError("no fakes are drawn below 16x16")

    run = types.SimpleNamespace(swd_generator=lambda position: (8, generate))
    options = types.SimpleNamespace(metrics=("swd",), swd_images=16, seed=0)
    assert loop.SWDState(run, options)(0) == {}
