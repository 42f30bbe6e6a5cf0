"""SWD against a numpy transcription of ProGAN's metrics/sliced_wasserstein.py (NCHW, as there)."""

import numpy as np
import pytest
import tensorflow as tf

from metrics.sliced_wasserstein import (SlicedWassersteinDistance, laplacian_pyramid,
                                        sliced_wasserstein_distance)

GAUSS = np.float32([[1, 4, 6, 4, 1], [4, 16, 24, 16, 4], [6, 24, 36, 24, 6],
                    [4, 16, 24, 16, 4], [1, 4, 6, 4, 1]]) / 256.0


# ---- reference transcription (scipy.ndimage.convolve(mode="mirror") written with np.pad) ----

def ref_convolve_mirror(x, kernel):
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    out = np.zeros_like(x)
    for a in range(5):
        for b in range(5):
            out += kernel[a, b] * padded[:, :, a:a + x.shape[2], b:b + x.shape[3]]
    return out


def ref_pyr_down(x):
    return ref_convolve_mirror(x, GAUSS)[:, :, ::2, ::2]


def ref_pyr_up(x):
    res = np.zeros((x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] * 2), x.dtype)
    res[:, :, ::2, ::2] = x
    return ref_convolve_mirror(res, GAUSS * 4.0)


def ref_laplacian_pyramid(minibatch, num_levels):
    pyramid = [np.float32(minibatch)]
    for _ in range(1, num_levels):
        pyramid.append(ref_pyr_down(pyramid[-1]))
        pyramid[-2] -= ref_pyr_up(pyramid[-1])
    return pyramid


def ref_descriptors(minibatch, rng, nhood_size=7, nhoods_per_image=128):
    S = minibatch.shape
    N = nhoods_per_image * S[0]
    H = nhood_size // 2
    nhood, chan, x, y = np.ogrid[0:N, 0:3, -H:H + 1, -H:H + 1]
    img = nhood // nhoods_per_image
    x = x + rng.randint(H, S[3] - H, size=(N, 1, 1, 1))
    y = y + rng.randint(H, S[2] - H, size=(N, 1, 1, 1))
    idx = ((img * S[1] + chan) * S[2] + y) * S[3] + x
    return minibatch.flat[idx]


def ref_finalize(desc):
    desc = np.concatenate(desc, axis=0)
    desc -= np.mean(desc, axis=(0, 2, 3), keepdims=True)
    desc /= np.std(desc, axis=(0, 2, 3), keepdims=True)
    return desc.reshape(desc.shape[0], -1)


def ref_sliced_wasserstein(A, B, rng, dir_repeats=4, dirs_per_repeat=128):
    results = []
    for _ in range(dir_repeats):
        dirs = rng.randn(A.shape[1], dirs_per_repeat)
        dirs /= np.sqrt(np.sum(np.square(dirs), axis=0, keepdims=True))
        dirs = dirs.astype(np.float32)
        projA = np.sort(np.matmul(A, dirs), axis=0)
        projB = np.sort(np.matmul(B, dirs), axis=0)
        results.append(np.mean(np.abs(projA - projB)))
    return np.mean(results)


def ref_swd(reals_nhwc, fakes_nhwc, seed, minibatch_size):
    """The reference's feed/end sequence for reals then fakes, one RandomState for everything."""
    rng = np.random.RandomState(seed)
    res, resolutions = reals_nhwc.shape[1], []
    while res >= 16:
        resolutions.append(res)
        res //= 2
    sets = []
    for images in (reals_nhwc, fakes_nhwc):
        desc = [[] for _ in resolutions]
        for begin in range(0, len(images), minibatch_size):
            minibatch = images[begin:begin + minibatch_size].transpose(0, 3, 1, 2)
            for lod, level in enumerate(ref_laplacian_pyramid(minibatch, len(resolutions))):
                desc[lod].append(ref_descriptors(level, rng))
        sets.append([ref_finalize(d) for d in desc])
    dist = [ref_sliced_wasserstein(a, b, rng) * 1e3 for a, b in zip(*sets)]
    return dist + [np.mean(dist)]


# ---- test data ----

def blob_images(n, size, seed):
    """Smooth coloured blobs and stripes: images with structure at several scales."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.zeros((n, size, size, 3))
    for _ in range(4):
        cy, cx = rng.rand(2, n, 1, 1)
        r = 0.05 + 0.2 * rng.rand(n, 1, 1)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))[..., None] * rng.rand(
            n, 1, 1, 3)
    img += 0.2 * np.sin(xx * rng.rand(n, 1, 1) * 30)[..., None]
    img -= img.min()
    return np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)


def test_laplacian_pyramid_equals_reference():
    images = np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    ours = laplacian_pyramid(images.astype(np.float32), 3)
    ref = ref_laplacian_pyramid(images.transpose(0, 3, 1, 2), 3)
    ours = [level.numpy().transpose(0, 3, 1, 2) for level in ours]
    # Weights k/256 on 8-bit pixels: every product and partial sum of G1, G2 and pyr_up(G1) fits
    # in float32's 24 bits, so levels 0 and 2 are exact in any summation order.
    np.testing.assert_array_equal(ours[0], ref[0])
    np.testing.assert_array_equal(ours[2], ref[2])
    # Level 1 = G1 - pyr_up(G2) (2^-22 grid, < 256): <= 9 products + 8 sums + 1 difference, each
    # rounding <= 2^-17 (half ulp below 256), on both sides: 2 * 18 * 2^-17 ~ 2.7e-4.
    np.testing.assert_allclose(ours[1], ref[1], rtol=0, atol=18 * 2.0 ** -16)


@pytest.mark.parametrize("size,minibatch_size", [(32, 3), (16, 8)])
def test_swd_equals_reference_transcription(size, minibatch_size):
    reals = blob_images(8, size, 1)
    fakes = blob_images(8, size, 2)
    ours = sliced_wasserstein_distance(reals, fakes, seed=123, minibatch_size=minibatch_size)
    expected = ref_swd(reals, fakes, seed=123, minibatch_size=minibatch_size)
    assert list(ours) == [f"SWDx1e3_{r}" for r in ([32, 16] if size == 32 else [16])] + [
        "SWDx1e3_avg"]
    np.testing.assert_allclose(list(ours.values()), expected, rtol=1e-4)


def test_swd_accepts_float_images_and_tensors_like_their_uint8_quantisation():
    # During training: generated float tensors in [-1, 1] against real batches, no files.
    reals = blob_images(4, 16, 3)
    floats = tf.constant(reals.astype(np.float32) / 127.5 - 1.0)
    assert sliced_wasserstein_distance(reals, blob_images(4, 16, 4), seed=5) == (
        sliced_wasserstein_distance(floats, tf.constant(blob_images(4, 16, 4)), seed=5))


def test_swd_zero_for_identical_descriptor_sets_and_seedable():
    images = blob_images(8, 32, 5)
    a = SlicedWassersteinDistance(32, seed=7)
    b = SlicedWassersteinDistance(32, seed=7)
    desc_a, desc_b = a.descriptors(images), b.descriptors(images)
    for x, y in zip(desc_a, desc_b):
        np.testing.assert_array_equal(x, y)  # same seed, same images: same patches
    result = a.distance(desc_a, desc_b)
    assert all(abs(v) < 1e-9 for v in result.values()), result
    # Same seed, same numbers; another seed, other patches.
    assert sliced_wasserstein_distance(images, blob_images(8, 32, 6), seed=1) == (
        sliced_wasserstein_distance(images, blob_images(8, 32, 6), seed=1))
    assert sliced_wasserstein_distance(images, blob_images(8, 32, 6), seed=1) != (
        sliced_wasserstein_distance(images, blob_images(8, 32, 6), seed=2))


def test_swd_grows_monotonically_with_a_growing_shift_of_the_fake_set():
    reals = blob_images(32, 32, 8)
    noise = np.random.RandomState(9).randn(*reals.shape)
    real_desc = SlicedWassersteinDistance(32, seed=0).descriptors(reals)
    values = []
    for strength in [0.0, 2.0, 4.0, 8.0, 16.0]:
        fakes = np.clip(reals + strength * noise, 0, 255).astype(np.uint8)
        # Common random numbers: the fakes' patches sit where the reals' did (same seed) and every
        # step projects on the same directions, so only the shift changes between steps.
        fake_desc = SlicedWassersteinDistance(32, seed=0).descriptors(fakes)
        values.append(SlicedWassersteinDistance(32, seed=1).distance(
            real_desc, fake_desc)["SWDx1e3_avg"])
    assert values[0] < 1e-9  # zero shift: fake descriptors equal the real ones exactly
    assert all(b > a for a, b in zip(values, values[1:])), values
    # Independent patch draws on an identical set: a noise floor far below a real difference.
    floor = sliced_wasserstein_distance(reals, reals, seed=3)["SWDx1e3_avg"]
    different = sliced_wasserstein_distance(
        reals, np.clip(reals + 8.0 * noise, 0, 255).astype(np.uint8), seed=3)["SWDx1e3_avg"]
    assert floor < 0.5 * different


def test_swd_bad_inputs():
    images = blob_images(4, 32, 0)
    with pytest.raises(ValueError, match="at least 16x16"):
        sliced_wasserstein_distance(images[:, :8, :8], images[:, :8, :8])
    with pytest.raises(ValueError, match="same shape"):
        sliced_wasserstein_distance(images, images[:2])
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        sliced_wasserstein_distance(images[..., :1], images[..., :1])
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\]"):
        sliced_wasserstein_distance(images.astype(np.float32), images.astype(np.float32))
    swd = SlicedWassersteinDistance(32, seed=0)
    with pytest.raises(ValueError, match="set up for 32x32"):
        swd.descriptors(blob_images(2, 16, 0))
    with pytest.raises(ValueError, match="nhood_size must be odd"):
        SlicedWassersteinDistance(32, nhood_size=6)
