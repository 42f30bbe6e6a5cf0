"""MS-SSIM against a numpy transcription of ProGAN's metrics/ms_ssim.py (NHWC, as there)."""

import numpy as np
import pytest

from metrics.ms_ssim import ms_ssim, ms_ssim_pairs

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


# ---- reference transcription (scipy.signal.fftconvolve(mode="valid") written as a window sum) ----

def ref_fspecial_gauss(size, sigma):
    radius = size // 2
    offset = 0.0
    start, stop = -radius, radius + 1
    if size % 2 == 0:
        offset = 0.5
        stop -= 1
    x, y = np.mgrid[offset + start:stop, offset + start:stop]
    g = np.exp(-((x ** 2 + y ** 2) / (2.0 * sigma ** 2)))
    return g / g.sum()


def ref_valid_filter(img, window):
    patches = np.lib.stride_tricks.sliding_window_view(img, window.shape, axis=(1, 2))
    return np.einsum("nhwcij,ij->nhwc", patches, window[::-1, ::-1])  # convolution


def ref_ssim_for_multiscale(img1, img2, max_val=255, filter_size=11, filter_sigma=1.5, k1=0.01,
                            k2=0.03):
    img1, img2 = img1.astype(np.float64), img2.astype(np.float64)
    _, height, width, _ = img1.shape
    size = min(filter_size, height, width)
    sigma = size * filter_sigma / filter_size
    window = ref_fspecial_gauss(size, sigma)
    mu1, mu2 = ref_valid_filter(img1, window), ref_valid_filter(img2, window)
    sigma11 = ref_valid_filter(img1 * img1, window) - mu1 * mu1
    sigma22 = ref_valid_filter(img2 * img2, window) - mu2 * mu2
    sigma12 = ref_valid_filter(img1 * img2, window) - mu1 * mu2
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma11 + sigma22 + c2
    ssim = np.mean((((2.0 * mu1 * mu2 + c1) * v1) / ((mu1 * mu1 + mu2 * mu2 + c1) * v2)),
                   axis=(1, 2, 3))
    return ssim, np.mean(v1 / v2, axis=(1, 2, 3))


def ref_hox_downsample(img):
    return (img[:, 0::2, 0::2, :] + img[:, 1::2, 0::2, :] + img[:, 0::2, 1::2, :]
            + img[:, 1::2, 1::2, :]) * 0.25


def ref_msssim(img1, img2):
    im1, im2 = img1.astype(np.float32), img2.astype(np.float32)
    mssim, mcs = [], []
    for level in range(WEIGHTS.size):
        ssim, cs = ref_ssim_for_multiscale(im1, im2)
        mssim.append(ssim)
        mcs.append(cs)
        if level < WEIGHTS.size - 1:  # the reference also downsamples once more, unused
            im1, im2 = ref_hox_downsample(im1), ref_hox_downsample(im2)
    mssim = np.clip(np.asarray(mssim), 0.0, np.inf)
    mcs = np.clip(np.asarray(mcs), 0.0, np.inf)
    return np.mean(np.prod(mcs[:-1, :] ** WEIGHTS[:-1, np.newaxis], axis=0)
                   * (mssim[-1, :] ** WEIGHTS[-1]))


def smooth_images(n, size, seed):
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = rng.rand(n, 1, 1, 3) * 6.0
    freq = 2.0 + 6.0 * rng.rand(n, 1, 1, 3)
    img = 127.5 + 100.0 * np.sin(freq * xx[None, :, :, None] + phase) * np.cos(
        freq * yy[None, :, :, None] - phase)
    img += rng.randn(n, size, size, 3) * 10.0
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [16, 32])
def test_ms_ssim_equals_reference_transcription(size):
    # 16x16 reaches a 1x1 last scale (window shrunk to 1), 32x32 an even-sized window (2x2).
    images = smooth_images(8, size, 0)
    expected = ref_msssim(images[0::2], images[1::2])
    np.testing.assert_allclose(ms_ssim(images), expected, rtol=1e-6)
    per_pair = ms_ssim_pairs(images[0::2], images[1::2])
    assert per_pair.shape == (4,)
    np.testing.assert_allclose(per_pair[1], ref_msssim(images[2:3], images[3:4]), rtol=1e-6)


def test_ms_ssim_identical_pairs_noisy_pairs_and_symmetry():
    images = smooth_images(6, 32, 1)
    pairs = np.repeat(images, 2, axis=0)  # images[0::2] == images[1::2]
    assert ms_ssim(pairs) == pytest.approx(1.0, abs=1e-12)  # num == den bit for bit: exactly 1
    noisy = np.clip(images + np.random.RandomState(2).randn(*images.shape) * 25.0,
                    0, 255).astype(np.uint8)
    mixed = np.stack([images, noisy], axis=1).reshape(-1, 32, 32, 3)
    score = ms_ssim(mixed)
    assert 0.0 < score < 0.99
    noisier = np.clip(images + np.random.RandomState(2).randn(*images.shape) * 60.0,
                      0, 255).astype(np.uint8)
    assert ms_ssim(np.stack([images, noisier], axis=1).reshape(-1, 32, 32, 3)) < score
    # Swapping the images commutes float64 + and *, which round identically: equal to ~eps64.
    np.testing.assert_allclose(ms_ssim_pairs(images, noisy), ms_ssim_pairs(noisy, images),
                               rtol=1e-12)


def test_ms_ssim_float_input_and_bad_inputs():
    images = smooth_images(4, 16, 3)
    assert ms_ssim(images.astype(np.float32) / 127.5 - 1.0) == pytest.approx(ms_ssim(images))
    with pytest.raises(ValueError, match="even"):
        ms_ssim(images[:3])
    with pytest.raises(ValueError, match="divisible by 16"):
        ms_ssim(smooth_images(4, 8, 0))
    with pytest.raises(ValueError, match="same shape"):
        ms_ssim_pairs(images[:2], images[:1])
