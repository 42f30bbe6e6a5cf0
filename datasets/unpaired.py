"""U-GAT-IT unpaired image-to-image data: the official folder layout, read directly.

    pair = datasets.open_unpaired("dataset/selfie2anime")     # ROOT/{trainA,trainB,testA,testB}
    pair = datasets.open_unpaired("shapes2cartoon", resolution=64)   # built-in, no files
    for a, b in pair.train_pipeline(resolution=256, batch_size=1):   # float32 [-1, 1] NHWC
        ...
    for a in pair.test_pipeline("A", resolution=256):                 # testA, resized only
        ...

There is no preparation step: like the official code, the loader reads `ROOT/trainA`,
`ROOT/trainB` (required) and `ROOT/testA`, `ROOT/testB` (needed only for test pipelines), each
walked recursively. Opening a folder root decodes every image once (`verify=True`) so that a bad
file is reported up front, one line naming it, instead of crashing a training run hours later;
`skip_bad=True` drops bad files and reports how many. Every image goes through
`datasets.images.load_image` (EXIF orientation, grayscale/palette/alpha/16-bit/CMYK -> RGB).
`python -m datasets.prepare info ROOT` runs the same check from the command line.

Training augmentation (official UGATIT-pytorch `train_transform`): random horizontal flip ->
resize to augment_size x augment_size (aspect not kept) -> random crop resolution x resolution ->
[-1, 1]. augment_size defaults to round(resolution * 286 / 256), i.e. 286 for 256 as the official
code (which adds 30 pixels). Test: resize to resolution x resolution -> [-1, 1]. Resizing is
bilinear with antialiasing (tf.image.resize), which equals Pillow's bilinear resize (what
torchvision's Resize calls) to 3e-4 of a grey level, up- and downscaling; the official code then
rounds to uint8, we keep the float. A and B are shuffled independently (unpaired), as the
official two loaders are.
"""

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from datasets import synthetic
from datasets.errors import BadImageError, DatasetError
from datasets.images import list_image_files, load_image
from datasets.loader import distribute_pipeline, prefetched_stream

FOLDERS = ("trainA", "trainB", "testA", "testB")
SYNTHETIC_DEFAULT_RESOLUTION = 64
SYNTHETIC_DEFAULT_IMAGES = 1024          # per domain, training split
SYNTHETIC_DEFAULT_TEST_IMAGES = 64       # per domain, test split
SYNTHETIC_MEMORY_BUDGET = 256 << 20


def augment_size_for(resolution):
    """Resize target before the random crop: round(resolution * 286 / 256) (286 for 256)."""
    return int(round(resolution * 286 / 256))


@dataclasses.dataclass(frozen=True)
class UnpairedInfo:
    """What an unpaired dataset holds.

    Attributes:
        name: root folder base name or the synthetic kind.
        source: absolute root path or "synthetic:<kind>".
        counts: {"trainA": n, "trainB": n, "testA": n, "testB": n} (0 = folder absent).
        skipped: files dropped by skip_bad, as "path: reason" strings.
    """
    name: str
    source: str
    counts: dict
    skipped: tuple = ()


def verify_images(paths, workers=None):
    """Decodes every path (threads); returns [(path, BadImageError), ...] for the bad ones."""
    def check(path):
        try:
            load_image(path)
            return None
        except BadImageError as error:
            return path, error

    with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        return [bad for bad in pool.map(check, paths) if bad is not None]


def inference_transform(images, size):
    """The official test transform: resize to size x size (bilinear, antialiased, the aspect
    not kept), then [0, 255] -> [-1, 1]. images (..., H, W, 3), uint8 or float in [0, 255] ->
    float32 (..., size, size, 3). The test pipeline, run_translation.py and the U-GAT-IT
    SavedModel's uint8 signatures all use it."""
    images = tf.image.resize(images, [size, size], "bilinear", antialias=True)
    return images * (2.0 / 255.0) - 1.0


class UnpairedDataset:
    """Two unpaired image domains A and B for U-GAT-IT.

    Args:
        source: root folder with trainA/ and trainB/ (and testA/, testB/), or the synthetic
            kind "shapes2cartoon". An existing folder wins over a kind of the same name.
        resolution: synthetic only: render size (default 64).
        num_images, num_test: synthetic only: images per domain in train / test (defaults 1024
            and 64, fewer at large resolutions to stay within 256 MiB).
        seed: synthetic only: the seed of the rendered images.
        verify: folders only: decode every image once at open time and fail on the first bad
            one (default True; False checks nothing until the pipeline reads the file).
        skip_bad: folders only: drop bad images instead of failing (listed in info.skipped).
    """

    def __init__(self, source, *, resolution=None, num_images=None, num_test=None, seed=0,
                 verify=True, skip_bad=False):
        source = os.fspath(source)
        if os.path.isdir(source):
            self._open_folder(source, verify, skip_bad)
        elif source.removeprefix("synthetic:") == "shapes2cartoon":
            self._open_synthetic(resolution, num_images, num_test, seed)
        else:
            raise DatasetError(f"{source}: neither a folder nor a built-in unpaired dataset "
                               "(shapes2cartoon); check the path")

    def _open_folder(self, root, verify, skip_bad):
        root = os.path.abspath(root)
        self._files, skipped = {}, []
        for folder in FOLDERS:
            path = os.path.join(root, folder)
            if not os.path.isdir(path):
                if folder.startswith("train"):
                    raise DatasetError(f"{path} is missing: a U-GAT-IT dataset root needs "
                                       "trainA/ and trainB/ (and testA/, testB/ for testing); "
                                       "create it or pass the right root")
                self._files[folder] = []
                continue
            files, _ = list_image_files(path)
            if verify or skip_bad:
                bad = verify_images(files)
                if bad and not skip_bad:
                    path0, error = bad[0]
                    more = f" ({len(bad)} bad files in total)" if len(bad) > 1 else ""
                    raise DatasetError(f"{error}{more}")
                for path0, error in bad:
                    files.remove(path0)
                    skipped.append(f"{path0}: {error.reason}")
                if not files:
                    raise DatasetError(f"{path}: no usable images left after skipping bad ones")
            self._files[folder] = files
        self._arrays = None
        self.info = UnpairedInfo(name=os.path.basename(root), source=root,
                                 counts={f: len(p) for f, p in self._files.items()},
                                 skipped=tuple(skipped))

    def _open_synthetic(self, resolution, num_images, num_test, seed):
        resolution = resolution or SYNTHETIC_DEFAULT_RESOLUTION
        budget = max(1, SYNTHETIC_MEMORY_BUDGET // (2 * 3 * resolution * resolution))
        num_images = num_images or min(SYNTHETIC_DEFAULT_IMAGES, budget)
        num_test = num_test or SYNTHETIC_DEFAULT_TEST_IMAGES
        try:
            train = synthetic.shapes2cartoon(num_images, resolution, seed, "train")
            test = synthetic.shapes2cartoon(num_test, resolution, seed, "test")
        except ValueError as error:
            raise DatasetError(str(error)) from None
        self._arrays = dict(zip(FOLDERS, train + test))
        self._files = None
        self.info = UnpairedInfo(name="shapes2cartoon", source="synthetic:shapes2cartoon",
                                 counts={f: len(a) for f, a in self._arrays.items()})

    def files(self, folder):
        """Image paths of one folder ("trainA", ...), in sorted order (folder sources)."""
        return [] if self._files is None else list(self._files[folder])

    def _images(self, folder):
        """tf.data.Dataset of uint8 (H, W, 3) images of one folder, in order."""
        if self.info.counts[folder] == 0:
            raise DatasetError(f"{self.info.source}: {folder}/ is missing or empty; add "
                               f"{folder} images to run this pipeline")
        if self._arrays is not None:
            return tf.data.Dataset.from_tensor_slices(self._arrays[folder])
        return tf.data.Dataset.from_tensor_slices(self._files[folder])

    def _decode(self, dataset):
        if self._arrays is not None:
            return dataset

        def decode(path):
            image = tf.numpy_function(lambda p: load_image(p.decode()), [path], tf.uint8,
                                      stateful=False)
            image.set_shape([None, None, 3])
            return image

        return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def _domain(self, folder, resolution, augment_size, flip, shuffle, repeat, seed,
                input_context, start_image=0):
        dataset = self._images(folder)
        if input_context is not None and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines,
                                    input_context.input_pipeline_id)
        if shuffle:
            dataset = dataset.shuffle(self.info.counts[folder], seed=seed,
                                      reshuffle_each_iteration=True)
        if repeat:
            # Every epoch's order is a pure function of the seed, so resuming at image p skips
            # p elements of the same stream (paths or arrays: before decoding, cheap); the
            # augmentation is seeded by the element's index in the stream, which the counter
            # continues from p.
            dataset = dataset.repeat().skip(start_image)
        dataset = tf.data.Dataset.zip(self._decode(dataset),
                                      tf.data.Dataset.counter(start=start_image))

        def augment(image, index):
            flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(
                tf.stack([tf.constant(seed, tf.int64), index]), 2))
            if flip:
                image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            image = tf.image.resize(image, [augment_size, augment_size], "bilinear",
                                    antialias=True)
            image = tf.image.stateless_random_crop(image, [resolution, resolution, 3],
                                                   crop_seed)
            return image * (2.0 / 255.0) - 1.0  # [0, 255] -> [-1, 1], as loader.to_float

        return dataset.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def train_pipeline(self, resolution, batch_size=1, *, flip=True, augment_size=None,
                       shuffle=True, repeat=True, seed=0, input_context=None, start_image=0):
        """tf.data.Dataset of (A, B) training batches, float32 (batch, R, R, 3) in [-1, 1].

        Args:
            resolution: crop size R (the network's image size).
            batch_size: per batch (per replica through `distribute`); official: 1.
            flip: random horizontal flip (official: on).
            augment_size: resize target before the crop (default augment_size_for(R)).
            shuffle, repeat: independent shuffling of A and B each epoch; repeat forever.
            seed: seeds shuffle, flip and crop (A and B use different streams).
            input_context: tf.distribute.InputContext for sharding across workers.
            start_image: resume the (repeating) stream after this many (A, B) pairs of this
                input pipeline, a multiple of batch_size: the batches then equal those an
                uninterrupted pipeline yields from there, augmentation included (exact resume
                of training).
        """
        augment_size = augment_size or augment_size_for(resolution)
        start_image = int(start_image)
        if start_image % int(batch_size):
            raise DatasetError(f"start_image {start_image} is not a multiple of the batch size "
                               f"{batch_size}")
        if start_image and not repeat:
            raise DatasetError("start_image needs repeat=True")
        if augment_size < resolution:
            raise DatasetError(f"augment_size {augment_size} is smaller than the crop "
                               f"{resolution}; use at least {resolution}")
        if input_context is not None:
            seed = seed + 1_000_003 * input_context.input_pipeline_id
        a, b = (self._domain(folder, int(resolution), int(augment_size), flip, shuffle, repeat,
                             2 * seed + k, input_context, start_image)
                for k, folder in enumerate(("trainA", "trainB")))
        dataset = tf.data.Dataset.zip(a, b).batch(int(batch_size), drop_remainder=True)
        return prefetched_stream(dataset)

    def test_pipeline(self, domain, resolution, batch_size=1):
        """tf.data.Dataset of testA or testB images (domain "A" or "B"), in file order, resized
        to (R, R), float32 [-1, 1], one pass, last batch kept."""
        if domain not in ("A", "B"):
            raise DatasetError(f"domain must be 'A' or 'B', got {domain!r}")
        dataset = self._decode(self._images("test" + domain))
        dataset = dataset.map(lambda image: inference_transform(image, resolution),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return dataset.batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)

    def distribute(self, strategy, global_batch_size, resolution, start_image=0,
                   **pipeline_kwargs):
        """train_pipeline for a tf.distribute strategy (per-replica batches of
        global_batch_size / num_replicas_in_sync, one shard per input pipeline).

        `start_image`: pairs already consumed by the whole job (a multiple of
        global_batch_size); each input pipeline resumes after its share."""
        def pipeline(batch, input_context, start):
            return self.train_pipeline(resolution, batch, input_context=input_context,
                                       start_image=start, **pipeline_kwargs)

        return distribute_pipeline(strategy, global_batch_size, start_image, pipeline)


def open_unpaired(source, **kwargs):
    """Opens a U-GAT-IT root folder or the built-in "shapes2cartoon"; see `UnpairedDataset`."""
    return UnpairedDataset(source, **kwargs)
