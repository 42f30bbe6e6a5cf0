"""Sliced Wasserstein distance between Laplacian-pyramid patch sets (ProGAN, Karras et al. 2018).

The algorithm of ProGAN's `metrics/sliced_wasserstein.py`, per `../shared/reference/stylegan.md`:

1. Laplacian pyramid of each image, one level per resolution >= 16 (finest first; the last level
   is the low-pass residual). pyr_down = 5x5 binomial / 256 with mirror padding, keep every second
   pixel; pyr_up = zero insertion, the same filter x 4 (cv2.pyrDown / pyrUp).
2. 128 random 7x7x3 neighbourhoods per image per level, centres uniform in [3, size - 3).
3. Each level's descriptor set is normalised per colour channel by its own mean and std.
4. 4 repeats x 128 random unit directions; project, sort, mean |difference|; average the repeats.
5. Report x 1e3 per level and their mean ("SWDx1e3_<res>", "SWDx1e3_avg").

Randomness comes from one `np.random.RandomState(seed)`, consumed in the reference's order:
`descriptors` draws, per minibatch and per level, the x centres then the y centres; `distance`
draws, per level and per repeat, a (147, 128) direction matrix. The reference builds its descriptor
index grid with `np.ogrid[N, C, x, y]`, so descriptor components are ordered (channel, x, y); ours
use the same order, so equal random numbers give equal results.

Per-pixel work is vectorised: the pyramid and the patch gather run in TensorFlow (one traced call
per minibatch), the projections and sorts in numpy (see `sorted_projection_distance`); the only
Python loops are over minibatches, levels and the 4 repeats.

Memory: a descriptor set holds N x 128 x 147 float32 per level (75 KB per image per level), as in
the reference: 16384 images at 128x128 (4 levels) take about 4.9 GB per set.
"""

import numpy as np
import tensorflow as tf

from metrics.images import to_uint8_images

# 5x5 binomial filter of cv2.pyrDown (sum 1).
_BINOMIAL_5 = np.float32([1.0, 4.0, 6.0, 4.0, 1.0])
_GAUSSIAN_5X5 = np.outer(_BINOMIAL_5, _BINOMIAL_5) / 256.0


# The smallest pyramid level (NVlabs' SWD: 16x16); smaller images have no level.
MIN_RESOLUTION = 16


def swd_resolutions(resolution):
    """Pyramid level resolutions for an image of `resolution` rows: [R, R/2, ..., 16]."""
    if resolution < MIN_RESOLUTION:
        raise ValueError(f"SWD needs images of at least {MIN_RESOLUTION}x{MIN_RESOLUTION} (one "
                         f"level per resolution >= {MIN_RESOLUTION}), got {resolution} rows.")
    resolutions = []
    while resolution >= MIN_RESOLUTION:
        resolutions.append(resolution)
        resolution //= 2
    return resolutions


def _binomial_kernel(channels, gain):
    kernel = np.tile((_GAUSSIAN_5X5 * gain)[:, :, None, None], (1, 1, channels, 1))
    return tf.constant(kernel, tf.float32)  # [5, 5, C, 1]


def _mirror_pad(x):
    # scipy.ndimage mode="mirror" (d c b | a b c d | c b a) is TensorFlow's REFLECT.
    return tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="REFLECT")


def pyr_down(x):
    """Blur with the 5x5 binomial (mirror padding) and keep even rows and columns.

    x: float32 (N, H, W, C), H and W even. Returns (N, H/2, W/2, C).
    """
    kernel = _binomial_kernel(x.shape[-1], 1.0)
    return tf.nn.depthwise_conv2d(_mirror_pad(x), kernel, [1, 2, 2, 1], "VALID")


def pyr_up(x):
    """Zero-insert to twice the size and blur with 4 x the 5x5 binomial (mirror padding).

    x: float32 (N, H, W, C). Returns (N, 2H, 2W, C).
    """
    shape = tf.shape(x)
    n, h, w, c = shape[0], shape[1], shape[2], shape[3]
    zeros = tf.zeros_like(x)
    x = tf.reshape(tf.stack([x, zeros], axis=3), [n, h, 2 * w, c])  # values on even columns
    x = tf.reshape(tf.stack([x, tf.zeros_like(x)], axis=2), [n, 2 * h, 2 * w, c])  # even rows
    kernel = _binomial_kernel(x.shape[-1], 4.0)
    return tf.nn.depthwise_conv2d(_mirror_pad(x), kernel, [1, 1, 1, 1], "VALID")


def laplacian_pyramid(images, num_levels):
    """Laplacian pyramid, finest level first; the last level is the low-pass image itself.

    Args:
      images: float32 (N, H, W, C); H and W divisible by 2^(num_levels - 1).
      num_levels: number of levels >= 1.

    Returns:
      list of num_levels float32 tensors, level l of shape (N, H / 2^l, W / 2^l, C);
      level l = G_l - pyr_up(G_{l+1}) for l < num_levels - 1, with G_0 = images.
    """
    gaussian = [tf.convert_to_tensor(images, tf.float32)]
    for _ in range(1, num_levels):
        gaussian.append(pyr_down(gaussian[-1]))
    return [g - pyr_up(g_next) for g, g_next in zip(gaussian[:-1], gaussian[1:])] + [gaussian[-1]]


def _gather_descriptors(level, xs, ys, nhood_size, nhoods_per_image):
    """Neighbourhoods around (ys, xs) as (P, C * nhood_size^2), components ordered (C, x, y).

    level: (N, H, W, C); xs, ys: int32 (P,) centres, P = N * nhoods_per_image, descriptor p
    taken from image p // nhoods_per_image.
    """
    half = nhood_size // 2
    offsets = tf.range(-half, half + 1, dtype=tf.int32)
    count = tf.shape(xs)[0]
    image = tf.range(count, dtype=tf.int32) // nhoods_per_image
    # Axis 1 of the patch walks x and axis 2 walks y, as the reference's ogrid[nhood, chan, x, y].
    shape = [count, nhood_size, nhood_size]
    image_idx = tf.broadcast_to(image[:, None, None], shape)
    x_idx = tf.broadcast_to(xs[:, None, None] + offsets[None, :, None], shape)
    y_idx = tf.broadcast_to(ys[:, None, None] + offsets[None, None, :], shape)
    patches = tf.gather_nd(level, tf.stack([image_idx, y_idx, x_idx], axis=-1))  # [P, x, y, C]
    patches = tf.transpose(patches, [0, 3, 1, 2])  # [P, C, x, y]
    return tf.reshape(patches, [count, -1])


@tf.function(reduce_retracing=True)
def _minibatch_descriptors(images, xs, ys, nhood_size, nhoods_per_image):
    """Raw descriptors of every pyramid level for one uint8 minibatch (one traced graph)."""
    levels = laplacian_pyramid(tf.cast(images, tf.float32), len(xs))
    return [_gather_descriptors(level, x, y, nhood_size, nhoods_per_image)
            for level, x, y in zip(levels, xs, ys)]


def sorted_projection_distance(a, b, directions):
    """mean |sort(a @ dirs) - sort(b @ dirs)| over descriptors and directions (float64).

    a, b: float32 (P, D); directions: float32 (D, R). The projections are sorted as (R, P)
    contiguous rows: numpy's SIMD sort on rows is ~5x faster than sorting (P, R) along axis 0,
    and several times faster than tf.sort (a full top_k on CPU). The product is formed as
    dirs^T @ x^T, which BLAS writes as (R, P) rows directly (a transposed copy of x @ dirs cost
    twice the sort). Float32 products and sorts as the reference; the mean accumulates in
    float64.
    """
    def sorted_rows(x):
        projected = np.matmul(directions.T, x.T)  # [R, P], C-contiguous
        projected.sort(axis=1)
        return projected

    return float(np.mean(np.abs(sorted_rows(a) - sorted_rows(b)), dtype=np.float64))


def normalize_descriptors(descriptors, channels=3):
    """Per-channel standardisation of a descriptor set, in place: (d - mean_c) / std_c.

    descriptors: float32 (P, channels * k) ordered channel-major. Mean and population std (ddof 0)
    over all descriptors and positions of each channel, accumulated in float64 by blocks.

    Blocks of 4096 descriptors (4.8 MB in float64 at 7x7x3): with 65536 (a 38 MB float64 copy
    and as large a square per block, fresh memory every call), a 256-image set took 0.13 to 0.6 s
    per level inside a training run against 11 ms now (AMD EPYC, 2 cores, 2026-12-05; ~4 s of
    the default run's six SWD evaluations). Each block is summed over descriptors first (a
    contiguous reduction), then over positions.
    """
    view = descriptors.reshape(descriptors.shape[0], channels, -1)
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for begin in range(0, view.shape[0], 4096):
        block = view[begin:begin + 4096].astype(np.float64)
        total += block.sum(axis=0).sum(axis=1)
        total_sq += np.square(block).sum(axis=0).sum(axis=1)
    count = view.shape[0] * view.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    if np.any(std == 0.0):
        raise ValueError("SWD: a colour channel is constant over the whole descriptor set "
                         "(std 0); SWD is undefined for such image sets.")
    view -= mean.astype(np.float32)[None, :, None]
    view /= std.astype(np.float32)[None, :, None]
    return descriptors


class SlicedWassersteinDistance:
    """ProGAN's SWD, seedable, for image sets of one resolution.

    Args:
      resolution: image height and width (power of two >= 16 in practice; H and W must be
        divisible by 2^(levels - 1)).
      seed: seed of the np.random.RandomState that draws patch centres and directions; None draws
        a fresh seed.
      nhood_size: neighbourhood side (reference: 7).
      nhoods_per_image: neighbourhoods per image per level (reference: 128).
      dir_repeats: repeats of random directions (reference: 4).
      dirs_per_repeat: directions per repeat (reference: 128).
      minibatch_size: images per TensorFlow call while extracting descriptors.

    Usage (training: compute the real descriptors once, then one call per evaluation):
      >>> swd = SlicedWassersteinDistance(32, seed=0)
      >>> real = swd.descriptors(real_images)           # uint8 NHWC or float in [-1, 1]
      >>> swd.distance(real, swd.descriptors(fake_images))
      {'SWDx1e3_32': ..., 'SWDx1e3_16': ..., 'SWDx1e3_avg': ...}
    """

    def __init__(self,
                 resolution,
                 seed=None,
                 nhood_size=7,
                 nhoods_per_image=128,
                 dir_repeats=4,
                 dirs_per_repeat=128,
                 minibatch_size=64):
        for name, value in [("nhood_size", nhood_size), ("nhoods_per_image", nhoods_per_image),
                            ("dir_repeats", dir_repeats), ("dirs_per_repeat", dirs_per_repeat),
                            ("minibatch_size", minibatch_size)]:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SlicedWassersteinDistance: {name} must be a positive integer, "
                                 f"got {value!r}.")
        if nhood_size % 2 != 1:
            raise ValueError(
                f"SlicedWassersteinDistance: nhood_size must be odd, got {nhood_size}.")
        self.resolution = int(resolution)
        self.resolutions = swd_resolutions(self.resolution)
        self.nhood_size = int(nhood_size)
        self.nhoods_per_image = int(nhoods_per_image)
        self.dir_repeats = int(dir_repeats)
        self.dirs_per_repeat = int(dirs_per_repeat)
        self.minibatch_size = int(minibatch_size)
        self.rng = np.random.RandomState(seed)

    @property
    def metric_names(self):
        return [f"SWDx1e3_{res}" for res in self.resolutions] + ["SWDx1e3_avg"]

    def _check_shape(self, shape):
        height, width = shape[1], shape[2]
        factor = 2 ** (len(self.resolutions) - 1)
        if height != self.resolution or height % factor or width % factor or width < 16:
            raise ValueError(
                f"SWD was set up for {self.resolution}x{self.resolution} images, got images of "
                f"{height}x{width}.")

    def descriptors(self, images):
        """Normalised descriptor sets of an image set, one per pyramid level (finest first).

        Args:
          images: uint8 (N, H, W, 3) or float in [-1, 1], or an iterable of such minibatches
            (e.g. a generator of generated batches, to keep memory to the descriptors).

        Returns:
          list of float32 numpy arrays (N * nhoods_per_image, 3 * nhood_size^2).
        """
        if hasattr(images, "shape") and len(images.shape) == 4:
            batches = (images[i:i + self.minibatch_size]
                       for i in range(0, int(images.shape[0]), self.minibatch_size))
        else:
            batches = images
        half = self.nhood_size // 2
        per_level = [[] for _ in self.resolutions]
        for batch in batches:
            batch = to_uint8_images(batch)
            self._check_shape(batch.shape)
            count = batch.shape[0] * self.nhoods_per_image
            xs, ys = [], []
            for level in range(len(self.resolutions)):
                height, width = batch.shape[1] >> level, batch.shape[2] >> level
                # Reference order: x centres, then y centres, per level, per minibatch.
                xs.append(tf.constant(self.rng.randint(half, width - half, size=count), tf.int32))
                ys.append(tf.constant(self.rng.randint(half, height - half, size=count), tf.int32))
            levels = _minibatch_descriptors(tf.constant(batch), xs, ys, self.nhood_size,
                                            self.nhoods_per_image)
            for store, desc in zip(per_level, levels):
                store.append(desc.numpy())
        if not per_level[0]:
            raise ValueError("SWD: no images were given.")
        return [normalize_descriptors(np.concatenate(store, axis=0)) for store in per_level]

    def distance(self, real_descriptors, fake_descriptors):
        """SWD x 1e3 per level and their average, as a dict of Python floats.

        Both sets must come from the same number of images (as in the reference).
        """
        if len(real_descriptors) != len(self.resolutions) or len(fake_descriptors) != len(
                self.resolutions):
            raise ValueError(f"SWD: expected {len(self.resolutions)} descriptor levels per set.")
        results = {}
        for res, real, fake in zip(self.resolutions, real_descriptors, fake_descriptors):
            if real.shape != fake.shape:
                raise ValueError(
                    f"SWD: real and fake descriptor sets differ in shape ({real.shape} vs "
                    f"{fake.shape}); measure the same number of real and fake images.")
            repeats = []
            for _ in range(self.dir_repeats):
                directions = self.rng.randn(real.shape[1], self.dirs_per_repeat)
                directions /= np.sqrt(np.sum(np.square(directions), axis=0, keepdims=True))
                repeats.append(sorted_projection_distance(real, fake,
                                                          directions.astype(np.float32)))
            results[f"SWDx1e3_{res}"] = float(np.mean(repeats)) * 1e3
        results["SWDx1e3_avg"] = float(np.mean(list(results.values())))
        return results


def sliced_wasserstein_distance(real_images, fake_images, seed=None, minibatch_size=64, **kwargs):
    """SWD x 1e3 between two equally large image sets (see `SlicedWassersteinDistance`).

    Args:
      real_images, fake_images: uint8 (N, H, W, 3) or float in [-1, 1], same N and size.
      seed: seed of the random patch centres and directions.
      minibatch_size, **kwargs: passed to `SlicedWassersteinDistance`.

    Returns:
      dict {"SWDx1e3_<res>": float per level (finest first), "SWDx1e3_avg": float}.
    """
    real_images = to_uint8_images(real_images, "real_images")
    fake_images = to_uint8_images(fake_images, "fake_images")
    if real_images.shape != fake_images.shape:
        raise ValueError(f"SWD: real and fake image sets must have the same shape, got "
                         f"{real_images.shape} and {fake_images.shape}.")
    swd = SlicedWassersteinDistance(real_images.shape[1], seed=seed,
                                    minibatch_size=minibatch_size, **kwargs)
    return swd.distance(swd.descriptors(real_images), swd.descriptors(fake_images))
