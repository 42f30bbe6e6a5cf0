"""training/checkpoints.py: a checkpoint write interrupted at any point never leaves the latest
checkpoint unreadable (the process is "killed" by an exception at each stage of a save)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from training.checkpoints import Checkpoints, latest_checkpoint, run_checkpoints


class Killed(BaseException):
    """Stands for the process dying (not an Exception: nothing may catch it)."""


def state(value):
    return {"w": tf.Variable(np.full((3, 4), value, np.float32)), "step": tf.Variable(value)}


def restored_values(run_dir):
    fresh = state(-1)
    Checkpoints(fresh, run_dir).restore(latest_checkpoint(run_dir))
    return float(fresh["w"].numpy()[0, 0]), int(fresh["step"].numpy())


@pytest.mark.parametrize("stage", ["data", "record", "sweep"])
def test_a_save_killed_at_any_stage_leaves_a_readable_latest_checkpoint(stage, tmp_path,
                                                                        monkeypatch):
    """data: killed while the new checkpoint's files are being written (its partial files lie
    next to the others); record: after they are complete, before the checkpoint state file
    names them; sweep: while older checkpoints beyond `keep` are deleted."""
    run_dir = str(tmp_path)
    variables = state(1)
    checkpoints = Checkpoints(variables, run_dir, keep=2)
    checkpoints.save(1)
    variables["w"].assign(tf.fill((3, 4), 2.0)), variables["step"].assign(2)
    checkpoints.save(2)
    variables["w"].assign(tf.fill((3, 4), 3.0)), variables["step"].assign(3)
    manager = type(checkpoints.manager)
    if stage == "data":
        def killed_write(self, prefix, options=None):
            for suffix in (".data-00000-of-00001", ".index"):
                with open(prefix + suffix, "wb") as f:
                    f.write(b"\x00partial")
            raise Killed
        monkeypatch.setattr(type(checkpoints.checkpoint), "_write", killed_write)
    else:
        name = "_record_state" if stage == "record" else "_sweep"
        monkeypatch.setattr(manager, name, lambda self: (_ for _ in ()).throw(Killed))
    with pytest.raises(Killed):
        checkpoints.save(3)
    monkeypatch.undo()
    latest = latest_checkpoint(run_dir)
    # Before the state file names the new checkpoint, the previous one is the latest; once it
    # does, the new one is complete. Either way it reads back whole.
    expected = 3 if stage == "sweep" else 2
    assert latest == os.path.join(run_dir, "checkpoints", f"ckpt-{expected}")
    assert restored_values(run_dir) == (float(expected), expected)


@pytest.mark.parametrize("keep, kept", [(3, [3, 4, 5]), (0, [1, 2, 3, 4, 5])])
def test_keep_is_the_number_of_newest_checkpoints_and_0_keeps_all(keep, kept, tmp_path):
    """run_training.py --keep-checkpoints: the default 3 keeps the newest three; 0 keeps every
    snapshot (NVlabs' habit), which run_checkpoints lists by number, oldest first."""
    run_dir = str(tmp_path)
    checkpoints = Checkpoints(state(1), run_dir, keep=keep)
    for number in range(1, 6):
        checkpoints.save(number)
    files = sorted(int(n[len("ckpt-"):-len(".index")])
                   for n in os.listdir(os.path.join(run_dir, "checkpoints")) if n.endswith(".index"))
    assert files == kept
    assert run_checkpoints(run_dir) == {
        n: os.path.join(run_dir, "checkpoints", f"ckpt-{n}") for n in kept}
