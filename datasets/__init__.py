"""Datasets for FQ-GAN: NVlabs multi-LOD TFRecords, built-in procedural data, tf.data loaders.

Public API (see each module's docstring):

    open_dataset(source, resolution=None, num_images=None, seed=0) -> ImageDataset
        .info: DatasetInfo(name, source, resolution, channels, num_images, label_size,
               resolutions, label_names; has_labels, max_lod)
        .pipeline(batch_size, resolution=None, dtype=float32, mirror=False, shuffle=True, ...)
            -> tf.data.Dataset of (images float32 [-1, 1] (B, R, R, C), labels (B, label_size))
        .distribute(strategy, global_batch_size, resolution=None, ...) -> distributed dataset
        .labels, .images(resolution)
    fade_reals(images, lod), resolution_for_lod(resolution, lod), to_float(images)
    open_unpaired(source, ...) -> UnpairedDataset (U-GAT-IT: .train_pipeline -> (A, B),
        .test_pipeline(domain, resolution), .distribute)
    synthetic: shapes(...), shapes2cartoon(...), classify_shapes(...)
    tfrecords: the format (lod_pyramid, MultiLodWriter, parse_batch, TFRecordDirectory)
    prepare: create_from_images, create_cifar10, create_cifar100, create_synthetic, describe,
        display; CLI `python -m datasets.prepare <command>`
"""

from datasets import synthetic
from datasets.errors import BadImageError, DatasetError
from datasets.loader import (DatasetInfo, ImageDataset, fade_reals, open_dataset,
                             resolution_for_lod, to_float)
from datasets.unpaired import UnpairedDataset, UnpairedInfo, augment_size_for, open_unpaired

__all__ = [
    "BadImageError", "DatasetError", "DatasetInfo", "ImageDataset", "UnpairedDataset",
    "UnpairedInfo", "augment_size_for", "fade_reals", "open_dataset", "open_unpaired",
    "resolution_for_lod", "synthetic", "to_float",
]
