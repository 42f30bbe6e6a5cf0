"""The one image convention of every metric: uint8 NHWC RGB in [0, 255].

Metrics accept either uint8 NHWC images or float NHWC images in [-1, 1] (what the generators
output during training). Floats are quantised exactly as the exported generator does
(`images = saturate_cast(rint((x + 1) * 127.5))`), which is also what the official code measured:
ProGAN and StyleGAN convert generator output to uint8 before every metric.
"""

import numpy as np


def to_uint8_images(images, name="images"):
    """Returns `images` as a uint8 numpy array (N, H, W, 3).

    Args:
      images: uint8 (N, H, W, 3) in [0, 255], or float (N, H, W, 3) in [-1, 1] (numpy array or
        tensor). Floats are mapped by rint((x + 1) * 127.5) and clipped to [0, 255]; values a
        little outside [-1, 1] (generator overshoot) are clipped, but floats beyond [-2, 2] are
        refused because they are almost certainly [0, 255] data passed as float.
      name: argument name for error messages.

    Raises:
      ValueError: wrong rank, channel count, dtype or value range.
    """
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(
            f"{name}: expected NHWC RGB images of shape (N, H, W, 3), got shape {array.shape}. "
            "Convert grayscale to RGB (np.repeat(x, 3, axis=-1)) and channels-first to NHWC first.")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(
            f"{name}: expected uint8 in [0, 255] or float in [-1, 1], got dtype {array.dtype}.")
    if array.size:
        low, high = float(np.min(array)), float(np.max(array))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{name}: images contain NaN or infinite values.")
        if low < -2.0 or high > 2.0:
            raise ValueError(
                f"{name}: float images must be in [-1, 1], got values in [{low:.4g}, {high:.4g}]. "
                "Pass [0, 255] data as uint8 instead.")
    return np.clip(np.rint((array.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)

