"""run_training.py --strategy multiworker: two worker processes of one cluster on localhost.

Each test starts real run_training.py processes (MultiWorkerMirroredStrategy over TF_CONFIG),
so these are the suite's slowest per assertion; they check what only separate processes show:
identical states, who writes what, one-line refusals, and a preempted worker.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from training.checkpoints import latest_checkpoint, run_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start_two_workers(tmp_path, *flags, folders=("worker0", "worker1")):
    """Two run_training.py worker processes of one MultiWorkerMirroredStrategy cluster on
    localhost (--out tmp_path/<folders[i]>), output piped."""
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster,
                                                      "task": {"type": "worker", "index": index}}),
                   TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        out = str(tmp_path / folders[index])
        procs.append(subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "run_training.py"), "--strategy", "multiworker",
             "--out", out, "--resolution", "8", "--batch", "8", "--metrics", "none",
             "--fq-blocks", "8", *flags],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def _outputs(procs, timeout=600):
    """The workers' outputs once all have exited; kills them all if any is still running after
    `timeout` seconds (a worker that fails alone leaves the others waiting for it)."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _summaries(tmp_path):
    return [json.load(open(tmp_path / f"worker{i}" / "summary.json")) for i in range(2)]


def test_workers_sharing_a_run_folder_stop_with_one_line(tmp_path):
    """Every worker writes its own checkpoints, so one --out for all (a shared file system)
    would have them overwrite each other: both workers exit 2 with one line, no folder left."""
    procs = _start_two_workers(tmp_path, "--kimg", "0.008", folders=("run", "run"))
    outputs = _outputs(procs)
    assert [p.returncode for p in procs] == [2, 2], outputs
    for output in outputs:
        assert (f"run_training.py: error: the workers share the run folder {tmp_path / 'run'}; "
                "give each worker its own --out (e.g. on its local disk): every worker writes "
                "its own checkpoints.") in output, output[-3000:]
    assert not os.path.exists(tmp_path / "run")


def test_sigterm_to_one_worker_stops_both_at_the_same_step(tmp_path):
    """A preempted worker (SIGTERM to the non-chief): both workers agree to stop after the same
    step and both write a checkpoint there, neither waits for the other in a collective; the
    signalled worker exits 128 + 15, the other 1, each printing its resume command. `--resume`
    on both continues from there and ends with equal states, the chief alone keeping logs,
    samples and the export, the other worker its newest checkpoint only; a worker whose folder
    holds an older checkpoint than the others makes every worker stop with one line, exit 2."""
    procs = _start_two_workers(tmp_path, "--kimg", "40", "--tick-kimg", "0.008",
                               "--snapshot-ticks", "100000")
    log = tmp_path / "worker0" / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and '"progress/kimg"' in log.read_text()):   # ticking: training
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            pytest.fail("no tick within 300 s or a worker ended:\n"
                        + "\n".join(o[-2000:] for o in _outputs(procs, timeout=1)))
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)
    outputs = _outputs(procs, timeout=300)
    assert [p.returncode for p in procs] == [1, 128 + signal.SIGTERM], outputs
    summaries = _summaries(tmp_path)
    assert [s["interrupted"] for s in summaries] == ["a signal to another worker", "SIGTERM"]
    assert summaries[0]["kimg"] == summaries[1]["kimg"] < 40
    assert summaries[0]["state_fingerprint"] == summaries[1]["state_fingerprint"]
    stopped_at = round(summaries[0]["kimg"] * 1000)
    for index, name in enumerate(("a signal to another worker", "SIGTERM")):
        out = str(tmp_path / f"worker{index}")
        checkpoint = os.path.join(out, "checkpoints", f"ckpt-{stopped_at}")
        assert summaries[index]["checkpoint"] == latest_checkpoint(out) == checkpoint
        assert (f"Stopped by {name} at kimg {summaries[0]['kimg']:g}, checkpoint {checkpoint}; "
                f"continue with: python run_training.py --out {out} --resume") \
            in outputs[index], outputs[index][-3000:]

    # Both continue from there (8 more images) and end equal.
    shutil.copytree(tmp_path / "worker1", tmp_path / "stale")
    resume = ("--resume", "--kimg", f"{(stopped_at + 8) / 1000:g}")
    procs = _start_two_workers(tmp_path, *resume)
    outputs = _outputs(procs)
    assert [p.returncode for p in procs] == [0, 0], outputs
    resumed = _summaries(tmp_path)
    assert resumed[0]["kimg"] == resumed[1]["kimg"] == (stopped_at + 8) / 1000
    assert resumed[0]["state_fingerprint"] == resumed[1]["state_fingerprint"] \
        != summaries[0]["state_fingerprint"]
    # Only the chief keeps logs, samples and the export; the others their newest checkpoint
    # (what their --resume restores).
    worker0, worker1 = (str(tmp_path / f"worker{i}") for i in range(2))
    assert sorted(run_checkpoints(worker0)) == [stopped_at, stopped_at + 8]
    assert sorted(run_checkpoints(worker1)) == [stopped_at + 8]
    assert sorted(os.listdir(worker1)) == ["checkpoints", "summary.json",
                                           "training_options.json"]
    assert {"log.jsonl", "export", "fakes_init.png", "reals.png"} <= set(os.listdir(worker0))

    # The non-chief's folder as it was before that (its newest checkpoint one step behind the
    # chief's): both refuse to train.
    shutil.rmtree(tmp_path / "worker1")
    shutil.move(tmp_path / "stale", tmp_path / "worker1")
    before = sorted(os.listdir(tmp_path / "worker0"))
    procs = _start_two_workers(tmp_path, "--resume", "--kimg", "40")
    outputs = _outputs(procs)
    assert [p.returncode for p in procs] == [2, 2], outputs
    for output, name in zip(outputs, (f"ckpt-{stopped_at + 8}", f"ckpt-{stopped_at}")):
        assert ("run_training.py: error: the workers start from different points (this one: "
                f"{name}); resume every worker from the same run, each --out holding that "
                "run's newest checkpoint.") in output, output[-3000:]
    assert sorted(os.listdir(tmp_path / "worker0")) == before
