"""Multi-scale structural similarity (MS-SSIM) of generated image pairs, as ProGAN measured it.

ProGAN's `metrics/ms_ssim.py` (Wang et al. 2003, after the TensorFlow compression models code),
per `../shared/reference/stylegan.md`:

- SSIM map with an 11x11 Gaussian window, sigma 1.5, "valid" filtering (the window shrinks to the
  image size, sigma scaled with it), K1 = 0.01, K2 = 0.03, dynamic range 255:
      ssim = ((2 mu1 mu2 + C1)(2 s12 + C2)) / ((mu1^2 + mu2^2 + C1)(s11 + s22 + C2))
      cs   = (2 s12 + C2) / (s11 + s22 + C2)
  each averaged over the map and the colour channels, per image pair.
- 5 scales, 2x2 box downsampling between them; cs and ssim clipped at 0;
  ms_ssim = prod_{s<5} cs_s^w_s * ssim_5^w_5, weights [0.0448, 0.2856, 0.3001, 0.2363, 0.1333].
- Pairs: images[0::2] against images[1::2]; the score is the mean over all pairs.

Computed in float64 TensorFlow (the reference used float64 FFT convolutions; float32 loses
digits in s11 = E[x^2] - mu^2 at a dynamic range of 255).
"""

import numpy as np
import tensorflow as tf

from metrics.images import to_uint8_images

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def gaussian_window_1d(size, sigma):
    """Normalised 1-D Gaussian of `size` taps centred between taps for even sizes (fspecial).

    The reference's 2-D window exp(-(x^2 + y^2) / 2 sigma^2) / sum is the outer product of this
    window with itself, so filtering is done separably.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-np.square(x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _blur_valid(x, window):
    """Separable 'valid' filtering of float64 (N, H, W, C) with the 1-D window on H and W."""
    channels = x.shape[-1]
    kernel_h = tf.constant(np.tile(window[:, None, None, None], (1, 1, channels, 1)), tf.float64)
    kernel_w = tf.constant(np.tile(window[None, :, None, None], (1, 1, channels, 1)), tf.float64)
    x = tf.nn.depthwise_conv2d(x, kernel_h, [1, 1, 1, 1], "VALID")
    return tf.nn.depthwise_conv2d(x, kernel_w, [1, 1, 1, 1], "VALID")


def _ssim_and_cs(img1, img2, max_val, filter_size, filter_sigma, k1, k2):
    """Per-pair mean SSIM and contrast-structure terms, float64 (N,) each."""
    height, width = img1.shape[1], img1.shape[2]
    size = min(filter_size, height, width)
    sigma = size * filter_sigma / filter_size
    window = gaussian_window_1d(size, sigma)
    mu1, mu2 = _blur_valid(img1, window), _blur_valid(img2, window)
    sigma11 = _blur_valid(img1 * img1, window) - mu1 * mu1
    sigma22 = _blur_valid(img2 * img2, window) - mu2 * mu2
    sigma12 = _blur_valid(img1 * img2, window) - mu1 * mu2
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma11 + sigma22 + c2
    ssim = tf.reduce_mean(((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2),
                          axis=[1, 2, 3])
    cs = tf.reduce_mean(v1 / v2, axis=[1, 2, 3])
    return ssim, cs


def _box_downsample(x):
    return tf.nn.avg_pool2d(x, 2, 2, "VALID")


# Traced per image size (the window and scale count depend on it).
@tf.function
def _ms_ssim_pairs(img1, img2, weights, max_val, filter_size, filter_sigma, k1, k2):
    x1, x2 = tf.cast(img1, tf.float64), tf.cast(img2, tf.float64)
    ssims, css = [], []
    for level in range(len(weights)):
        if level:
            x1, x2 = _box_downsample(x1), _box_downsample(x2)
        ssim, cs = _ssim_and_cs(x1, x2, max_val, filter_size, filter_sigma, k1, k2)
        ssims.append(tf.maximum(ssim, 0.0))  # clipped at 0, as the reference (else NaN powers)
        css.append(tf.maximum(cs, 0.0))
    w = tf.constant(weights, tf.float64)
    result = tf.pow(ssims[-1], w[-1])
    for level in range(len(weights) - 1):
        result *= tf.pow(css[level], w[level])
    return result


def ms_ssim_pairs(images1, images2, weights=MS_SSIM_WEIGHTS, max_val=255.0, filter_size=11,
                  filter_sigma=1.5, k1=0.01, k2=0.03, minibatch_size=256):
    """MS-SSIM of every pair (images1[i], images2[i]).

    Args:
      images1, images2: uint8 (N, H, W, 3) or float in [-1, 1], same shape; H and W divisible by
        2^(len(weights) - 1) (16 for the 5 reference scales).
      weights: per-scale exponents (reference: MS_SSIM_WEIGHTS).
      max_val, filter_size, filter_sigma, k1, k2: the reference constants.
      minibatch_size: pairs per TensorFlow call.

    Returns:
      float64 numpy (N,), in [0, 1]; 1 for identical images. Symmetric in its arguments.
    """
    images1 = to_uint8_images(images1, "images1")
    images2 = to_uint8_images(images2, "images2")
    if images1.shape != images2.shape:
        raise ValueError(f"MS-SSIM: image sets must have the same shape, got {images1.shape} and "
                         f"{images2.shape}.")
    factor = 2 ** (len(weights) - 1)
    if images1.shape[1] % factor or images1.shape[2] % factor:
        raise ValueError(
            f"MS-SSIM with {len(weights)} scales needs H and W divisible by {factor}, got "
            f"{images1.shape[1]}x{images1.shape[2]}.")
    if filter_size < 1:
        raise ValueError(f"MS-SSIM: filter_size must be >= 1, got {filter_size}.")
    weights = tuple(float(w) for w in weights)
    results = [
        _ms_ssim_pairs(tf.constant(images1[i:i + minibatch_size]),
                       tf.constant(images2[i:i + minibatch_size]), weights, float(max_val),
                       int(filter_size), float(filter_sigma), float(k1), float(k2)).numpy()
        for i in range(0, images1.shape[0], minibatch_size)]
    return np.concatenate(results) if results else np.zeros([0])


def ms_ssim(images, **kwargs):
    """Mean MS-SSIM over the pairs (images[0::2][i], images[1::2][i]), as ProGAN.

    Lower means more diverse samples (the ProGAN paper's use); for a dataset it gives the
    diversity to compare against.

    Args:
      images: uint8 (N, H, W, 3) or float in [-1, 1], N even and >= 2.
      **kwargs: see `ms_ssim_pairs`.

    Returns:
      Python float.
    """
    images = to_uint8_images(images)
    if images.shape[0] < 2 or images.shape[0] % 2:
        raise ValueError(f"MS-SSIM pairs images[0::2] with images[1::2]: the number of images "
                         f"must be even and >= 2, got {images.shape[0]}.")
    return float(np.mean(ms_ssim_pairs(images[0::2], images[1::2], **kwargs)))
