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

import importlib

# The public names and their modules. They load on first use (PEP 562), so that importing the
# package, or running `python -m datasets.prepare`, does not import TensorFlow before the tool
# has set it up (cli_common.import_tensorflow_quietly): loader, tfrecords and unpaired import
# it; errors, images and synthetic do not.
_EXPORTS = {
    "BadImageError": "errors", "DatasetError": "errors",
    "DatasetInfo": "loader", "ImageDataset": "loader", "fade_reals": "loader",
    "open_dataset": "loader", "resolution_for_lod": "loader", "to_float": "loader",
    "UnpairedDataset": "unpaired", "UnpairedInfo": "unpaired", "augment_size_for": "unpaired",
    "open_unpaired": "unpaired",
}
_SUBMODULES = ("errors", "images", "loader", "prepare", "synthetic", "tfrecords", "unpaired")

__all__ = sorted([*_EXPORTS, "synthetic"])


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"datasets.{_EXPORTS[name]}"), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"datasets.{name}")
    else:
        raise AttributeError(f"module 'datasets' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
