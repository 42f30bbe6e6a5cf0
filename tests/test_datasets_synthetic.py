"""Built-in procedural datasets: deterministic, seed-dependent, structured, any resolution."""

import numpy as np
import pytest

from datasets import DatasetError, open_dataset, open_unpaired, synthetic
from datasets.tfrecords import lod_pyramid


@pytest.fixture
def no_memo(monkeypatch):
    """Every call renders (determinism tests must compare two renders, not one memo entry)."""
    monkeypatch.setattr(synthetic, "_MEMO_BYTES", -1)
    monkeypatch.setattr(synthetic, "_memo", type(synthetic._memo)())


@pytest.mark.parametrize("resolution", [8, 32, 128])
def test_shapes_deterministic_per_seed_and_different_across_seeds(resolution, no_memo):
    images, labels = synthetic.shapes(6, resolution, seed=1)
    again, labels_again = synthetic.shapes(6, resolution, seed=1)
    other, _ = synthetic.shapes(6, resolution, seed=2)
    assert images.shape == (6, resolution, resolution, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert np.abs(images.astype(float) - other).mean() > 10
    assert set(labels) <= set(range(synthetic.NUM_CLASSES))


@pytest.mark.parametrize("resolution", [8, 32, 128])
def test_shapes2cartoon_deterministic_per_seed_and_different_across_seeds(resolution, no_memo):
    a, b = synthetic.shapes2cartoon(6, resolution, seed=1)
    a2, b2 = synthetic.shapes2cartoon(6, resolution, seed=1)
    a3, b3 = synthetic.shapes2cartoon(6, resolution, seed=2)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(b, b2)
    assert np.abs(a.astype(float) - a3).mean() > 10 and np.abs(b.astype(float) - b3).mean() > 10
    assert a.shape == b.shape == (6, resolution, resolution, 3)


def test_small_datasets_are_rendered_once_per_process_and_read_only(monkeypatch):
    """A run, its SWD reals and an evaluation share one render; larger ones are not kept."""
    monkeypatch.setattr(synthetic, "_memo", type(synthetic._memo)())
    images, labels = synthetic.shapes(7, 16, seed=11)
    again, labels_again = synthetic.shapes(7, 16, seed=11)
    assert again is images and labels_again is labels
    assert not images.flags.writeable and not labels.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        images[0, 0, 0, 0] = 1
    a, b = synthetic.shapes2cartoon(3, 16, seed=11)
    assert synthetic.shapes2cartoon(3, 16, seed=11)[1] is b
    assert synthetic.shapes2cartoon(3, 16, seed=11, split="test")[0] is not a
    monkeypatch.setattr(synthetic, "_MEMO_BYTES", 7 * 16 * 16 * 3 - 1)
    fresh, _ = synthetic.shapes(7, 16, seed=12)
    assert synthetic.shapes(7, 16, seed=12)[0] is not fresh and fresh.flags.writeable
    for _ in range(synthetic._MEMO_ENTRIES + 1):   # the oldest entries go first
        synthetic.shapes2cartoon(1, 8, seed=100 + _)
    assert len(synthetic._memo) == synthetic._MEMO_ENTRIES


def test_images_are_structured_not_noise():
    images, _ = synthetic.shapes(64, 32, seed=0)
    x = images.astype(np.float64)
    # Neighbouring pixels are strongly correlated (i.i.d. noise would give ~0) and the
    # images use a wide range of values.
    dx = np.corrcoef(x[:, :, 1:].ravel(), x[:, :, :-1].ravel())[0, 1]
    assert dx > 0.8
    assert images.std() > 30


def test_first_images_do_not_depend_on_the_number_requested():
    few, labels_few = synthetic.shapes(5, 16, seed=9)
    many, labels_many = synthetic.shapes(300, 16, seed=9)
    np.testing.assert_array_equal(few, many[:5])
    np.testing.assert_array_equal(labels_few, labels_many[:5])


def test_same_scenes_at_every_resolution():
    big, labels_big = synthetic.shapes(16, 128, seed=5)
    small, labels_small = synthetic.shapes(16, 32, seed=5)
    np.testing.assert_array_equal(labels_big, labels_small)
    box = big.astype(np.float64).reshape(16, 32, 4, 32, 4, 3).mean((2, 4))
    assert np.abs(box - small).mean() < 2.0   # vs ~40 between different scenes


@pytest.mark.parametrize("resolution", [8, 32])
def test_class_is_visually_recognisable(resolution):
    images, labels = synthetic.shapes(500, resolution, seed=3)
    accuracy = (synthetic.classify_shapes(images) == labels).mean()
    assert accuracy >= 0.99
    # float [-1, 1] input is accepted too; a gray image has no class.
    floats = images.astype(np.float32) / 127.5 - 1
    np.testing.assert_array_equal(synthetic.classify_shapes(floats), synthetic.classify_shapes(
        images))
    assert synthetic.classify_shapes(np.full((1, 8, 8, 3), 128, np.uint8))[0] == -1
    assert np.bincount(labels, minlength=5).min() > 60     # all classes occur


def test_domains_differ_by_the_documented_statistic():
    a, b = synthetic.shapes2cartoon(512, 32, seed=0)
    assert abs(a.mean() / 255 - synthetic.MEAN_INTENSITY["A"]) < 0.03
    assert abs(b.mean() / 255 - synthetic.MEAN_INTENSITY["B"]) < 0.03
    pa, pb = synthetic.shapes2cartoon(8, 32, seed=0, paired=True)
    np.testing.assert_array_equal(pa, a[:8])    # A is the same either way (and prefix-stable)
    assert np.abs(pb.astype(float) - b[:8]).mean() > 10      # B from A's scenes, not its own
    test_a, _ = synthetic.shapes2cartoon(8, 32, seed=0, split="test")
    assert np.abs(test_a.astype(float) - a[:8]).mean() > 10  # independent test scenes


def test_bad_arguments():
    with pytest.raises(ValueError, match="power of two"):
        synthetic.shapes(4, 24)
    with pytest.raises(ValueError, match="num_images must be >= 1"):
        synthetic.shapes(0, 8)
    with pytest.raises(ValueError, match="split"):
        synthetic.shapes2cartoon(4, 8, split="val")


def test_open_builtin_shapes_without_files():
    dataset = open_dataset("shapes", resolution=16, num_images=40, seed=4)
    info = dataset.info
    assert (info.name, info.source, info.resolution, info.channels, info.num_images,
            info.label_size, info.resolutions) == ("shapes", "synthetic:shapes", 16, 3, 40, 5,
                                                    (16, 8, 4))
    assert info.label_names == synthetic.SHAPE_CLASSES and info.has_labels
    images, classes = synthetic.shapes(40, 16, seed=4)
    np.testing.assert_array_equal(dataset.images(), images)
    np.testing.assert_array_equal(dataset.labels, np.eye(5)[classes])
    level_4x4 = lod_pyramid(images.transpose(0, 3, 1, 2))[2].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(dataset.images(4), level_4x4)
    assert open_dataset("synthetic:shapes", resolution=8).info.num_images == 4096
    with pytest.raises(DatasetError, match="open it with datasets.open_unpaired"):
        open_dataset("shapes2cartoon")
    with pytest.raises(DatasetError, match="neither a dataset folder nor a built-in"):
        open_dataset("no_such_thing")


def test_open_builtin_pair_without_files():
    pair = open_unpaired("shapes2cartoon", resolution=16, num_images=10, num_test=3, seed=1)
    assert pair.info.counts == {"trainA": 10, "trainB": 10, "testA": 3, "testB": 3}
    a, b = synthetic.shapes2cartoon(3, 16, seed=1, split="test")
    got = np.concatenate([x.numpy() for x in pair.test_pipeline("B", 16, batch_size=2)])
    np.testing.assert_allclose(got, b * (2 / 255) - 1, atol=1e-5)  # float32: <= 3.6e-7
