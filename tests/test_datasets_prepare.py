"""The preparation CLI: CIFAR import, built-in datasets on disk, info / display, help, errors."""

import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datasets import DatasetError, open_dataset, open_unpaired, synthetic
from datasets.prepare import create_cifar10, create_cifar100, create_synthetic, run
from datasets.tfrecords import lod_pyramid, shuffled_order

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet(*_):
    pass


def write_cifar10(folder, counts=(3, 2, 3, 2, 2), test=2, seed=0):
    """Small CIFAR-10 pickles in the official format (Python 2 str keys load as bytes)."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder)
    everything = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, list(counts) + [test]):
        batch = {b"batch_label": name.encode(), b"labels": rng.randint(0, 10, n).tolist(),
                 b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
                 b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f, protocol=2)
        everything[name] = batch
    meta = {b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat",
                                                   "deer", "dog", "frog", "horse", "ship",
                                                   "truck")], b"num_vis": 3072}
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return everything


def test_cifar10_round_trip(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    create_cifar10(tmp_path / "c10", tmp_path / "cifar-10-batches-py", log=quiet)
    data = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    order = shuffled_order(len(data))
    chw = data.reshape(-1, 3, 32, 32)[order]
    dataset = open_dataset(tmp_path / "c10")
    info = dataset.info
    assert (info.resolution, info.channels, info.num_images, info.label_size) == (32, 3, 12, 10)
    assert info.label_names[:3] == ("airplane", "automobile", "bird")
    np.testing.assert_array_equal(dataset.images(), chw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(dataset.labels, np.eye(10)[labels[order]])
    np.testing.assert_array_equal(dataset.images(8), lod_pyramid(chw)[2].transpose(0, 2, 3, 1))
    _, got = next(iter(dataset.pipeline(12, shuffle=False)))
    np.testing.assert_array_equal(got.numpy(), np.eye(10)[labels[order]])
    # --split test through the CLI.
    assert run(["prepare", "create_cifar10", str(tmp_path / "c10test"),
                str(tmp_path / "cifar-10-batches-py"), "--split=test", "--noshuffle"]) == 0
    test = open_dataset(tmp_path / "c10test")
    np.testing.assert_array_equal(test.images(), batches["test_batch"][b"data"].reshape(
        -1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar100_round_trip_with_fine_labels(tmp_path):
    rng = np.random.RandomState(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train = {b"filenames": [b"a"] * 5, b"batch_label": b"training batch 1 of 1",
             b"fine_labels": [0, 99, 42, 7, 99], b"coarse_labels": [0, 19, 3, 2, 19],
             b"data": rng.randint(0, 256, (5, 3072)).astype(np.uint8)}
    with open(folder / "train", "wb") as f:
        pickle.dump(train, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [b"x"] * 20}, f, protocol=2)
    create_cifar100(tmp_path / "c100", folder, shuffle=False, log=quiet)
    dataset = open_dataset(tmp_path / "c100")
    assert dataset.info.label_size == 100 and dataset.info.label_names[99] == "c99"
    np.testing.assert_array_equal(dataset.labels.argmax(1), [0, 99, 42, 7, 99])
    np.testing.assert_array_equal(dataset.images(), train[b"data"].reshape(
        -1, 3, 32, 32).transpose(0, 2, 3, 1))


def test_cifar_bad_inputs(tmp_path):
    with pytest.raises(DatasetError, match=r"data_batch_1 is missing; CIFAR_DIR must be the "
                                           r"extracted cifar-10-batches-py folder"):
        create_cifar10(tmp_path / "out", tmp_path, log=quiet)
    (tmp_path / "train").write_text("not a pickle")
    with pytest.raises(DatasetError, match=r"train: not a CIFAR python pickle"):
        create_cifar100(tmp_path / "out", tmp_path, log=quiet)
    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]}, f)
    with pytest.raises(DatasetError, match=r"b'data' is uint8 \(2, 100\), expected uint8 "
                                           r"\(N, 3072\)"):
        create_cifar100(tmp_path / "out", tmp_path, log=quiet)
    with open(tmp_path / "train", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}, f)
    with pytest.raises(DatasetError, match=r"labels outside \[0, 99\]"):
        create_cifar100(tmp_path / "out", tmp_path, log=quiet)
    assert not os.path.exists(tmp_path / "out")


def test_create_synthetic_writes_exactly_the_builtin_data(tmp_path):
    create_synthetic(tmp_path / "s", "shapes", resolution=8, num_images=20, seed=3, log=quiet)
    images, classes = synthetic.shapes(20, 8, seed=3)
    dataset = open_dataset(tmp_path / "s")
    np.testing.assert_array_equal(dataset.images(), images)
    np.testing.assert_array_equal(dataset.labels, np.eye(5)[classes])
    assert dataset.info.label_names == synthetic.SHAPE_CLASSES
    create_synthetic(tmp_path / "p", "shapes2cartoon", resolution=8, num_images=4, num_test=2,
                     seed=3, log=quiet)
    assert sorted(os.listdir(tmp_path / "p")) == ["testA", "testB", "trainA", "trainB"]
    pair = open_unpaired(tmp_path / "p")
    assert pair.info.counts == {"trainA": 4, "trainB": 4, "testA": 2, "testB": 2}
    _, test_b = synthetic.shapes2cartoon(2, 8, seed=3, split="test")
    np.testing.assert_array_equal(np.asarray(Image.open(pair.files("testB")[1])), test_b[1])
    with pytest.raises(DatasetError, match="--kind must be one of shapes, shapes2cartoon"):
        create_synthetic(tmp_path / "q", "faces", log=quiet)


def test_progress_lines_have_counts_and_rate(tmp_path):
    """The one progress helper (cli_common.Progress, tested in test_cli.py) into the log."""
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / f"{i}.png")
    lines = []
    assert run(["prepare", "create_from_images", str(tmp_path / "out"), str(tmp_path)]) == 0
    from datasets.prepare import create_from_images
    create_from_images(tmp_path / "out2", tmp_path, log=lines.append)
    assert lines[0].startswith("Found 3 image files")
    assert any(re.fullmatch(r"Writing: 3/3 images  [\d.]+ images/s  [\d.]+ s", line)
               for line in lines), lines
    assert re.match(r"Wrote 3 images \(8x8, 3 channels, 2 levels\) to .* \([\d.]+ img/s\)",
                    lines[-1])


#----------------------------------------------------------------------------
# Command line.

def test_help_per_command_lists_only_its_flags(capsys):
    assert run(["prepare", "create_from_images", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Usage: python -m datasets.prepare create_from_images [flags] "
                           "OUT_DIR IMAGE_DIR")
    for flag in ("--resolution", "--crop", "--labels", "--shuffle", "--skip-bad"):
        assert flag in text
    assert "--kind" not in text and "--split" not in text
    assert run(["prepare", "create_synthetic", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--kind" in text and "--crop" not in text and "Resolution to render at" in text
    assert run(["prepare", "--help"]) == 0
    assert "create_cifar100 OUT_DIR CIFAR_DIR" in capsys.readouterr().out


def test_usage_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["create_from_images", "a", "b", "--kind=shapes"], "Unknown command line flag 'kind'"),
        (["create_from_images", "a"], "create_from_images takes OUT_DIR IMAGE_DIR, got 1"),
        (["create_cifar10", "a", "b", "--split=val"], "value should be one of <train|test>"),
        (["bogus"], "unknown command 'bogus'"),
    ]
    for argv, message in cases:
        assert run(["prepare"] + argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("datasets.prepare: error: ") and message in err, err


def test_data_errors_are_one_line_with_status_1(tmp_path, capsys):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    assert run(["prepare", "create_from_images", str(tmp_path / "o"), str(tmp_path),
                "--resolution=100"]) == 2
    err = capsys.readouterr().err
    assert err == ("datasets.prepare: error: --resolution must be a power of two between 4 and 8192, got 100; use "
                   "e.g. 64\n")
    assert run(["prepare", "info", str(tmp_path)]) == 2
    assert "no *.tfrecords files" in capsys.readouterr().err


def test_info_and_display(tmp_path, capsys):
    create_synthetic(tmp_path / "s", "shapes", resolution=16, num_images=10, log=quiet)
    assert run(["prepare", "info", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    for expected in ("images: 10", "resolution: 16x16", "channels: 3", "s-r04.tfrecords  10 "
                     "records", "s-r02.tfrecords  10 records", "labels: s-rxx.labels, size 5",
                     "images per class: circle:"):
        assert expected in out, out
    png = tmp_path / "grid.png"
    assert run(["prepare", "display", str(tmp_path / "s"), str(png), "--num-images=9"]) == 0
    assert "labels row 2:" in capsys.readouterr().out
    assert Image.open(png).size == (3 * 16 * 4, 3 * 16 * 4)    # 3x3 cells, 16 px upscaled x4
    create_synthetic(tmp_path / "p", "shapes2cartoon", resolution=8, num_images=3, num_test=1,
                     log=quiet)
    (tmp_path / "p" / "trainB" / "broken.png").write_bytes(b"\x89PNG garbage")
    assert run(["prepare", "info", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "trainA: 3 images" in out and "trainB: 3 images" in out
    assert re.search(r"bad .*broken\.png: not an image", out)


def test_module_entry_point(tmp_path):
    """The real `python -m datasets.prepare` process: one error line at the end, status 2."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "datasets.prepare", "create_synthetic",
                             str(tmp_path / "x"), "--resolution=48"], capture_output=True,
                            text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("datasets.prepare: error: --resolution must be a "
                                              "power of two "
                                              "between 4 and 8192, got 48; use e.g. 32")
    assert not os.path.exists(tmp_path / "x")
