"""Reading user image files: discovery, validation, and the documented conversions.

Every image that enters a dataset goes through `load_image`, so every path (the TFRecord
preparation CLI and the U-GAT-IT folder loader) applies the same rules:

| input                         | result                                                     |
|-------------------------------|------------------------------------------------------------|
| EXIF orientation tag (photos) | rotated/flipped upright first (`ImageOps.exif_transpose`)  |
| grayscale (L, 1-bit)          | RGB by repeating the gray channel                          |
| palette (P, PA)               | RGB(A) through the palette                                 |
| alpha (RGBA, LA, PA)          | composited over white: rgb*a + 255*(1-a), rint             |
| 16-bit (PNG I;16, 16-bit RGB) | 8-bit high byte, v >> 8 (Pillow's own rule for 16-bit RGB) |
| CMYK / YCbCr / LAB JPEG, TIFF | RGB by Pillow's converter (Adobe-inverted CMYK handled)    |
| 32-bit float images           | rejected (convert them to 8 or 16 bit first)               |
| `channels=1`                  | RGB to luma by Pillow (ITU-R 601-2), as NVlabs' gray data  |

Errors (`BadImageError`, one line naming the file): zero-byte file, not an image (unknown
format, e.g. a text file named .png), truncated or corrupt data. A JPEG whose entropy-coded data
is damaged but whose structure is intact decodes without error in libjpeg (it conceals the
damage), so it cannot be detected here.
"""

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from datasets.errors import BadImageError, DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm")
_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


#----------------------------------------------------------------------------

def list_image_files(directory):
    """Image files under `directory`, walked recursively, sorted by relative path.

    Hidden files and folders (leading '.') are ignored, as are files without an image
    extension (case-insensitive, `IMAGE_EXTENSIONS`).

    Returns:
        (paths, num_ignored): absolute paths and the number of non-image files skipped.
    Raises:
        DatasetError: the folder is missing or holds no image files.
    """
    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise DatasetError(f"{directory}: no such folder; pass the folder that holds the images")
    found, ignored = [], 0
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, name), directory))
            else:
                ignored += 1
    if not found:
        raise DatasetError(
            f"{directory}: no image files found (looked recursively for "
            f"{', '.join(IMAGE_EXTENSIONS)}); pass the folder that holds the images")
    found.sort(key=lambda rel: rel.replace(os.sep, "/"))
    return [os.path.join(directory, rel) for rel in found], ignored


def _open(path):
    """Opens `path` with Pillow (header only) or raises BadImageError with the cause."""
    try:
        size = os.path.getsize(path)
    except OSError as error:
        raise BadImageError(path, f"cannot read file ({error.strerror})") from None
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes)", "delete it or pass --skip-bad")
    with open(path, "rb") as f:
        data = f.read()
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImageError(path, "not an image (unknown format despite its extension)",
                            "delete it or pass --skip-bad") from None
    except Image.DecompressionBombError as error:
        raise _too_large(path, error) from None
    except Exception as error:  # noqa: BLE001 -- any decoder failure is a bad file, one line
        raise BadImageError(path, f"truncated or corrupt image header ({error})",
                            "re-export the image or pass --skip-bad") from None


def _too_large(path, error):
    return BadImageError(path, f"too many pixels for Pillow's decompression-bomb limit "
                         f"({error})", "downscale the image or pass --skip-bad")


def probe_image(path):
    """Upright (width, height) of an image from its header alone (fast, no decode)."""
    image = _open(path)
    width, height = image.size
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a malformed EXIF block is ignored here, as exif_transpose ignores it
        orientation = 1
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return width, height


def _to_rgb_or_l(image, path):
    """Applies the conversion table of the module docstring; returns an 'RGB' or 'L' image."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.uint32)
        if mode.startswith("I;16") or values.max() > 255:
            values = values >> 8
        return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    if mode == "F":
        raise BadImageError(path, "32-bit float image is not supported",
                            "convert it to 8-bit or 16-bit first, or pass --skip-bad")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("La", "RGBa"):
        image = image.convert(mode.upper())  # un-premultiply
    elif mode == "1":
        image = image.convert("L")
    if image.mode in ("RGBA", "LA"):
        pixels = np.asarray(image).astype(np.float32)
        alpha = pixels[..., -1:] / 255.0
        composed = pixels[..., :-1] * alpha + 255.0 * (1.0 - alpha)
        composed = np.rint(composed).clip(0, 255).astype(np.uint8)
        return Image.fromarray(composed[..., 0] if image.mode == "LA" else composed,
                               "L" if image.mode == "LA" else "RGB")
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX
    return image


def load_pil_image(path, channels=3):
    """Decodes `path` fully and returns an upright PIL image in mode 'RGB' (channels=3) or 'L'.

    Raises:
        BadImageError: zero-byte, unknown format, truncated or corrupt.
    """
    image = _open(path)
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise _too_large(path, error) from None
    except Exception as error:  # noqa: BLE001 -- Pillow's plugins raise many kinds
        raise BadImageError(path, f"truncated or corrupt image data ({error})",
                            "re-export the image or pass --skip-bad") from None
    image = _to_rgb_or_l(image, path)
    if channels == 3 and image.mode == "L":
        image = image.convert("RGB")
    elif channels == 1 and image.mode == "RGB":
        image = image.convert("L")
    return image


def load_image(path, channels=3):
    """`load_pil_image` as a uint8 array of shape (H, W, channels)."""
    array = np.asarray(load_pil_image(path, channels))
    return array[..., None] if array.ndim == 2 else array


#----------------------------------------------------------------------------

def fit_image(image, resolution, crop=None, allow_upscale=False, path=""):
    """Makes a PIL image exactly resolution x resolution.

    Args:
        image: PIL image ('RGB' or 'L').
        resolution: target side in pixels.
        crop: None (the image must be square), "center" (largest centred square, as NVlabs'
            dataset_tool --transform=center-crop) or "stretch" (resize without keeping aspect).
        allow_upscale: permit images smaller than `resolution` (upscaled with Lanczos); by
            default they are an error, since upscaled images would teach the GAN blur.
        path: the file name, for error messages.
    Returns:
        uint8 array (resolution, resolution, channels).
    Raises:
        BadImageError: non-square without `crop`, or smaller than `resolution`.
    """
    width, height = image.size
    if crop is None and width != height:
        raise BadImageError(path, f"image is {width}x{height}, not square",
                            "pass --crop=center or --crop=stretch, or --skip-bad")
    if crop == "center" and width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        width = height = side
    if min(width, height) < resolution and not allow_upscale:
        raise BadImageError(path, f"image is {width}x{height}, smaller than the resolution "
                            f"{resolution}", "pass a smaller --resolution, --allow-upscale "
                            "or --skip-bad")
    if (width, height) != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array
