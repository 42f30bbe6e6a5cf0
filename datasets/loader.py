"""tf.data input pipelines for multi-LOD image datasets (ProGAN, StyleGAN, StyleGAN2, BigGAN).

    dataset = datasets.open_dataset("path/to/ffhq")      # NVlabs TFRecord folder
    dataset = datasets.open_dataset("shapes", resolution=32)   # built-in, no files
    dataset.info            # DatasetInfo: resolution, channels, num_images, label_size, ...
    reals = dataset.pipeline(batch_size=32, resolution=16, mirror=True)
    for images, labels in reals:   # float32 (32, 16, 16, C) in [-1, 1]; float32 (32, label_size)
        ...

Processing of reals follows StyleGAN's `process_reals`: uint8 [0, 255] -> float32 [-1, 1]
(x * 2/255 - 1), optional per-sample mirror (left-right), and, during a progressive-growing
transition, a crossfade with the next-lower level of detail. The crossfade is NOT in the
pipeline: `fade_reals(images, lod)` is a cheap function the trainer calls inside its
`train_step` with the current `lod` (a tf.Variable or tensor). Batches are prefetched ahead of the
step that consumes them, so a pipeline reading a changing `lod` would blend with stale values;
inside the step it is exact, and `lod` can change every step without rebuilding anything. Only when
floor(lod) changes (a new stage) does the trainer request a pipeline at the new resolution
(`resolution_for_lod`).

Pipeline order: records -> [shard per input pipeline] -> parse 256 records at a time (one
`parse_example` + `decode_raw`, parallel calls) -> [cache decoded uint8 images] -> shuffle (each
epoch reshuffled) -> repeat -> batch -> mirror, uint8 -> float -> prefetch. The stream is a pure
function of `seed`, so `start_image` can resume it exactly after a stop.
"""

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from datasets import synthetic
from datasets.errors import DatasetError
from datasets.tfrecords import (MIN_RESOLUTION, TFRecordDirectory, check_resolution, log2_int,
                                lod_pyramid, parse_batch, read_label_names)

def prefetched_stream(dataset):
    """`dataset.prefetch(AUTOTUNE)` with tf.data's model-based autotuning off: the end of every
    training stream.

    With autotuning on, the iterator runs an optimisation thread whose wait between rounds
    doubles up to 60 s, and deleting the iterator waits for that thread to come round: with
    TensorFlow 2.21 every training run paused 20 s (12 kimg demo run) to 60 s (40 kimg) after
    its last step (native stack: RootDataset::Iterator's destructor joining its thread). Without
    it, parallel calls with AUTOTUNE use every core and prefetch(AUTOTUNE) keeps its own buffer
    tuning; the built-in data's stream still delivers >100x what the demo trains on
    (bench/bench_training.py)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


SYNTHETIC_DEFAULT_RESOLUTION = 32
SYNTHETIC_DEFAULT_IMAGES = 4096
SYNTHETIC_MEMORY_BUDGET = 256 << 20     # bytes for all levels of an in-memory synthetic dataset
SHUFFLE_BUDGET = 256 << 20              # bytes of images held by the shuffle buffer
CACHE_BUDGET = 512 << 20                # TFRecord levels up to this size are cached in memory
_PIPELINE_SEED_STRIDE = 1_000_003       # decorrelates the input pipelines of several workers


#----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds. Trainers size their networks from this.

    Attributes:
        name: folder base name, or the synthetic kind.
        source: absolute folder path, or "synthetic:<kind>".
        resolution: full resolution of this view (power of two).
        channels: 1 or 3.
        num_images: images in the dataset (one epoch).
        label_size: length of the label vectors; 0 = unlabelled.
        resolutions: available levels of detail, largest first.
        label_names: class names when known (synthetic, CIFAR, --labels), else None.
    """
    name: str
    source: str
    resolution: int
    channels: int
    num_images: int
    label_size: int
    resolutions: tuple
    label_names: tuple = None

    @property
    def has_labels(self):
        return self.label_size > 0

    @property
    def max_lod(self):
        """lod of the 4x4 level (lod 0 = full resolution)."""
        return log2_int(self.resolution) - log2_int(MIN_RESOLUTION)


def resolution_for_lod(resolution, lod):
    """Training resolution at `lod`: 2^(log2(resolution) - floor(lod)) (the higher one of a
    fade)."""
    return 2 ** (log2_int(resolution) - int(math.floor(lod)))


def to_float(images):
    """uint8 [0, 255] -> float32 [-1, 1] (NVlabs adjust_dynamic_range: x * 2/255 - 1)."""
    return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0


def fade_reals(images, lod):
    """Crossfade of reals between consecutive levels of detail (StyleGAN process_reals 'FadeLOD').

    y = nearest-upsample(2x2 box average(x)); result = x + (y - x) * (lod - floor(lod)).
    At integer lod the images are returned unchanged.

    Args:
        images: float (N, H, W, C), H and W even.
        lod: scalar float tensor or tf.Variable (may change every step).
    Returns:
        float (N, H, W, C), same dtype as images.
    """
    alpha = tf.cast(lod - tf.floor(lod), images.dtype)
    s = tf.shape(images)
    y = tf.reshape(images, [s[0], s[1] // 2, 2, s[2] // 2, 2, s[3]])
    y = tf.reduce_mean(y, axis=[2, 4], keepdims=True)
    y = tf.reshape(tf.tile(y, [1, 1, 2, 1, 2, 1]), s)
    return images + (y - images) * alpha


def _mirror(images, seed, step):
    """Per-sample left-right flip with probability 1/2, seeded by (seed, batch index)."""
    u = tf.random.stateless_uniform([tf.shape(images)[0]], seed=tf.stack([seed, step]))
    return tf.where(u[:, None, None, None] < 0.5, tf.reverse(images, axis=[2]), images)


#----------------------------------------------------------------------------

class ImageDataset:
    """A multi-LOD image dataset: an NVlabs TFRecord folder or a built-in synthetic kind.

    Args:
        source: a dataset folder (written by `python -m datasets.prepare` or NVlabs'
            dataset_tool.py), or a synthetic kind from `synthetic.KINDS` ("shapes"). An existing
            folder always wins over a kind of the same name.
        resolution: for a folder, an optional smaller full resolution (a level present in the
            folder; e.g. a 256x256 dataset used by a 32x32 model); for a synthetic kind, the
            resolution it is rendered at (default 32).
        num_images: use only the first num_images records (folders) or render that many images
            (synthetic; default 4096, fewer when 256 MiB would not hold them).
        seed: synthetic kinds only: the seed of the rendered images.
    """

    def __init__(self, source, *, resolution=None, num_images=None, seed=0):
        source = os.fspath(source)
        if num_images is not None and int(num_images) < 1:
            raise DatasetError(f"num_images must be >= 1, got {num_images}")
        if os.path.isdir(source):
            self._open_folder(source, resolution, num_images)
        elif source.removeprefix("synthetic:") in synthetic.KINDS:
            self._open_synthetic(source.removeprefix("synthetic:"), resolution, num_images, seed)
        else:
            raise DatasetError(f"{source}: neither a dataset folder nor a built-in dataset "
                               f"({', '.join(synthetic.KINDS)}); check the path")

    def _open_folder(self, path, resolution, num_images):
        folder = TFRecordDirectory(path)
        top = folder.resolution
        if resolution is not None:
            resolution = check_resolution(resolution)
            if resolution not in folder.files:
                raise DatasetError(f"{path}: no {resolution}x{resolution} level (levels: "
                                   f"{sorted(folder.files, reverse=True)}); pick one of those")
            top = resolution
        count = folder.num_images if num_images is None else min(int(num_images),
                                                                 folder.num_images)
        labels = None if folder.labels is None else folder.labels[:count]
        self._files = {r: p for r, p in folder.files.items() if r <= top}
        self._arrays = None
        self._labels = labels
        self.info = DatasetInfo(
            name=folder.name, source=folder.directory, resolution=top,
            channels=folder.channels, num_images=count, label_size=folder.label_size,
            resolutions=tuple(sorted(self._files, reverse=True)),
            label_names=read_label_names(folder.directory))

    def _open_synthetic(self, kind, resolution, num_images, seed):
        if kind != "shapes":
            raise DatasetError(f"{kind} is an unpaired (two-domain) dataset; open it with "
                               "datasets.open_unpaired")
        resolution = check_resolution(resolution or SYNTHETIC_DEFAULT_RESOLUTION)
        if num_images is None:
            bytes_per_image = resolution * resolution * 4  # 3 channels, all levels (+1/3)
            num_images = max(1, min(SYNTHETIC_DEFAULT_IMAGES,
                                    SYNTHETIC_MEMORY_BUDGET // bytes_per_image))
        images, classes = synthetic.shapes(int(num_images), resolution, seed)
        levels = lod_pyramid(images.transpose(0, 3, 1, 2))
        self._arrays = {level.shape[2]: level.transpose(0, 2, 3, 1) for level in levels}
        self._files = None
        self._labels = np.eye(synthetic.NUM_CLASSES, dtype=np.float32)[classes]
        self.info = DatasetInfo(
            name=kind, source=f"synthetic:{kind}", resolution=resolution, channels=3,
            num_images=int(num_images), label_size=synthetic.NUM_CLASSES,
            resolutions=tuple(sorted(self._arrays, reverse=True)),
            label_names=synthetic.SHAPE_CLASSES)

    @property
    def labels(self):
        """float32 (num_images, label_size) in record order (zeros of width 0 if unlabelled).

        Conditional generators sample their labels from these rows, as NVlabs' training loop.
        """
        if self._labels is None:
            return np.zeros((self.info.num_images, 0), np.float32)
        return self._labels

    def images(self, resolution=None):
        """All images of one level as uint8 (N, R, R, C) in record order (small datasets)."""
        batches = self.pipeline(self.info.num_images, resolution, dtype=tf.uint8, shuffle=False,
                                repeat=False, drop_remainder=False)
        return np.concatenate([b[0].numpy() for b in batches])

    def pipeline(self, batch_size, resolution=None, *, dtype=tf.float32, mirror=False,
                 shuffle=True, shuffle_buffer=None, repeat=True, seed=0, drop_remainder=True,
                 input_context=None, cache=None, start_image=0):
        """tf.data.Dataset of (images, labels) batches at one level of detail.

        Args:
            batch_size: images per batch (per replica when used through `distribute`).
            resolution: the level to read (default: info.resolution); must be in
                info.resolutions. Use `resolution_for_lod(info.resolution, lod)`.
            dtype: tf.float32 (default): images in [-1, 1]; tf.uint8: the stored pixels.
            mirror: flip each image left-right with probability 1/2 (StyleGAN mirror_augment).
            shuffle: shuffle records (buffer: `shuffle_buffer` images, default as many as fit
                in 256 MiB, at most the dataset). Each epoch is reshuffled.
            repeat: repeat forever (training); False gives one epoch (metrics, export).
            seed: seeds the shuffle order and the mirror flips.
            drop_remainder: only full batches (static batch dimension).
            input_context: tf.distribute.InputContext: shard records across input pipelines
                (workers) and decorrelate their seeds.
            start_image: resume the (repeating) stream after this many images of this input
                pipeline, a multiple of batch_size: the batches then equal those an
                uninterrupted pipeline yields from there (exact resume of training).
            cache: keep the decoded images in memory after the first epoch (default: if the
                level is at most 512 MiB).
        Returns:
            tf.data.Dataset yielding images (batch, R, R, C) of `dtype` and labels float32
            (batch, label_size).
        """
        info = self.info
        resolution = info.resolution if resolution is None else int(resolution)
        if resolution not in info.resolutions:
            raise DatasetError(f"{info.source}: no {resolution}x{resolution} level; available: "
                               f"{list(info.resolutions)}")
        if int(batch_size) < 1:
            raise DatasetError(f"batch_size must be >= 1, got {batch_size}")
        dtype = tf.as_dtype(dtype)
        if dtype not in (tf.float32, tf.uint8):
            raise DatasetError(f"dtype must be float32 or uint8, got {dtype.name}")
        bytes_per_image = resolution * resolution * info.channels
        if input_context is not None:
            seed = seed + _PIPELINE_SEED_STRIDE * input_context.input_pipeline_id

        label_column, decode_labels = self._label_encoding()
        dataset = self._elements(resolution, label_column, input_context)
        if cache is None:
            cache = self._files is not None and info.num_images * bytes_per_image <= CACHE_BUDGET
        if cache:
            dataset = dataset.cache()
        buffer = min(int(shuffle_buffer or max(1, SHUFFLE_BUDGET // bytes_per_image)),
                     info.num_images)
        start_image = int(start_image)
        if start_image % int(batch_size):
            raise DatasetError(f"start_image {start_image} is not a multiple of the batch size "
                               f"{batch_size}")
        if shuffle:
            dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            # The stream (every epoch's order) is a pure function of the seed, so resuming at
            # image p skips p elements of the same stream: fast for in-memory and cached data
            # (millions of elements per second); uncached TFRecords are read again up to p.
            dataset = dataset.repeat().skip(start_image)
        elif start_image:
            raise DatasetError("start_image needs repeat=True")
        dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
        dataset = tf.data.Dataset.zip(
            dataset, tf.data.Dataset.counter(start=start_image // int(batch_size)))

        def process(batch, step):
            images, label = batch
            if mirror:
                images = _mirror(images, tf.constant(seed, tf.int64), step)
            if dtype == tf.float32:
                images = to_float(images)
            return images, decode_labels(label)

        dataset = dataset.map(process, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return prefetched_stream(dataset)

    def _label_encoding(self):
        """(per-image label column, batch decoder back to float32 (B, label_size))."""
        labels = self.labels
        label_size = labels.shape[1]
        if label_size == 0:
            # A scalar placeholder: tf.data's unbatch of (N, 0) tensors crashes the process
            # (segmentation fault, TF 2.21).
            return (np.zeros(len(labels), np.int32),
                    lambda column: tf.zeros([tf.shape(column)[0], 0]))
        if np.all(labels.sum(1) == 1) and np.all((labels == 0) | (labels == 1)):
            # One-hot labels travel as class indices (4 bytes per image, not 4 * label_size).
            return (labels.argmax(1).astype(np.int32),
                    lambda column: tf.one_hot(column, label_size, dtype=tf.float32))
        return labels, lambda column: column

    def _elements(self, resolution, label_column, input_context):
        """tf.data.Dataset of (uint8 (R, R, C) image, label column entry), in record order."""
        if self._files is not None:
            records = tf.data.TFRecordDataset(self._files[resolution],
                                              buffer_size=8 << 20).take(self.info.num_images)
        else:
            records = tf.data.Dataset.from_tensor_slices(self._arrays[resolution])
        dataset = tf.data.Dataset.zip(records, tf.data.Dataset.from_tensor_slices(label_column))
        if input_context is not None and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        if self._files is not None:
            # Parse records 256 at a time (one parse_example + decode_raw); the cache and the
            # shuffle buffer then hold decoded images, so later epochs never parse again.
            channels = self.info.channels
            dataset = dataset.batch(256).map(
                lambda data, label: (parse_batch(data, channels, resolution), label),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
        return dataset

    def distribute(self, strategy, global_batch_size, resolution=None, start_image=0,
                   **pipeline_kwargs):
        """The pipeline for a tf.distribute strategy: each replica gets its share of the batch.

        Uses `strategy.distribute_datasets_from_function`; every input pipeline (one per worker)
        reads its own shard of the records with per-replica batches of
        global_batch_size / num_replicas_in_sync. Iterate it, or pass it to `strategy.run`
        loops or `Model.fit`. `start_image`: images already consumed by the whole job (a
        multiple of global_batch_size); each input pipeline resumes after its share.
        """
        def pipeline(batch, input_context, start):
            return self.pipeline(batch, resolution, input_context=input_context,
                                 start_image=start, **pipeline_kwargs)

        return distribute_pipeline(strategy, global_batch_size, start_image, pipeline)


def distribute_pipeline(strategy, global_batch_size, start_image, pipeline):
    """One input pipeline per worker for `strategy`, each with per-replica batches.

    Args:
      strategy: a tf.distribute strategy.
      global_batch_size: images per step summed over replicas; a multiple of the replica count.
      start_image: images the whole job already consumed, a multiple of global_batch_size.
      pipeline: `pipeline(per_replica_batch, input_context, start_image)` -> tf.data.Dataset of
        one input pipeline's shard, resuming after its share `start_image` of the images.

    Returns:
      the distributed dataset (`strategy.distribute_datasets_from_function`).

    Raises:
      DatasetError: a batch the replicas cannot share, or a start inside a batch.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise DatasetError(f"global batch size {global_batch_size} is not divisible by the "
                           f"{replicas} replicas; use a multiple of {replicas}")
    if start_image % global_batch_size:
        raise DatasetError(f"start_image {start_image} is not a multiple of the global batch "
                           f"size {global_batch_size}")

    def dataset_fn(input_context):
        return pipeline(input_context.get_per_replica_batch_size(global_batch_size), input_context,
                        start_image // input_context.num_input_pipelines)

    return strategy.distribute_datasets_from_function(dataset_fn)


def open_dataset(source, *, resolution=None, num_images=None, seed=0):
    """Opens a dataset folder or a built-in synthetic kind; see `ImageDataset`."""
    return ImageDataset(source, resolution=resolution, num_images=num_images, seed=seed)
