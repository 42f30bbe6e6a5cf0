"""The NVlabs multi-LOD TFRecord dataset format (dataset_tool.py of StyleGAN and StyleGAN2).

A dataset is a folder `<dir>` holding, for a full resolution 2^R:

    <dir>/<name>-rRR.tfrecords   one file per level of detail, RR = R, R-1, ..., 2 (4x4)
    <dir>/<name>-rxx.labels      optional: float32 array (num_images, label_size), np.save format
    <dir>/classes.json           optional, ours only: class names of the label columns

`<name>` is the folder's base name. Each file is an uncompressed TFRecord of `tf.train.Example`s
with two features: 'shape' (int64 list [C, H, W]) and 'data' (bytes: the uint8 pixels in C, H, W
order). Record i of every file is the same image i (and row i of the labels). Lower levels are made
cumulatively in float32, 2x2 box averages of the previous (unrounded) level, each stored level
rounded with rint and clipped to [0, 255]. NVlabs' tools shuffle the image order with
`np.random.RandomState(123)` before writing. Datasets written by NVlabs' dataset_tool.py load
here, and ours load in NVlabs' code.
"""

import glob
import json
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager

import numpy as np
import tensorflow as tf

from datasets.errors import DatasetError

MIN_RESOLUTION = 4        # lowest stored level of detail (file -r02)
MAX_RESOLUTION = 8192
CLASSES_FILE = "classes.json"
SHUFFLE_SEED = 123        # NVlabs' dataset_tool order: np.random.RandomState(123).shuffle


#----------------------------------------------------------------------------
# Names and checks.

def is_power_of_two(value):
    return isinstance(value, (int, np.integer)) and value > 0 and (value & (value - 1)) == 0


def check_resolution(resolution, what="resolution"):
    """Raises DatasetError unless `resolution` is a power of two in [4, 8192]."""
    if not is_power_of_two(resolution) or not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        lower = 2 ** int(np.floor(np.log2(max(int(resolution), MIN_RESOLUTION))))
        raise DatasetError(f"{what} must be a power of two between {MIN_RESOLUTION} and "
                           f"{MAX_RESOLUTION}, got {resolution}; use e.g. {lower}")
    return int(resolution)


def log2_int(resolution):
    return int(resolution).bit_length() - 1


def tfrecord_path(directory, name, resolution):
    """`<directory>/<name>-rRR.tfrecords` for the level of detail `resolution` (RR = log2)."""
    return os.path.join(directory, f"{name}-r{log2_int(resolution):02d}.tfrecords")


def labels_path(directory, name):
    return os.path.join(directory, f"{name}-rxx.labels")


def write_label_names(directory, names):
    """`<directory>/classes.json`: the class names, index i = label column i (our addition;
    NVlabs' readers only look at *.tfrecords and *.labels, so they ignore it)."""
    with open(os.path.join(directory, CLASSES_FILE), "w") as f:
        json.dump([str(name) for name in names], f)


def read_label_names(directory):
    """Class names from `classes.json`, or None when the folder has none."""
    path = os.path.join(directory, CLASSES_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return tuple(json.load(f))


def shuffled_order(num_images):
    """NVlabs' image order: np.arange(N) shuffled by np.random.RandomState(123)."""
    order = np.arange(num_images)
    np.random.RandomState(SHUFFLE_SEED).shuffle(order)
    return order


def one_hot(labels, num_classes):
    """Integer class labels (N,) -> float32 one-hot (N, num_classes), as NVlabs' .labels files."""
    labels = np.asarray(labels, dtype=np.int64)
    result = np.zeros((labels.size, num_classes), dtype=np.float32)
    result[np.arange(labels.size), labels] = 1.0
    return result


#----------------------------------------------------------------------------
# Writing.

def lod_pyramid(images):
    """Every stored level of detail of a batch of images, by the reference averaging.

    Args:
        images: uint8 (N, C, H, W) with H == W a power of two >= 4.
    Returns:
        list of uint8 arrays [(N, C, H, W), (N, C, H/2, W/2), ..., (N, C, 4, 4)]. Level k+1 is
        the float32 2x2 average (a + b + c + d) * 0.25 of the unrounded float level k; each
        stored level is rint-ed and clipped to [0, 255].
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"lod_pyramid expects uint8 (N, C, H, H), got {images.dtype} "
                         f"{images.shape}")
    check_resolution(images.shape[2], "image size")
    levels = [images]
    x = images.astype(np.float32)
    while x.shape[2] > MIN_RESOLUTION:
        x = (x[:, :, 0::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 0::2]
             + x[:, :, 1::2, 1::2]) * np.float32(0.25)
        levels.append(np.rint(x).clip(0, 255).astype(np.uint8))
    return levels


def serialize_image(image_chw):
    """One record: tf.train.Example with 'shape' [C, H, W] and 'data' (uint8 CHW bytes)."""
    image_chw = np.ascontiguousarray(image_chw, dtype=np.uint8)
    return tf.train.Example(features=tf.train.Features(feature={
        "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=image_chw.shape)),
        "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_chw.tobytes()])),
    })).SerializeToString()


class MultiLodWriter:
    """Writes one multi-LOD dataset (all levels of detail, optional labels) into `directory`.

    Args:
        directory: existing folder to write into (use `atomic_directory` for the final one).
        resolution: full resolution (power of two >= 4); files r02 .. rRR are written.
        channels: 1 or 3.
        name: file prefix; NVlabs' readers expect the final folder's base name.

    Example:
        with MultiLodWriter(tmp, 32, 3, name="cifar10") as writer:
            writer.add_images(images_nchw)     # uint8 (N, 3, 32, 32), any number of calls
            writer.add_labels(one_hot_labels)  # float32 (num_images, label_size), once, at the end
    """

    def __init__(self, directory, resolution, channels, name):
        self.directory = directory
        self.resolution = check_resolution(resolution)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.channels = channels
        self.name = name
        self.num_images = 0
        self.resolutions = [resolution >> k for k in range(log2_int(resolution) - 1)]
        self._writers = [tf.io.TFRecordWriter(tfrecord_path(directory, name, r))
                         for r in self.resolutions]

    def add_images(self, images):
        """Appends uint8 images (N, C, H, W) (NVlabs' CHW layout) to every level."""
        expected = (self.channels, self.resolution, self.resolution)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(f"expected images (N, {', '.join(map(str, expected))}), got "
                             f"{images.shape}")
        for writer, level in zip(self._writers, lod_pyramid(images)):
            for image in level:
                writer.write(serialize_image(image))
        self.num_images += images.shape[0]

    def add_labels(self, labels):
        """Writes `<name>-rxx.labels`: float32 (num_images, label_size), np.save format."""
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != self.num_images:
            raise ValueError(f"labels must be ({self.num_images}, label_size), got "
                             f"{labels.shape}")
        with open(labels_path(self.directory, self.name), "wb") as f:
            np.save(f, labels)  # a file object: np.save must not append '.npy' (as NVlabs)

    def close(self):
        for writer in self._writers:
            writer.close()
        self._writers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def check_new_output_dir(out_dir):
    """The absolute path of `out_dir` if a new dataset can be written there.

    Raises DatasetError (one line naming the fix) if it exists (datasets are never
    overwritten) or its parent folder does not. The create commands call it before reading
    any input, so a wrong output path fails at once.
    """
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise DatasetError(f"{out_dir}: output folder already exists; choose a new folder or "
                           "delete the old one (datasets are never overwritten)")
    parent = os.path.dirname(out_dir)
    if not os.path.isdir(parent):
        raise DatasetError(f"{parent}: parent folder of the output does not exist; create it "
                           "first")
    return out_dir


@contextmanager
def atomic_directory(out_dir):
    """Yields a fresh temporary folder next to `out_dir`, renamed to `out_dir` on success.

    On any exception (including KeyboardInterrupt) the temporary folder is deleted, so an
    interrupted or failed run never leaves a partial dataset. `out_dir` must not exist.
    """
    out_dir = check_new_output_dir(out_dir)
    parent = os.path.dirname(out_dir)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the dataset should not be
    try:
        yield tmp
        if os.path.exists(out_dir):
            raise DatasetError(f"{out_dir}: output folder appeared while writing; nothing was "
                               "changed, choose a new folder")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#----------------------------------------------------------------------------
# Reading.

def count_records(path):
    """Number of records in a TFRecord file, by skipping over them (no data is read).

    Raises:
        DatasetError: the file is truncated (it ends inside a record).
    """
    size = os.path.getsize(path)
    count, position = 0, 0
    with open(path, "rb") as f:
        while position < size:
            header = f.read(12)  # uint64 length, uint32 masked CRC of the length
            if len(header) < 12:
                break
            (length,) = struct.unpack("<Q", header[:8])
            position += 12 + length + 4  # data, uint32 masked CRC of the data
            if position > size:
                break
            f.seek(position)
            count += 1
    if position != size:
        raise DatasetError(f"{path}: truncated TFRecord file (ends inside record {count + 1}); "
                           "re-create the dataset")
    return count


def read_first_shape(path):
    """[C, H, W] of the first record of a TFRecord file (read with TensorFlow, as NVlabs)."""
    for record in tf.data.TFRecordDataset(path).take(1):
        example = tf.train.Example.FromString(record.numpy())
        return tuple(example.features.feature["shape"].int64_list.value)
    raise DatasetError(f"{path}: empty TFRecord file; re-create the dataset")


def parse_batch(serialized, channels, resolution):
    """Parses a batch of serialized records into uint8 NHWC images (TensorFlow, graph-safe).

    Args:
        serialized: string tensor (B,) of records of one level of detail.
        channels, resolution: the level's C and H == W.
    Returns:
        uint8 tensor (B, resolution, resolution, channels).
    """
    features = tf.io.parse_example(serialized, {
        "shape": tf.io.FixedLenFeature([3], tf.int64),
        "data": tf.io.FixedLenFeature([], tf.string)})
    data = tf.io.decode_raw(features["data"], tf.uint8)           # (B, C*H*W)
    data = tf.reshape(data, [-1, channels, resolution, resolution])  # [NCHW]
    return tf.transpose(data, [0, 2, 3, 1])                       # [NHWC]


class TFRecordDirectory:
    """What a multi-LOD dataset folder holds (files, shapes, count, labels), read eagerly.

    Attributes:
        directory, name: the folder and its file prefix.
        resolution, channels: of the largest level.
        files: {resolution: path} for every level present.
        num_images: records in the largest level.
        labels: float32 (num_images, label_size) or None.
        label_file: path or None.
    """

    def __init__(self, directory):
        directory = os.path.abspath(directory)
        if not os.path.isdir(directory):
            raise DatasetError(f"{directory}: no such dataset folder; create one with "
                               "`python -m datasets.prepare create_from_images OUT_DIR IMAGE_DIR`")
        paths = sorted(glob.glob(os.path.join(directory, "*.tfrecords")))
        if not paths:
            hint = ""
            if os.path.isdir(os.path.join(directory, "trainA")):
                hint = " (it looks like a U-GAT-IT folder: open it with datasets.open_unpaired)"
            raise DatasetError(f"{directory}: no *.tfrecords files{hint}; prepare images with "
                               "`python -m datasets.prepare create_from_images OUT_DIR IMAGE_DIR`")
        self.directory = directory
        shapes = {path: read_first_shape(path) for path in paths}
        top_path = max(paths, key=lambda p: shapes[p][1])
        self.channels, self.resolution = shapes[top_path][0], shapes[top_path][1]
        self.name = os.path.basename(top_path)[:-len("-rRR.tfrecords")]
        self.files = {}
        for path, (c, h, w) in shapes.items():
            if c != self.channels or h != w or not is_power_of_two(h) or h in self.files:
                raise DatasetError(f"{path}: record shape [{c}, {h}, {w}] does not fit a "
                                   f"{self.channels}-channel multi-LOD dataset; remove the file "
                                   "or re-create the dataset")
            self.files[h] = path
        self.num_images = count_records(top_path)
        self.labels, self.label_file = None, None
        label_files = sorted(glob.glob(os.path.join(directory, "*.labels")))
        if label_files:
            self.label_file = label_files[0]
            labels = np.load(self.label_file)
            if labels.ndim != 2 or labels.shape[0] < self.num_images:
                raise DatasetError(f"{self.label_file}: labels of shape {labels.shape} do not "
                                   f"cover {self.num_images} images; expected "
                                   f"({self.num_images}, label_size)")
            self.labels = labels[:self.num_images].astype(np.float32)

    @property
    def label_size(self):
        return 0 if self.labels is None else self.labels.shape[1]
