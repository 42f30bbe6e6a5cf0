"""One dialect for every command-line tool (cli_common): dashes, the shared flag names, usage
errors as one line on stderr with exit status 2, old spellings working for one release."""

import io
import os
import re
import time

import numpy as np
import pytest
from absl import flags

import cli_common
import run_convert
import run_export
import run_generator
import run_metrics
import run_training
import run_translation

TOOLS = {"run_training.py": run_training, "run_generator.py": run_generator,
         "run_export.py": run_export, "run_metrics.py": run_metrics,
         "run_convert.py": run_convert, "run_translation.py": run_translation}
# A value absl cannot parse, per flag type (string and list flags take any text).
MALFORMED = {"int": "three", "float": "x1.5", "bool": "maybe", "enum": "no-such-choice"}


def tool_flags(module):
    fv = flags.FlagValues()
    module.define_flags(fv)
    return fv


def own_flags(fv):
    """{name: flag} of the tool's flags, aliases (old spellings) left out."""
    return {name: flag for name, flag in fv._flags().items()
            if name == flag.name and type(flag).__name__ != "_FlagAlias"}


def one_line(capsys, tool):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{tool}: error: "), err
    return err[0]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_flag_names_use_dashes_and_the_shared_vocabulary(tool):
    module = TOOLS[tool]
    names = set(own_flags(tool_flags(module)))
    assert not [n for n in names if "_" in n], "flag names use dashes"
    # Spellings the tools share; none of the retired ones remains (except as an alias).
    retired = {"generator", "input_dir", "output", "num_images", "truncation_psi", "batch_size",
               "img-size", "img_size", "size", "data"}
    assert not names & retired, names & retired
    if tool != "run_training.py":
        assert "network" in names
    if tool in ("run_generator.py", "run_export.py", "run_convert.py", "run_translation.py"):
        assert "outdir" in names


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_malformed_flag_value_is_one_line_and_exit_2(tool, capsys):
    module = TOOLS[tool]
    checked = 0
    for name, flag in sorted(own_flags(tool_flags(module)).items()):
        kind = flag.flag_type()
        if kind not in MALFORMED:
            continue
        with pytest.raises(SystemExit) as stop:
            cli_common.parse_flags(tool, tool_flags(module), [tool, f"--{name}={MALFORMED[kind]}"])
        assert stop.value.code == 2
        assert f"--{name}" in one_line(capsys, tool)
        checked += 1
    assert checked >= 1
    with pytest.raises(SystemExit) as stop:
        cli_common.parse_flags(tool, tool_flags(module), [tool, "--no-such-flag=1"])
    assert stop.value.code == 2 and "no-such-flag" in one_line(capsys, tool)


@pytest.mark.parametrize("tool", sorted(set(TOOLS) - {"run_training.py"}))
def test_a_missing_network_is_one_line_and_exit_2(tool, capsys, tmp_path):
    module = TOOLS[tool]
    fv = tool_flags(module)
    outdir = ["--outdir", str(tmp_path / "o")] if "outdir" in own_flags(fv) else []
    command = ["generate-images"] if tool == "run_generator.py" else []
    fv([tool, *outdir])
    assert module.run([tool, *command], fv) == 2
    assert "--network" in one_line(capsys, tool)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("tool", sorted(t for t in TOOLS if getattr(TOOLS[t], "RENAMED", {})))
def test_old_spellings_still_work_with_a_one_line_notice(tool, capsys):
    module = TOOLS[tool]
    renamed = module.RENAMED
    for old, new in renamed.items():
        fv = tool_flags(module)
        value = {"int": "12", "float": "0.5", "bool": "true"}.get(fv[new].flag_type(), "x")
        fv([tool, f"--{old}={value}"])
        assert fv[new].present and str(fv[new].value).lower() in (value, "12", "0.5", "true",
                                                                  "['x']")
        cli_common.warn_renamed(tool, fv, renamed)
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"{tool}: --{old} is deprecated and goes in the next release; use "
                       f"--{new}."]


class ReachedTraining(Exception):
    pass


# run_training.py flags with values that parse but cannot work, per model: each must stop in
# the family's checks (before the loop builds anything) with one line and exit 2.
BAD_TRAINING_FLAGS = [
    ("stylegan2", ["--resolution", "24"]), ("stylegan2", ["--resolution", "-8"]),
    ("stylegan2", ["--kimg", "0"]), ("stylegan2", ["--kimg", "-1"]),
    ("stylegan2", ["--keep-checkpoints", "-1"]),
    ("stylegan2", ["--batch", "-4"]), ("stylegan2", ["--lr", "-0.1"]),
    ("stylegan2", ["--progressive", "--initial-resolution", "6"]),
    ("stylegan2", ["--progressive", "--stabilize-kimg", "-1"]),
    ("stylegan2", ["--progressive", "--transition-kimg", "0"]),
    ("stylegan2", ["--fq-blocks", "16,16"]), ("stylegan2", ["--fq-num-embeddings", "-1"]),
    ("stylegan2", ["--fq-decay", "1.5"]), ("stylegan2", ["--fq-decay", "-0.2"]),
    ("stylegan2", ["--fq-alpha", "-1"]), ("stylegan2", ["--fq-warmup-kimg", "-1"]),
    ("stylegan2", ["--num-images", "-1"]), ("stylegan2", ["--sq", "--sq-dim", "0"]),
    ("stylegan2", ["--sq", "--sq-codebook", "0"]), ("stylegan2", ["--sq", "--sq-beta", "-1"]),
    ("stylegan2", ["--sq", "--sq-weight", "-1"]), ("stylegan2", ["--sq", "--sq-uniformity-t", "0"]),
    ("stylegan2", ["--sq", "--sq-cr-weight", "-1"]), ("stylegan2", ["--sq", "--sq-cr-sigma", "-1"]),
    ("stylegan2", ["--sq", "--sq-cbi-features", "/no/such/features.npy"]),
    ("stylegan2", ["--sq", "--sq-cbi-steps", "0"]), ("stylegan2", ["--sq", "--sq-cbi-lr", "0"]),
    ("stylegan2", ["--sq", "--sq-cbi-epsilon", "0"]), ("stylegan2", ["--sq", "--sq-cbi-batch", "-1"]),
    ("stylegan2", ["--sq", "--model", "stylegan"]),
    ("stylegan2", ["--seed", "-1"]), ("stylegan2", ["--tick-kimg", "0"]),
    ("stylegan2", ["--snapshot-ticks", "0"]), ("stylegan2", ["--metrics", "fid"]),
    ("stylegan2", ["--checkpoint-minutes", "-1"]), ("stylegan2", ["--config", "bogus"]),
    ("stylegan2", ["--strategy", "mirrored", "--cpu-replicas", "-1"]),
    ("biggan", ["--iterations", "-5"]), ("biggan", ["--d-steps", "-1"]),
    ("biggan", ["--fq-layers", "0,0"]), ("biggan", ["--fq-layers", "9"]),
    ("biggan", ["--batch", "-1"]), ("biggan", ["--config", "bogus"]),
    ("ugatit", ["--iterations", "-5"]), ("ugatit", ["--resolution", "30"]),
    ("ugatit", ["--fq-layers", "1,1"]), ("ugatit", ["--fq-layers", "99"]),
    ("ugatit", ["--batch", "-1"]), ("ugatit", ["--config", "bogus"]),
    # Flags of another family: an error, not silently ignored.
    ("biggan", ["--fq-blocks", "16"]), ("stylegan2", ["--fq-layers", "1"]),
    ("stylegan2", ["--iterations", "5"]), ("ugatit", ["--sq"]), ("ugatit", ["--gamma", "1"]),
    ("biggan", ["--stabilize-kimg", "10"]), ("progan", ["--light"]),
]


@pytest.mark.parametrize("model, argv", BAD_TRAINING_FLAGS,
                         ids=[f"{m}:{' '.join(a)}" for m, a in BAD_TRAINING_FLAGS])
def test_impossible_training_flags_stop_before_training(model, argv, tmp_path, capsys,
                                                        monkeypatch):
    from training import biggan, stylegan, ugatit

    def reached(*args, **kwargs):
        raise ReachedTraining(f"{argv} reached the training loop")

    for family in (stylegan, biggan, ugatit):
        monkeypatch.setattr(family, "training_loop", reached)
    out = tmp_path / "run"
    fv = tool_flags(run_training)
    fv(["run_training.py", "--model", model, "--out", str(out), *argv])
    assert run_training.run(["run_training.py"], fv) == 2
    one_line(capsys, "run_training.py")
    assert not out.exists()


def test_a_flag_of_another_family_names_itself_and_what_this_model_uses(tmp_path, capsys):
    """run_training.family_options: a flag the model's family never reads is one line naming
    it (and the flag this model has instead, where there is one), exit 2, nothing created."""
    cases = [(["--model", "biggan", "--fq-blocks", "16"],
              "--fq-blocks does not apply to --model biggan; drop it (this model: --fq-layers"),
             (["--iterations", "5", "--d-steps", "2"],
              "--d-steps, --iterations do not apply to --model stylegan2; drop them (this "
              "model: --kimg")]
    for argv, message in cases:
        out = tmp_path / "run"
        fv = tool_flags(run_training)
        fv(["run_training.py", "--out", str(out), *argv])
        assert run_training.run(["run_training.py"], fv) == 2
        assert one_line(capsys, "run_training.py").startswith("run_training.py: error: " + message)
        assert not out.exists()


def test_init_from_and_keep_checkpoints_reach_the_run_options(tmp_path, monkeypatch):
    """--init-from and --keep-checkpoints reach the run's options (RunOptions fields, set by
    run_training.py for every family; training_options.json records where a run started); by
    default a run starts from random weights and keeps 3 checkpoints. (U-GAT-IT: the family
    whose flag checks render no data.)"""
    from training import biggan, stylegan, ugatit
    seen = []

    def reached(options, *args, **kwargs):
        seen.append((options.init_from, options.keep_checkpoints))
        raise ReachedTraining

    for family in (stylegan, biggan, ugatit):
        monkeypatch.setattr(family, "training_loop", reached)
    for argv in ([], ["--init-from", "converted/x", "--keep-checkpoints", "0"]):
        fv = tool_flags(run_training)
        fv(["run_training.py", "--model", "ugatit", "--out", str(tmp_path / "run"), *argv])
        with pytest.raises(ReachedTraining):
            run_training.run(["run_training.py"], fv)
    assert seen == [("", 3), ("converted/x", 0)]


@pytest.mark.parametrize("cadence", [None, "official"])
def test_fq_update_cadence_and_warmup_reach_every_family(cadence):
    """--fq-update-cadence (default step) and --fq-warmup-kimg reach the FQ settings every
    family's trainer is built from; the flag's choices are fq_keras.UPDATE_CADENCES."""
    import fq_keras
    from training import biggan, stylegan, ugatit
    assert tuple(tool_flags(run_training)["fq-update-cadence"].parser.enum_values) == \
        fq_keras.UPDATE_CADENCES
    argv = ["--fq-preset", "paper", "--fq-warmup-kimg", "0.004"]
    argv += ["--fq-update-cadence", cadence] if cadence else []
    expected = cadence or "step"
    settings = {}
    for model, family in (("stylegan2", stylegan), ("biggan", biggan), ("ugatit", ugatit)):
        fv = tool_flags(run_training)
        fv(["run_training.py", "--model", model, *argv])
        options = family.options_from_flags(fv)
        assert options.fq_update_cadence == expected, model
        settings[model] = options
    fq = settings["stylegan2"].fq_settings()
    assert (fq.update_cadence, fq.warmup_kimg) == (expected, 0.004)
    # --fq-num-embeddings 0: StyleGAN2's official K per block (networks.stylegan2).
    settings["stylegan2"].fq_blocks = (16, 32)     # validate() fills it from the data
    assert settings["stylegan2"].fq_layer_kwargs()["fq_num_embeddings"] is None
    big = settings["biggan"].settings()
    assert big.fq_update_cadence == expected and big.fq_warmup_iterations >= 1
    # U-GAT-IT demo: batch 1, so 4 images of warm-up are 4 iterations.
    assert settings["ugatit"].fq_warmup_iterations == 4


def test_fq_blocks_default_to_the_preset_then_the_official_blocks():
    """Without --fq-blocks the StyleGAN2 demo quantises block 8 (the FQ-GAN paper's single FQ
    layer for StyleGAN at 32^2-128^2, on D's 4x4 features), config e / f StyleGAN2's official
    16,32 (those the resolution has) and StyleGAN v1 its official 8; the flag overrides every
    preset."""
    from training import stylegan

    def resolved(*argv):
        fv = tool_flags(run_training)
        fv(["run_training.py", *argv])
        options = stylegan.options_from_flags(fv)
        stylegan.validate(options)
        return options.fq_blocks

    assert resolved() == (8,)
    assert resolved("--resolution", "64") == (8,)
    assert resolved("--config", "e") == (16, 32)
    assert resolved("--config", "e", "--resolution", "16") == (16,)
    assert resolved("--model", "stylegan") == (8,)
    assert resolved("--fq-blocks", "16,32") == (16, 32)
    assert resolved("--fq-blocks", "") == ()


def test_the_stylegan2_demo_is_conditional_when_the_data_has_labels(tmp_path):
    """The StyleGAN2 demo conditions G and D on the labels of labelled data (the built-in
    shapes) and trains unconditionally on data without them; --noconditional turns it off,
    --conditional on; the official presets and the other models' demos stay unconditional unless
    --conditional is given; --conditional on data without labels is a usage error."""
    from absl import app

    from test_biggan_loop import unlabelled_dataset
    from training import stylegan
    unlabelled = unlabelled_dataset(tmp_path)

    def resolved(*argv):
        fv = tool_flags(run_training)
        fv(["run_training.py", *argv])
        options = stylegan.options_from_flags(fv)
        stylegan.validate(options)
        return options.conditional

    assert resolved() is True
    assert resolved("--noconditional") is False
    assert resolved("--dataset", unlabelled) is False
    assert resolved("--config", "e") is False
    assert resolved("--config", "e", "--conditional") is True
    assert resolved("--model", "stylegan") is False
    assert resolved("--model", "progan", "--conditional") is True
    with pytest.raises(app.UsageError, match="has no labels"):
        resolved("--dataset", unlabelled, "--conditional")


def test_intra_op_threads_default_to_one_for_the_demos_on_a_cpu():
    """training.distribute.set_intra_op_threads in a fresh process (TensorFlow's thread pools
    are fixed once it runs): 1 for a demo preset on this GPU-less machine, TensorFlow's default
    (0) for the others, the flag's value when given; a process whose TensorFlow already runs
    keeps its setting."""
    import subprocess
    import sys
    code = ("import sys; import tensorflow as tf; from training.distribute import "
            "set_intra_op_threads as s; threads = eval(sys.argv[1]); small = sys.argv[2] == '1'; "
            "print(s(threads, small_ops=small), tf.config.threading."
            "get_intra_op_parallelism_threads(), end=' '); tf.ones(1) + 1; print(s(5), end='')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="3")

    def threads(*argv):
        done = subprocess.run([sys.executable, "-c", code, *argv], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.split()

    assert threads("None", "1") == ["1", "1", "1"]    # once an op ran, 5 is not set
    assert threads("None", "0") == ["0", "0", "0"]
    assert threads("3", "1") == ["3", "3", "3"]
    assert threads("0", "1") == ["0", "0", "0"]


@pytest.fixture
def bench_on_path(monkeypatch):
    """bench/ on sys.path for the test, as `python bench/<script>.py` has it."""
    monkeypatch.syspath_prepend(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))


def test_bench_timing_pairs_each_repeat(bench_on_path):
    """bench/timing.py: variants alternate their order, overheads are per-repeat ratios (a drift
    that slows both variants of a repeat alike cancels)."""
    from timing import paired_ratio, repeat_order
    assert repeat_order({"on": 0, "off": 0}, 0) == ["on", "off"]
    assert repeat_order({"on": 0, "off": 0}, 3) == ["off", "on"]
    median, mean, error = paired_ratio([1.1, 2.2, 3.3, 1.05], [1.0, 2.0, 3.0, 1.0])
    assert np.isclose(median, 1.1) and np.isclose(mean, (3 * 1.1 + 1.05) / 4)
    assert np.isclose(error, np.std([1.1, 1.1, 1.1, 1.05], ddof=1) / 2)


def test_bench_interleaved_times_warm_each_block_and_wait_before_reading_the_clock(
        bench_on_path, monkeypatch):
    """bench/timing.interleaved_times: per repeat every variant runs `warmup` untimed steps, a
    sync, `steps` timed steps and a sync, in `repeat_order`; one entry per repeat and variant."""
    import timing
    log, clock = [], [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def variant(name, seconds):
        def run():
            log.append(name)
            clock[0] += seconds
        return run, lambda: log.append(f"{name} sync")

    times = timing.interleaved_times({"a": variant("a", 1.0), "b": variant("b", 3.0)},
                                     repeats=2, steps=2, warmup=1)
    block = lambda n: [n, f"{n} sync", n, n, f"{n} sync"]  # noqa: E731
    assert log == block("a") + block("b") + block("b") + block("a")
    assert times == {"a": [1.0, 1.0], "b": [3.0, 3.0]}   # per step, warm-up not counted
    # Copies in a balanced build order, pooled per repeat.
    assert timing.balanced_copies(["on", "off"], 3) == [
        ("on", 0), ("off", 0), ("off", 1), ("on", 1), ("on", 2), ("off", 2)]
    pooled = timing.pooled_times({("on", 0): [1.0, 2.0], ("on", 1): [3.0, 4.0],
                                  ("off", 0): [1.0, 1.0], ("off", 1): [1.0, 3.0]}, 2)
    assert pooled == {"on": [2.0, 3.0], "off": [1.0, 2.0]}
    # The pooled ratio's error from the spread between copies (each copy's median):
    # on 1.5 and 3.5, off 1.0 and 2.0 -> sqrt(2 / (2 * 2.5^2) + 0.5 / (2 * 1.5^2)) * 2.5 / 1.5.
    error = timing.between_copies_error({("on", 0): [1.0, 2.0], ("on", 1): [3.0, 4.0],
                                         ("off", 0): [1.0, 1.0], ("off", 1): [1.0, 3.0]},
                                        "on", "off", 2)
    assert np.isclose(error, np.sqrt(2 / 12.5 + 0.5 / 4.5) * 2.5 / 1.5)
    assert np.isnan(timing.between_copies_error({("on", 0): [1.0], ("off", 0): [1.0]},
                                                "on", "off", 1))
    line = timing.describe_overhead("x:", [1.1, 1.1], [1.0, 1.0], 0.004)
    assert line.endswith("+- 0.0; +- 0.4 between copies)") and line.startswith("x: 1.100x")
    # One repeat and one copy: no error to print (not "+- nan").
    assert timing.describe_overhead("x:", [1.1], [1.0], float("nan")) == \
        "x: 1.100x (median of 1 paired repeats, +10.0%; mean +10.0%)"


def test_bench_interleaved_cycles_alternate_item_by_item_and_sum_each_cycle(
        bench_on_path, monkeypatch):
    """bench/timing.interleaved_cycles: each item of the cycle runs on every variant back to
    back (a sync after each), the order alternating from item to item across repeats; one
    entry per repeat and variant, the sum of its items' seconds."""
    import timing
    log, clock = [], [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def variant(name, seconds):
        def run(item):
            log.append(f"{name}{item}")
            clock[0] += seconds * item
        return run, lambda: log.append(f"{name} sync")

    times = timing.interleaved_cycles({"a": variant("a", 1.0), "b": variant("b", 3.0)},
                                      cycle=[1, 2, 4], repeats=2)
    pairs = lambda *names: sum(([n, f"{n[0]} sync"] for n in names), [])  # noqa: E731
    assert log == pairs("a1", "b1", "b2", "a2", "a4", "b4",    # repeat 0
                        "b1", "a1", "a2", "b2", "b4", "a4")    # repeat 1 goes on alternating
    assert times == {"a": [7.0, 7.0], "b": [21.0, 21.0]}


def test_bench_time_copies_builds_in_balanced_order_and_compiles_each_once(
        bench_on_path, monkeypatch, capsys):
    """bench/timing.time_copies: copies built in `balanced_copies` order, each run and synced
    once right after it is built, then timed interleaved; raw per-copy and pooled times."""
    import timing
    log, clock = [], [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    seconds = {"on": [1.0, 3.0], "off": [1.0, 1.0], "single": [5.0]}   # per copy
    built = []

    def builder(name):
        def build():
            copy = sum(n == name for n in built)
            built.append(name)

            def run():
                log.append((name, copy))
                clock[0] += seconds[name][copy]
            return run, lambda: None
        return build

    times, pooled = timing.time_copies({"on": builder("on"), "off": builder("off")}, 2,
                                       repeats=2, warmup=0, singles={"single": builder("single")})
    assert built == ["on", "off", "off", "on", "single"]
    assert log[:5] == [("on", 0), ("off", 0), ("off", 1), ("on", 1), ("single", 0)]   # compile
    assert log[5:10] == log[:5] and log[10:] == log[:5][::-1]   # repeats, alternating order
    assert times == {("on", 0): [1.0, 1.0], ("off", 0): [1.0, 1.0], ("off", 1): [1.0, 1.0],
                     ("on", 1): [3.0, 3.0], "single": [5.0, 5.0]}
    assert pooled == {"on": [2.0, 2.0], "off": [1.0, 1.0], "single": [5.0, 5.0]}
    out = capsys.readouterr().out
    assert "compiled off #2" in out and "compiled single " in out and "single #" not in out
    line = timing.describe_copies("x:", times, "on", "off", 2)
    assert line.startswith("x: 2.000x") and "between copies" in line
    assert timing.of_copies(1) == "one copy" and timing.of_copies(3) == "mean of 3 copies"


def test_bench_kernel_trace_counts_busy_cores(bench_on_path):
    """bench/kernel_trace.busy_cores: per time bin, the threads running a kernel (a thread's
    nested kernels once), and the phase with the most kernel time."""
    from kernel_trace import KernelEvent, busy_cores
    events = [KernelEvent("t0", 10.0, 13.75, "Gmain", "Conv2D", "Gmain/conv"),
              KernelEvent("t0", 11.0, 12.0, "Gmain", "Mul", "Gmain/mul"),   # nested: once
              KernelEvent("t1", 10.0, 10.5, "Dmain", "Conv2D", "Dmain/conv"),
              KernelEvent("t1", 13.0, 14.0, "Dmain", "Conv2D", "Dmain/conv_1")]
    width, busy, phases = busy_cores(events, 4)
    assert width == 1.0
    assert busy == [1.5, 1.0, 1.0, 1.75]
    assert phases == ["Gmain", "Gmain", "Gmain", "Dmain"]   # bin 3: G 0.75 s, D 1 s
    width, busy, phases = busy_cores(events, 8)   # half-second bins: [10, 10.5) ... [13.5, 14)
    assert width == 0.5 and busy == [2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.5]
    assert busy_cores([], 4) == (0.0, [], [])


def test_bench_timing_quiet_retracing_drops_only_that_warning(bench_on_path, caplog):
    """bench/timing.quiet_retracing: inside the block TensorFlow's retracing warning is dropped
    (the benches build copies of one step on purpose) and its other records pass; after it,
    the warning passes again."""
    import logging
    import timing
    logger = logging.getLogger("tensorflow")
    retracing = ("5 out of the last 5 calls to <function run_iterations at 0x7f> triggered "
                 "tf.function retracing. Tracing is expensive")
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        with timing.quiet_retracing():
            logger.warning(retracing)
            logger.warning("another warning")
        logger.warning(retracing)
    assert [r.getMessage() for r in caplog.records] == ["another warning", retracing]


def test_bench_fq_work_runs_an_iterations_fq_on_fresh_copies(bench_on_path):
    """bench/fq_work: one iteration's FQ work per FQ layer (three look-ups with gradients, the
    D step's fakes in lanes, one dictionary update) on copies with the layers' settings, which
    update once per iteration while the discriminator's own dictionaries stay untouched."""
    import fq_work
    import numpy as np
    from networks import stylegan2
    D = stylegan2.Discriminator(resolution=16, fq_blocks=(16, 8), fmap_base=64, fmap_max=16,
                                fq_decay=0.9)
    D(np.zeros((4, 16, 16, 3), np.float32))
    before = [layer.embeddings.numpy() for layer in D.fq_layers]
    run, sync, copies = fq_work.fq_iteration(D, batch=4, lanes=2)
    run()
    run()
    sync()
    for layer, copy, embeddings in zip(D.fq_layers, copies, before):
        assert copy is not layer and copy.get_config()["decay"] == 0.9
        assert (copy.num_embeddings, copy.channels) == (layer.num_embeddings, layer.channels)
        assert int(copy.num_updates.numpy()) == 2 and int(layer.num_updates.numpy()) == 0
        np.testing.assert_array_equal(layer.embeddings.numpy(), embeddings)
    assert fq_work.time_fq_iteration(D, batch=4, repeats=1, calls=1) > 0
    assert fq_work.time_fq_iteration(stylegan2.Discriminator(resolution=8, fmap_base=64,
                                                             fmap_max=16), batch=4) is None


def test_bench_peer_counts_a_convolutions_flops_whichever_op_takes_its_filter_gradient(
        bench_on_path):
    """bench/bench_peer.graph_flops of a traced convolution with both gradients: three times
    the forward convolution's 2 |y| k k I, with the filter gradient taken by TensorFlow's
    Conv2DBackpropFilter or by networks.layers' matrix products (counted as the convolution
    they replace, not with the zero rows they also multiply): stride 1 (3x3, 1x1), stride 2
    (StyleGAN2's 3x3 and 1x1 downsampling) and the transposed stride 2 (its upsampling)."""
    import bench_peer
    import tensorflow as tf
    from networks import layers

    cases = [  # (convolution, x shape, w shape, |y| = output elements / O)
        (layers.conv2d_same, [2, 8, 6, 5], [3, 3, 5, 7], 2 * 8 * 6),
        (layers.conv2d_same, [2, 8, 6, 5], [1, 1, 5, 7], 2 * 8 * 6),
        (layers.conv2d_stride2, [2, 9, 7, 5], [3, 3, 5, 7], 2 * 4 * 3),
        (layers.conv2d_stride2, [2, 8, 6, 5], [1, 1, 5, 7], 2 * 4 * 3),
        # transposed: y (2, 9, 7, 7) from x (2, 4, 3, 5); its cost is the stride-2 one's.
        (lambda x, w: layers.conv2d_stride2_transpose(x, w, (9, 7)), [2, 4, 3, 5],
         [3, 3, 7, 5], 2 * 4 * 3),
    ]
    for conv, x_shape, w_shape, positions in cases:
        def gradients(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = conv(x, w)
            return tape.gradient(y, [x, w])

        specs = tf.TensorSpec(x_shape), tf.TensorSpec(w_shape)
        k, _, i, o = w_shape
        expected = 3 * 2 * positions * k * k * i * o
        with layers.filter_gradients("native"):
            native = tf.function(gradients).get_concrete_function(*specs).graph
        with layers.filter_gradients("products"):
            ours = tf.function(gradients).get_concrete_function(*specs).graph
        assert "Conv2DBackpropFilter" in {op.type for op in native.get_operations()}
        assert "MatMul" in {op.type for op in ours.get_operations()}
        assert bench_peer.graph_flops(native) == expected, (conv, w_shape)
        assert bench_peer.graph_flops(ours) == expected, (conv, w_shape)


def test_bench_peer_reads_the_reference_sides_rate_from_its_command(bench_on_path):
    """bench/bench_peer.reference_img_per_s (--reference-cmd): RES BATCH 16 appended to the
    command; the rate from peer_sg2ada.py's "(N iters, S s" (batch N / S, unrounded) when
    printed, else its last "x img/s"; a command that fails, prints no rate or does not exist
    is one line (app.UsageError) naming --reference-cmd."""
    import shlex
    import sys
    from absl import app
    import bench_peer

    def command(code):
        return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"

    as_peer = command("import sys; res, batch, iters = sys.argv[1:]; print('sg2ada-pytorch %s "
                      "batch %s: 4.7 img/s (%s iters, 100.0 s, torch x, 2 threads)' % "
                      "(res, batch, iters))")
    assert bench_peer.reference_img_per_s(as_peer, 32, 32) == pytest.approx(32 * 16 / 100.0)
    assert bench_peer.reference_img_per_s(as_peer, 64, 8) == pytest.approx(8 * 16 / 100.0)
    assert bench_peer.reference_img_per_s(command("print('1 img/s'); print('2.25 img/s')"),
                                          32, 32) == 2.25
    with pytest.raises(app.UsageError, match=r"--reference-cmd exited with 3 without an img/s "
                                             r"figure: boom"):
        bench_peer.reference_img_per_s(command("import sys; print('boom', file=sys.stderr); "
                                               "sys.exit(3)"), 32, 32)
    with pytest.raises(app.UsageError, match="exited with 0 without an img/s figure: fast"):
        bench_peer.reference_img_per_s(command("print('fast')"), 32, 32)
    with pytest.raises(app.UsageError, match="--reference-cmd: cannot run /nonexistent/python"):
        bench_peer.reference_img_per_s("/nonexistent/python peer.py", 32, 32)


def test_bench_kernel_trace_finds_a_layers_kernels(bench_on_path):
    """bench/kernel_trace.in_scopes: the kernels of a layer's calls ("fq16", "fq16_1"), of its
    gradient and of its update scope, not those of a layer whose name only starts alike, nor an
    op that merely has the name."""
    from kernel_trace import KernelEvent, in_scopes
    names = ["while/Dmain/D_1/fq16_1/BiasAdd", "while/Gmain/D/fq16/TopKV2",
             "gradient_tape/while/Dmain/D_1/fq16_1/mul_1", "while/Dmain/fq16_update/ScatterNd",
             "while/Dmain/D_1/fq160/BiasAdd", "while/Dmain/D_1/b16/fq16", "while/Dmain/fq16x/Mul"]
    events = [KernelEvent("t0", i, i + 1.0, "Dmain", "Op", name) for i, name in enumerate(names)]
    assert [e.op_name for e in in_scopes(events, ["fq16", "fq32"])] == names[:4]
    assert in_scopes(events, []) == []


def test_bench_kernel_trace_reads_kernels_and_xla_calls(bench_on_path, tmp_path):
    """bench/kernel_trace.kernel_events on a written trace: executor kernels ("name:type"), an
    XLA-compiled function call as one XlaCompiledCall kernel over its launch span, named (and so
    phased and scoped) by the call's op; an asynchronous collective by its own type; skipped:
    function calls without an XLA run, containers and the host's "::" spans."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    from kernel_trace import ASYNC_START, XLA_RUN, in_scopes, kernel_events
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    ids = {}

    def metadata(table, name):   # the id of `name` in `table` (added on first use)
        key = (id(table), name)
        if key not in ids:
            ids[key] = len(ids) + 1
            table[ids[key]].id, table[ids[key]].name = ids[key], name
        return ids[key]

    line = plane.lines.add(name="tf_Compute/1", timestamp_ns=1000)

    def event(event_name, start_us, duration_us, **stats):
        e = line.events.add(metadata_id=metadata(plane.event_metadata, event_name),
                            offset_ps=start_us * 10**6, duration_ps=duration_us * 10**6)
        for key, value in stats.items():
            e.stats.add(metadata_id=metadata(plane.stat_metadata, key),
                        ref_value=metadata(plane.stat_metadata, value))

    event("Dmain/D/fq16/MatMul:MatMul", 0, 10)
    event(ASYNC_START, 20, 30, name="Dmain/fq16_update/PartitionedCall",
          kernel_type="PartitionedCall")
    event(XLA_RUN, 25, 10)
    event(ASYNC_START, 60, 5, name="Gmain/PartitionedCall_1", kernel_type="PartitionedCall")
    event(ASYNC_START, 70, 8, name="Dmain/all_reduce", kernel_type="CollectiveReduceV2")
    event("ThreadpoolListener::StartRegion", 71, 0)
    event("Gmain/StatefulPartitionedCall:StatefulPartitionedCall", 80, 50)
    with open(tmp_path / "host.xplane.pb", "wb") as f:
        f.write(space.SerializeToString())
    events = kernel_events(str(tmp_path), ("Gmain", "Dmain"))
    assert [(e.op_type, e.op_name, e.phase) for e in events] == [
        ("MatMul", "Dmain/D/fq16/MatMul", "Dmain"),
        ("XlaCompiledCall", "Dmain/fq16_update/PartitionedCall", "Dmain"),
        ("CollectiveReduceV2", "Dmain/all_reduce", "Dmain")]
    start = 1000e-9
    assert events[1].start == pytest.approx(start + 20e-6) and \
        events[1].end == pytest.approx(start + 50e-6)
    assert [e.op_type for e in in_scopes(events, ["fq16"])] == ["MatMul", "XlaCompiledCall"]


def test_bench_kernel_trace_finds_xla_calls_in_a_real_trace(bench_on_path, tmp_path):
    """The trace TensorFlow writes has the spans kernel_events reads: a jit_compile function
    called under a layer's update scope (as fq_keras.codebook.code_sums) is one XlaCompiledCall
    kernel in that scope and phase."""
    import tensorflow as tf
    from kernel_trace import in_scopes, kernel_events
    sums = tf.function(lambda x: tf.math.unsorted_segment_sum(x, [0, 1, 0], 2),
                       jit_compile=True, autograph=False)

    @tf.function(autograph=False)
    def step(x):
        with tf.name_scope("Dmain"), tf.name_scope("fq16_update"):
            return sums(x * 2.0)

    x = tf.ones((3, 4))
    step(x)   # traced and compiled outside the trace
    tf.profiler.experimental.start(str(tmp_path))
    try:
        step(x).numpy()
    finally:
        tf.profiler.experimental.stop()
    found = [e for e in in_scopes(kernel_events(str(tmp_path), ("Dmain",)), ["fq16"])
             if e.op_type == "XlaCompiledCall"]
    assert len(found) == 1 and found[0].phase == "Dmain" and found[0].end > found[0].start


def test_bench_scripts_use_dashes_too():
    import glob
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = []
    for path in glob.glob(os.path.join(root, "bench", "*.py")):
        with open(path) as f:
            names += re.findall(r'flags\.DEFINE_\w+\(\s*"([^"]+)"', f.read())
    assert len(names) > 20 and not [n for n in names if "_" in n]


def test_every_model_family_module_has_the_family_interface():
    import importlib
    from training.run_options import RunOptions, TrainingFamily
    for model, name in run_training.FAMILIES.items():
        module = importlib.import_module(name)
        assert isinstance(module, TrainingFamily), name
        assert issubclass(module.Options, RunOptions) and model in module.Options.MODELS


# Values that parse but cannot work, for the other tools: each is one line and exit 2 before
# anything is loaded ("{tmp}" is a fresh folder, "{missing}" a path that does not exist).
BAD_TOOL_FLAGS = [
    ("run_generator.py", ["generate-images", "--network", "{missing}", "--seeds", ""]),
    ("run_generator.py", ["generate-images", "--network", "{missing}", "--seeds", "5-2"]),
    ("run_generator.py", ["generate-images", "--network", "{missing}", "--seeds", "x"]),
    ("run_generator.py", ["generate-images", "--network", "{missing}", "--seeds", "1",
                          "--trunc", "abc"]),
    ("run_generator.py", ["generate-images", "--network", "{missing}", "--seeds", "1"]),
    ("run_generator.py", ["style-mixing-example", "--network", "{missing}", "--row-seeds", "1",
                          "--col-seeds", "2", "--col-styles", "9-3"]),
    ("run_generator.py", ["truncation-sweep", "--network", "{missing}", "--seeds", "1",
                          "--psis", "a,b"]),
    ("run_generator.py", ["no-such-command", "--network", "{missing}"]),
    ("run_export.py", ["--network", "{missing}"]),
    ("run_export.py", ["--network", "{tmp}", "--truncation-cutoff", "-3"]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", ""]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", "swd,xyz"]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", "swd",
                        "--swd-images", "0"]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", "swd",
                        "--batch", "-1"]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", "ms_ssim",
                        "--ms-ssim-images", "7"]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", "fid"]),
    ("run_metrics.py", ["--network", "{missing}", "--dataset", "shapes", "--metrics", "swd"]),
    ("run_convert.py", ["--network", "{missing}", "--outdir", "{tmp}/o"]),
    ("run_convert.py", ["--network", "{missing}", "--outdir", "{tmp}/o", "--resolution", "64"]),
    ("run_convert.py", ["--network", "{tmp}", "--outdir", "{tmp}/o"]),
    ("run_translation.py", ["--network", "{missing}", "--input", "{tmp}", "--outdir", "{tmp}/o",
                            "--batch", "0"]),
    ("run_translation.py", ["--network", "{missing}", "--input", "{tmp}", "--outdir", "{tmp}/o",
                            "--resolution", "30"]),
    ("run_translation.py", ["--network", "{missing}", "--input", "{missing}", "--outdir",
                            "{tmp}/o"]),
    ("run_translation.py", ["--network", "{missing}", "--input", "{tmp}", "--outdir", "{tmp}/o"]),
]


@pytest.mark.parametrize("tool, argv", BAD_TOOL_FLAGS,
                         ids=[f"{t}:{' '.join(a)}" for t, a in BAD_TOOL_FLAGS])
def test_impossible_tool_arguments_are_one_line_and_write_nothing(tool, argv, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv = [a.replace("{tmp}", str(work)).replace("{missing}", str(tmp_path / "missing"))
            for a in argv]
    module = TOOLS[tool]
    fv = tool_flags(module)
    rest = fv([tool, *argv])
    assert module.run(rest, fv) == 2
    one_line(capsys, tool)
    assert os.listdir(work) == [] and not (tmp_path / "missing").exists()


# ---------------------------------------------------------------------------------------------
# The one progress line of long work (cli_common.Progress).

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_rewrites_one_line_in_place():
    stream = Terminal()
    progress = cli_common.Progress(10, "Generating", unit="seeds", stream=stream, interval=0)
    for _ in range(10):
        progress.update()
    progress.close()
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith(" s\033[K\n")   # one line, ended once
    updates = text.split("\r")[1:]
    assert len(updates) == 10   # interval 0: every update but the last, then the final line
    assert re.fullmatch(r"Generating: 3/10 seeds  [\d.]+ seeds/s  ETA \d:\d\d:\d\d\033\[K",
                        updates[2])
    assert re.fullmatch(r"Generating: 10/10 seeds  [\d.]+ seeds/s  [\d.]+ s\033\[K\n",
                        updates[-1])


def test_progress_in_a_log_is_a_few_plain_lines():
    """Not a terminal (a CI log, a file): a line at each quarter (the first minibatch that
    reaches it) and the final one, never one per step."""
    stream = io.StringIO()
    batches = [np.zeros((8, 2)) for _ in range(125)]   # 1000 images in minibatches of 8
    seen = list(cli_common.progress(batches, 1000, "SWD, reals", count=len, stream=stream))
    assert len(seen) == 125
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "SWD, reals: 256/1000 images", "SWD, reals: 504/1000 images",
        "SWD, reals: 752/1000 images", "SWD, reals: 1000/1000 images"]
    assert "\r" not in stream.getvalue() and lines[-1].endswith(" s")


def test_progress_costs_microseconds_per_item():
    progress = cli_common.Progress(10 ** 9, "x", stream=io.StringIO())
    start = time.perf_counter()
    for _ in range(10000):
        progress.update()
    assert (time.perf_counter() - start) / 10000 < 20e-6   # measured: ~0.2 us


def test_training_tools_turn_onednn_on_unless_the_user_chose():
    """cli_common.training_environment: oneDNN kernels on (TF_ENABLE_ONEDNN_OPTS=1) and no
    start-up chatter, set by run_training.py before TensorFlow is imported (TensorFlow reads
    the setting once, on import); a value in the environment wins; in a process that has
    TensorFlow loaded already (this one) nothing is set, so nothing leaks into the child
    processes of other tests."""
    before = dict(os.environ)
    cli_common.training_environment()
    assert dict(os.environ) == before
    import platform
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import run_training; import os; from tensorflow.python.util import "
            "_pywrap_util_port as port; print(os.environ['TF_ENABLE_ONEDNN_OPTS'], "
            "os.environ['TF_CPP_MIN_LOG_LEVEL'], port.IsMklEnabled())")
    seen = {}
    for chosen in (None, "0"):
        env = {k: v for k, v in os.environ.items()
               if k not in ("TF_ENABLE_ONEDNN_OPTS", "TF_CPP_MIN_LOG_LEVEL")}
        env["CUDA_VISIBLE_DEVICES"] = "-1"
        if chosen is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = chosen
        done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        seen[chosen] = done.stdout.split()
    assert seen[None][:2] == ["1", "2"] and seen["0"][:2] == ["0", "2"]
    if platform.machine() in ("x86_64", "AMD64"):   # TensorFlow's oneDNN switch is x86's
        assert seen[None][2] == "True" and seen["0"][2] == "False", seen


# TensorFlow 2.21's start-up lines on a CPU machine without an NVIDIA driver (copied from a run).
STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796501715.507588   30777 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796501715.508069   30777 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "E0000 00:00:1796501718.188257   30777 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
]


def test_startup_noise_filter_drops_only_tensorflows_start_up_lines():
    keep = cli_common.StartupNoiseFilter().keep
    assert [keep(line) for line in STARTUP_LINES] == [False] * 4
    for line in ("E0000 00:00:1796501718.188257   30777 meta_optimizer.cc:967] remapper failed",
                 "W0000 00:00:1796501718.1   30777 op_level_cost_estimator.cc:699] Error",
                 "Traceback (most recent call last):", "oneDNN custom operations are on. "):
        assert keep(line), line
    # With a driver (no "Could not find cuda drivers" line first) a failed cuInit is a real
    # error, a driver and CUDA mismatch say: shown.
    assert cli_common.StartupNoiseFilter().keep(STARTUP_LINES[3])


def test_filtered_stderr_forwards_other_lines_and_restores_the_descriptor():
    """In a child process (descriptor 2 is the test's to read): C-level writes to descriptor 2
    inside the action pass the filter line by line, a raised error still restores descriptor 2
    with every line forwarded, and later writes are unfiltered."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import os, sys, cli_common\n"
        "def action():\n"
        f"    os.write(2, {(chr(10).join(STARTUP_LINES) + chr(10)).encode()!r})\n"
        "    os.write(2, b'real line 1\\nreal ')\n"
        "    print('python line', file=sys.stderr)\n"
        "    os.write(2, b'line 2 without newline')\n"
        "    raise KeyError('boom')\n"
        "try:\n"
        "    cli_common.filtered_stderr(action, cli_common.StartupNoiseFilter().keep)\n"
        "except KeyError:\n"
        "    os.write(2, b'|after: ' + " + repr(STARTUP_LINES[0].encode()) + ")\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.decode() == ("real line 1\nreal python line\nline 2 without newline"
                                    f"|after: {STARTUP_LINES[0]}")


def test_tensorflow_starts_without_its_start_up_noise():
    """What run_training.py and the training benches do before anything else: TensorFlow
    imported with none of STARTUP_NOISE on stderr (on a machine whose TensorFlow prints other
    start-up lines this fails, and the patterns need updating), the thread settings still
    free to change."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import cli_common; cli_common.training_environment(); "
            "cli_common.import_tensorflow_quietly(); import tensorflow as tf; "
            "tf.config.threading.set_intra_op_parallelism_threads(1); print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-2000:]
    noise = [line for line in done.stderr.splitlines()
             if "cuInit" in line or any(p.match(line) for p in cli_common.STARTUP_NOISE)]
    assert not noise, done.stderr
