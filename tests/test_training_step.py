"""The training step as the loop runs it: precision and XLA, compiled iterations, lanes,
fused phases, the batch taken in the graph under two replicas.

The loop's own behaviour (resume, run folders, signals, CLI) is test_training_loop.py's.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.stylegan import StyleGANRun, TrainingOptions, training_loop

from test_training_loop import checkpoint_values, options, quiet, run_cli
from test_ugatit_loop import killed_copy


@pytest.mark.parametrize("model", ["stylegan", "stylegan2"])
@pytest.mark.parametrize("setting", [dict(precision="mixed_float16"),
                                     dict(precision="mixed_bfloat16"), dict(xla=True)])
def test_mixed_precision_and_xla_run_without_nan(tmp_path, setting, model):
    """At 8x8: StyleGAN2 one step, with all four phases (lazy R1 and path length: nested tapes
    under loss scaling / bfloat16 / XLA; the main-phase-only step compiles a subset of it);
    StyleGAN two steps (one compiled step). Every logged value and every variable after the
    updates (checkpoint: networks, Gs, optimizer slots) is finite, and the global dtype policy
    is restored."""
    import keras
    kimg = 0.008 if model == "stylegan2" else 0.016
    try:
        summary = training_loop(options(**setting, model=model, kimg=kimg,
                                        tick_kimg=0.008), str(tmp_path), log=quiet)
        # The loop sets the policy for building its networks only.
        assert keras.mixed_precision.global_policy().name == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    logged = [json.loads(line) for line in open(os.path.join(str(tmp_path), "log.jsonl"))]
    assert logged[0]["start"]["precision"] == setting.get("precision", "float32")
    for entry in logged[1:]:   # the scalars after the start record
        for key, value in entry.items():
            assert np.isfinite(value), (key, value)
    for name, value in checkpoint_values(str(tmp_path)).items():
        assert value.dtype.kind not in "f" or np.all(np.isfinite(value)), name
    assert summary["kimg"] == kimg



def test_a_bfloat16_run_resumes_exactly(tmp_path, op_determinism):
    """mixed_bfloat16, the demo's precision on CPUs with AMX: a StyleGAN2 run (8x8, 4 steps,
    lazy R1 in step 1) killed after its snapshot at step 2 and resumed through run_training.py
    trains under the policy it saved and ends bit-identical to the run straight through."""
    run = dict(model="stylegan2", precision="mixed_bfloat16", kimg=0.032, tick_kimg=0.008,
               snapshot_ticks=2)
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    os.makedirs(straight), os.makedirs(stopped)
    a = training_loop(options(**run), straight, log=quiet)
    killed_copy(straight, stopped, 16)
    assert run_cli(["--out", stopped, "--resume", "--deterministic"]) == 0
    start = json.loads(open(os.path.join(stopped, "log.jsonl")).readline())["start"]
    assert start["precision"] == "mixed_bfloat16"
    with open(os.path.join(stopped, "summary.json")) as f:
        b = json.load(f)
    values_a, values_b = checkpoint_values(straight), checkpoint_values(stopped)
    assert sorted(values_a) == sorted(values_b) and b["kimg"] == a["kimg"] == 0.032
    for name in values_a:
        np.testing.assert_array_equal(values_a[name], values_b[name], err_msg=name)
    assert a["state_fingerprint"] == b["state_fingerprint"]



def test_compiled_step_with_lanes_equals_the_whole_batch():
    """The loop's CompiledStep (G main + D main iterations in one call, a while loop in the
    graph, then an iteration with the lazy R1) with the D step's fakes in two lanes, against
    one lane: RNG states equal, every weight and the FQ dictionary within the float32 bound of
    test_trainer.assert_same_state (SGD, so gradient rounding stays rounding)."""
    from test_trainer import assert_same_state, use_sgd
    from training.loop import CompiledStep
    from training.stylegan import build_networks, build_trainer
    res, batch = 8, 8
    rng = np.random.RandomState(0)
    reals = tf.constant(np.tanh(rng.randn(batch, res, res, 3)).astype(np.float32))
    labels = tf.constant(np.eye(5, dtype=np.float32)[rng.randint(5, size=batch)])
    run_options = TrainingOptions(resolution=res, batch=batch, fq_blocks=(8,))
    results = []
    for lanes in (1, 2):
        keras.utils.set_random_seed(3)
        G, D = build_networks(run_options, 3, 5)
        trainer = build_trainer(run_options, G, D)
        trainer.lanes = lanes
        use_sgd(trainer)
        assert (trainer._d_step_lanes(batch) is not None) == (lanes == 2)
        before = {v.path: v.numpy() for v in trainer.G.weights + trainer.D.weights}
        step = CompiledStep.standalone(trainer, res, batch)
        batches = iter(tf.data.Dataset.from_tensors((reals, labels)).repeat())
        step(batches, trainer.phases_of_iteration(False, False), 3)
        step(batches, trainer.phases_of_iteration(False, True))
        results.append(trainer)
    whole, laned = results
    for state in (lambda t: t.seed_generator.state, lambda t: t.G.synthesis.seed_generator.state):
        np.testing.assert_array_equal(state(laned).numpy(), state(whole).numpy())
    for a, b in zip(whole.G.weights + whole.D.weights, laned.G.weights + laned.D.weights):
        assert_same_state(b.numpy(), a.numpy(), before[a.path], steps=4, err_msg=a.path)
    np.testing.assert_allclose(laned.D.fq_layers[0].embeddings.numpy(),
                               whole.D.fq_layers[0].embeddings.numpy(), atol=1e-5)


def test_fused_main_phases_give_the_numbers_of_one_function_per_phase(op_determinism):
    """CompiledStep runs G main and D main in one function when no path-length phase can come
    between them (the demo): the state and logs after iterations with and without lazy R1 are
    the same bits as with every phase in its own function."""
    from training.loop import CompiledStep
    from training.stylegan import build_networks, build_trainer
    res, batch = 8, 8
    rng = np.random.RandomState(0)
    reals = tf.constant(np.tanh(rng.randn(batch, res, res, 3)).astype(np.float32))
    labels = tf.constant(np.eye(5, dtype=np.float32)[rng.randint(5, size=batch)])
    run_options = TrainingOptions(resolution=res, batch=batch, fq_blocks=(8,), config="demo")
    results = []
    for fuse in (True, False):
        keras.utils.set_random_seed(3)
        G, D = build_networks(run_options, 3, 5)
        trainer = build_trainer(run_options, G, D)
        step = CompiledStep.standalone(trainer, res, batch)
        assert step.fuse_main
        step.fuse_main = fuse
        batches = iter(tf.data.Dataset.from_tensors((reals, labels)).repeat())
        groups = []
        for iteration in range(4):
            phases = trainer.phases_of_iteration(iteration % 2 == 1, iteration % 2 == 1)
            groups.append(step.groups(phases))
            step(batches, phases)
        state = {v.path: v.numpy() for v in trainer.G.weights + trainer.D.weights
                 + trainer.Gs.weights}
        results.append((groups, state, step.accumulator.read_and_reset()))
    (fused_groups, fused, fused_logs), (split_groups, split, split_logs) = results
    assert fused_groups == [[("Gmain", "Dmain")], [("Gmain", "Dmain"), ("Dreg",)]] * 2
    assert split_groups == [[("Gmain",), ("Dmain",)], [("Gmain",), ("Dmain",), ("Dreg",)]] * 2
    assert fused.keys() == split.keys() and fused_logs == split_logs
    for name in fused:
        np.testing.assert_array_equal(fused[name], split[name], err_msg=name)


def test_with_path_length_every_phase_is_its_own_function(monkeypatch):
    """With lazy path length (config e's schedule and losses) G main and D main do not fuse:
    fused, they would be traced twice (alone around the path length, and fused). Only the
    grouping is asserted: with one function per phase either way there is nothing to run
    against."""
    from training import stylegan as stylegan_training
    from training.loop import CompiledStep
    from training.stylegan import build_networks, build_trainer
    presets = stylegan_training.CONFIG_PRESETS["stylegan2"]
    monkeypatch.setitem(presets, "e", dict(presets["e"], **{
        key: presets["demo"][key] for key in ("fmap_base", "fmap_max", "latent_dim",
                                              "mapping_layers")}))
    run_options = TrainingOptions(resolution=8, batch=8, fq_blocks=(8,), config="e")
    trainer = build_trainer(run_options, *build_networks(run_options, 3, 0))
    step = CompiledStep.standalone(trainer, 8, 8)
    assert trainer.loss_settings.lazy_pl and not step.fuse_main
    assert [step.groups(trainer.phases_of_iteration(i % 4 == 0, i % 16 == 0))
            for i in (0, 1, 4)] == [[("Gmain",), ("Greg",), ("Dmain",), ("Dreg",)],
                                    [("Gmain",), ("Dmain",)],
                                    [("Gmain",), ("Greg",), ("Dmain",)]]
    assert not step.in_one_call(trainer.phases_of_iteration(False, False))


def test_a_run_with_iterations_per_call_equals_one_call_each(tmp_path, op_determinism,
                                                            monkeypatch):
    """The StyleGAN2 demo's loop runs the G main + D main iterations between lazy R1 steps in
    one call, cut at the ticks (12.5 iterations here) and the stop: the run ends with the state
    and the ticks of a run that makes one call per iteration."""
    from training.loop import CompiledStep
    calls = []
    original_call, original_step = CompiledStep.__call__, StyleGANRun.step

    def counted(self, iterator, phases, iterations=1):
        calls.append(iterations)
        return original_call(self, iterator, phases, iterations)

    monkeypatch.setattr(CompiledStep, "__call__", counted)
    summaries, ticks = [], []
    for one_each in (False, True):
        if one_each:   # no room for a second iteration in any step
            monkeypatch.setattr(StyleGANRun, "step", lambda self, nimg, max_images:
                                original_step(self, nimg, 1))
        calls.clear()
        run_dir = str(tmp_path / f"run{int(one_each)}")
        os.makedirs(run_dir)
        summaries.append(training_loop(options(model="stylegan2", config="demo", kimg=0.136,
                                               tick_kimg=0.1, snapshot_ticks=2), run_dir,
                                       log=quiet))
        entries = [json.loads(line) for line in open(os.path.join(run_dir, "log.jsonl"))]
        ticks.append([e["progress/kimg"] for e in entries if "progress/kimg" in e])
        # R1 at iterations 0 and 16 (the last); the first tick ends after image 104.
        assert calls == ([1] * 17 if one_each else [1, 11, 1, 3, 1])
    assert ticks[0] == ticks[1] == pytest.approx([0.104, 0.136])
    assert summaries[0]["state_fingerprint"] == summaries[1]["state_fingerprint"]


def test_iterations_in_one_call_give_the_numbers_of_one_call_each(op_determinism):
    """CompiledStep runs several G main + D main iterations in one call (a while loop in the
    graph): after an iteration with lazy R1 and five in one call, state, nimg and logs are the
    same bits as with one call per iteration; other phases refuse several iterations per
    call."""
    from training.loop import CompiledStep
    from training.stylegan import build_networks, build_trainer
    res, batch = 8, 8
    rng = np.random.RandomState(0)
    reals = tf.constant(np.tanh(rng.randn(6 * batch, res, res, 3)).astype(np.float32))
    labels = tf.constant(np.eye(5, dtype=np.float32)[rng.randint(5, size=6 * batch)])
    run_options = TrainingOptions(resolution=res, batch=batch, fq_blocks=(8,), config="demo")
    results = []
    for looped in (True, False):
        keras.utils.set_random_seed(3)
        G, D = build_networks(run_options, 3, 5)
        trainer = build_trainer(run_options, G, D)
        step = CompiledStep.standalone(trainer, res, batch)
        batches = iter(tf.data.Dataset.from_tensor_slices((reals, labels)).batch(batch).repeat())
        step(batches, trainer.phases_of_iteration(False, True))
        main = trainer.phases_of_iteration(False, False)
        if looped:
            step(batches, main, 5)
            with pytest.raises(ValueError, match="G main \\+ D main alone"):
                step(batches, trainer.phases_of_iteration(False, True), 2)
        else:
            for _ in range(5):
                step(batches, main)
        assert int(trainer.nimg.numpy()) == 6 * batch
        results.append(({v.path: v.numpy() for v in trainer.G.weights + trainer.D.weights
                         + trainer.Gs.weights}, step.accumulator.read_and_reset()))
    (looped, looped_logs), (single, single_logs) = results
    assert looped.keys() == single.keys() and looped_logs == single_logs
    for name in looped:
        np.testing.assert_array_equal(looped[name], single[name], err_msg=name)


def test_batch_taken_in_graph_under_two_replicas(two_replica_strategy, op_determinism):
    """CompiledStep takes each batch inside its loop function (from a distributed iterator),
    keeps each replica's share for the iteration's later function (lazy R1, BatchBuffer), and
    that function counts the iteration's images: under two replicas the state after an
    iteration with and one without R1 is the same bits as with the batch taken eagerly and
    passed to every function and the images counted after them, and one global batch is used
    per iteration."""
    from training.loop import CompiledStep, LogAccumulator
    from training.stylegan import build_networks, build_trainer
    res, batch = 8, 8
    rng = np.random.RandomState(0)
    reals = tf.constant(np.tanh(rng.randn(3 * batch, res, res, 3)).astype(np.float32))
    labels = tf.constant(np.eye(5, dtype=np.float32)[rng.randint(5, size=3 * batch)])
    dataset = tf.data.Dataset.from_tensor_slices((reals, labels)).batch(batch).repeat()
    run_options = TrainingOptions(resolution=res, batch=batch, fq_blocks=(8,), config="demo")
    strategy = two_replica_strategy
    results = []
    for in_graph in (True, False):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            G, D = build_networks(run_options, 3, 5)
            trainer = build_trainer(run_options, G, D)
            step = CompiledStep(strategy, trainer, LogAccumulator(trainer.log_keys()), res,
                                batch, xla=False)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        for d_reg in (True, False):
            phases = trainer.phases_of_iteration(False, d_reg)
            if in_graph:
                step(iterator, phases)
            else:   # the batch taken eagerly and passed to each group's function, which
                # counts no images; the count after them, on its own
                data = next(iterator)
                before = int(trainer.nimg.numpy())
                groups = step.groups(phases)
                for group in groups:
                    step.function(group)(data, step.images[False])
                assert int(trainer.nimg.numpy()) == before
                if step.FUSED in groups:
                    trainer.count_images(batch)
                else:
                    step.finish()
        assert step.groups(trainer.phases_of_iteration(False, True)) == [step.FUSED, ("Dreg",)]
        remaining = next(iterator)   # the third batch: two iterations took two batches
        first_rows = strategy.experimental_local_results(remaining[0])[0]
        np.testing.assert_array_equal(first_rows.numpy(), reals[2 * batch:2 * batch + 4].numpy())
        results.append({v.path: np.stack([x.numpy() for x in strategy.experimental_local_results(
            v.value)]) for v in trainer.G.weights + trainer.D.weights + trainer.Gs.weights})
        assert int(trainer.nimg.numpy()) == 2 * batch
    in_graph, eager = results
    assert in_graph.keys() == eager.keys()
    for name in in_graph:
        np.testing.assert_array_equal(in_graph[name], eager[name], err_msg=name)
