"""NVlabs multi-LOD TFRecord format: levels, records, labels, interoperability, atomic writes."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets import DatasetError, open_dataset
from datasets.prepare import create_from_images
from datasets.tfrecords import (MultiLodWriter, TFRecordDirectory, atomic_directory,
                                count_records, lod_pyramid, shuffled_order)


def reference_levels(image_chw):
    """Straight transcription of dataset_tool.py's TFRecordExporter.add_image, one image."""
    levels = []
    img = image_chw
    for lod in range(int(np.log2(image_chw.shape[1])) - 1):
        if lod:
            img = img.astype(np.float32)
            img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2]
                   + img[:, 1::2, 1::2]) * 0.25
        levels.append(np.rint(img).clip(0, 255).astype(np.uint8))
    return levels


def write_pngs(folder, images):
    os.makedirs(folder, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image.squeeze()).save(os.path.join(folder, f"img{i:03d}.png"))


def parse_plain(path):
    """Our files read with nothing but TFRecordDataset + parse_single_example (CHW)."""
    features = {"shape": tf.io.FixedLenFeature([3], tf.int64),
                "data": tf.io.FixedLenFeature([], tf.string)}
    images = []
    for record in tf.data.TFRecordDataset(path):
        example = tf.io.parse_single_example(record, features)
        data = tf.io.decode_raw(example["data"], tf.uint8).numpy()
        images.append(data.reshape(example["shape"].numpy()))
    return np.stack(images)


@pytest.fixture(scope="module")
def random_images():
    # Values that make the float averaging hit .5 and odd sums (rint ties go to even).
    return np.random.RandomState(7).randint(0, 256, (6, 16, 16, 3)).astype(np.uint8)


def test_lod_pyramid_equals_reference_transcription(random_images):
    chw = random_images.transpose(0, 3, 1, 2)
    levels = lod_pyramid(chw)
    assert [l.shape[2] for l in levels] == [16, 8, 4]
    for i in range(len(chw)):
        for ours, ref in zip(levels, reference_levels(chw[i])):
            np.testing.assert_array_equal(ours[i], ref)


def test_lod_pyramid_is_cumulative_in_float_not_from_rounded_levels():
    # 8x8 level: three 2x2 blocks average 0.5 (stored rint -> 0) and one 1.5 (stored 2). The
    # 4x4 pixel is the average of the unrounded floats, 0.75 -> 1; averaging the stored
    # values instead would give 0.5 -> 0.
    image = np.zeros((1, 1, 16, 16), np.uint8)
    image[0, 0, 0, 0:4] = 1
    image[0, 0, 2, 0:2] = 1
    image[0, 0, 2:4, 2:4] = [[2, 2], [1, 1]]
    levels = lod_pyramid(image)
    np.testing.assert_array_equal(levels[1][0, 0, :2, :2], [[0, 0], [0, 2]])
    assert levels[2][0, 0, 0, 0] == 1


def test_round_trip_images_to_records_to_loader(tmp_path, random_images):
    write_pngs(tmp_path / "images", random_images)
    create_from_images(tmp_path / "ds", tmp_path / "images", log=lambda *_: None)
    order = shuffled_order(len(random_images))
    dataset = open_dataset(tmp_path / "ds")
    assert dataset.info.resolution == 16 and dataset.info.channels == 3
    assert dataset.info.num_images == 6 and dataset.info.resolutions == (16, 8, 4)
    # The loader gives NHWC pixels equal to the files, in NVlabs' shuffled order.
    np.testing.assert_array_equal(dataset.images(), random_images[order])
    # Every stored level equals the reference averaging, read back through the loader.
    for level, resolution in enumerate((16, 8, 4)):
        expected = np.stack([reference_levels(random_images[i].transpose(2, 0, 1))[level]
                             for i in order]).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(dataset.images(resolution), expected)
    # float32 pipeline: x * 2/255 - 1, <= 3 roundings of |.| <= 2 (numpy: float64): <= 3.6e-7.
    images, labels = next(iter(dataset.pipeline(6, shuffle=False)))
    np.testing.assert_allclose(images.numpy(), random_images[order] * (2 / 255) - 1, atol=1e-6)
    assert labels.shape == (6, 0)


def test_our_files_parse_with_plain_tfrecorddataset(tmp_path, random_images):
    write_pngs(tmp_path / "images", random_images)
    create_from_images(tmp_path / "mydata", tmp_path / "images", shuffle=False,
                       log=lambda *_: None)
    names = sorted(os.listdir(tmp_path / "mydata"))
    assert names == ["mydata-r02.tfrecords", "mydata-r03.tfrecords", "mydata-r04.tfrecords"]
    chw = random_images.transpose(0, 3, 1, 2)
    for level, name in enumerate(reversed(names)):
        np.testing.assert_array_equal(parse_plain(tmp_path / "mydata" / name),
                                      [reference_levels(c)[level] for c in chw])


def test_file_built_from_the_reference_description_loads(tmp_path):
    """A dataset written with plain tf.train.Example exactly as dataset_tool.py does."""
    rng = np.random.RandomState(3)
    images = rng.randint(0, 256, (5, 3, 8, 8)).astype(np.uint8)   # CHW, as NVlabs
    labels = np.eye(4, dtype=np.float32)[rng.randint(0, 4, 5)]
    folder = tmp_path / "official"
    folder.mkdir()
    writers = [tf.io.TFRecordWriter(str(folder / f"official-r{r:02d}.tfrecords"))
               for r in (3, 2)]
    for image in images:
        for lod, writer in enumerate(writers):
            quant = reference_levels(image)[lod]
            example = tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=quant.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[quant.tobytes()]))}))
            writer.write(example.SerializeToString())
    for writer in writers:
        writer.close()
    with open(folder / "official-rxx.labels", "wb") as f:
        np.save(f, labels)
    dataset = open_dataset(folder)
    assert (dataset.info.resolution, dataset.info.channels, dataset.info.num_images,
            dataset.info.label_size) == (8, 3, 5, 4)
    np.testing.assert_array_equal(dataset.images(8), images.transpose(0, 2, 3, 1))
    _, got_labels = next(iter(dataset.pipeline(5, 8, shuffle=False)))
    np.testing.assert_array_equal(got_labels.numpy(), labels)
    np.testing.assert_array_equal(
        dataset.images(4), np.stack([reference_levels(i)[1] for i in images]).transpose(0, 2, 3, 1))


def test_labels_file_is_np_save_float32_one_hot_without_npy_suffix(tmp_path):
    images = np.zeros((3, 3, 4, 4), np.uint8)
    with MultiLodWriter(str(tmp_path), 4, 3, "x") as writer:
        writer.add_images(images)
        writer.add_labels(np.eye(2)[[0, 1, 1]])
        with pytest.raises(ValueError, match=r"\(3, label_size\)"):
            writer.add_labels(np.eye(2))
    assert sorted(os.listdir(tmp_path)) == ["x-r02.tfrecords", "x-rxx.labels"]
    labels = np.load(tmp_path / "x-rxx.labels")
    assert labels.dtype == np.float32
    np.testing.assert_array_equal(labels, np.eye(2)[[0, 1, 1]])


def test_shuffled_order_is_numpy_randomstate_123():
    order = np.arange(10)
    np.random.RandomState(123).shuffle(order)
    np.testing.assert_array_equal(shuffled_order(10), order)


def test_count_records_skips_and_detects_truncation(tmp_path):
    path = str(tmp_path / "a.tfrecords")
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(7):
            writer.write(b"x" * (100 + i))
    assert count_records(path) == 7
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-50])
    with pytest.raises(DatasetError, match="truncated TFRecord file"):
        count_records(path)


def test_inconsistent_levels_are_rejected(tmp_path):
    with MultiLodWriter(str(tmp_path), 8, 3, "d") as writer:
        writer.add_images(np.zeros((2, 3, 8, 8), np.uint8))
    with MultiLodWriter(str(tmp_path), 4, 1, "e") as writer:   # 1-channel 4x4: a clash
        writer.add_images(np.zeros((2, 1, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match="does not fit a 3-channel"):
        TFRecordDirectory(str(tmp_path))


def test_atomic_directory_leaves_nothing_on_failure_and_interrupt(tmp_path):
    for exception in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exception)):
            with atomic_directory(tmp_path / "out") as tmp:
                open(os.path.join(tmp, "partial.tfrecords"), "wb").close()
                raise exception
        assert os.listdir(tmp_path) == []
    with atomic_directory(tmp_path / "out") as tmp:
        open(os.path.join(tmp, "done"), "wb").close()
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["done"]
    with pytest.raises(DatasetError, match="already exists"):
        with atomic_directory(tmp_path / "out"):
            pass


def test_smaller_view_of_a_larger_dataset(tmp_path, random_images):
    write_pngs(tmp_path / "images", random_images)
    create_from_images(tmp_path / "ds", tmp_path / "images", shuffle=False, log=lambda *_: None)
    view = open_dataset(tmp_path / "ds", resolution=8, num_images=4)
    assert view.info.resolution == 8 and view.info.resolutions == (8, 4)
    assert view.info.num_images == 4 and view.info.max_lod == 1
    assert view.images().shape == (4, 8, 8, 3)
    with pytest.raises(DatasetError, match="no 32x32 level"):
        open_dataset(tmp_path / "ds", resolution=32)
    with pytest.raises(DatasetError, match="no 16x16 level"):
        view.pipeline(2, 16)


def test_non_one_hot_labels_pass_through_unchanged(tmp_path):
    labels = np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    with MultiLodWriter(str(tmp_path), 4, 3, tmp_path.name) as writer:
        writer.add_images(np.arange(3 * 48, dtype=np.uint8).reshape(3, 3, 4, 4))
        writer.add_labels(labels)
    dataset = open_dataset(tmp_path)
    assert dataset.info.label_size == 3
    _, got = next(iter(dataset.pipeline(3, shuffle=False)))
    np.testing.assert_array_equal(got.numpy(), labels)
