"""Built-in procedural datasets: structured images from a seed, no files needed.

Two kinds, both deterministic per seed (the same seed gives the same images bit for bit on one
install; different seeds give different images) and rendered at any power-of-two resolution
from 4 to 256 (larger works too) by vectorised numpy (thousands of 32x32 images per second):

`shapes` (unconditional or class-conditional; `SHAPE_CLASSES` labels):
    one coloured, shaded shape (circle, square, triangle, ring, cross) at a random position,
    size and rotation, on a low-saturation background with a linear gradient and a woven
    sinusoidal texture. The class is visible two ways: the shape's kind, and its hue, which is
    `CLASS_HUES[class]` +- 0.03 (red, yellow-green, green-cyan, blue, magenta). `classify_shapes`
    recovers the class from the hue alone (100% on the real images), which is the statistic
    class-conditional tests use on generated samples (chance = 1/5).

`shapes2cartoon` (two unpaired domains for U-GAT-IT):
    domain A ("photo") is the `shapes` style above; domain B ("cartoon") renders other scenes of
    the same distribution with a flat pastel background (same hue, saturation 0.3, value 0.92,
    no texture), the shape filled flat with the complementary hue (h + 0.5, s 0.9, v 0.9) and a
    dark outline. The translation A -> B is local and learnable: drop the texture, brighten the
    background, rotate the shape's hue by 180 degrees, draw the outline. Domain statistic:
    mean pixel intensity is about 0.43 in A and 0.68 in B (`MEAN_INTENSITY`), so translated
    images "move toward B" when their mean intensity rises. `paired=True` renders the same
    scenes in both styles (ground truth for tests).

Scene parameters are drawn before rendering, image by image, and do not depend on the
resolution: one seed gives the same scenes at 8, 32 or 128 pixels, and the first k images of a
seed are the same whatever the number of images requested.
"""

import collections
import threading

import numpy as np

SHAPE_CLASSES = ("circle", "square", "triangle", "ring", "cross")
NUM_CLASSES = len(SHAPE_CLASSES)
CLASS_HUES = np.arange(NUM_CLASSES, dtype=np.float64) / NUM_CLASSES
HUE_JITTER = 0.03
MEAN_INTENSITY = {"A": 0.43, "B": 0.68}     # measured over 4096 images at 32x32, seed 0
KINDS = ("shapes", "shapes2cartoon")

_STREAMS = {"shapes": 0, "trainA": 1, "trainB": 2, "testA": 3, "testB": 4}
_OUTLINE = np.array([0.1, 0.1, 0.15], dtype=np.float32)


#----------------------------------------------------------------------------
# Scene parameters (resolution independent).

def _rng(seed, stream):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), stream])))


# (name, low, high) of every scene parameter, drawn uniformly; one row of draws per image.
_PARAMETERS = (
    ("label", 0, NUM_CLASSES), ("cx", -0.35, 0.35), ("cy", -0.35, 0.35), ("size", 0.35, 0.6),
    ("angle", 0, 2 * np.pi), ("hue_jitter", -HUE_JITTER, HUE_JITTER), ("sat", 0.65, 1.0),
    ("val", 0.75, 1.0), ("light", 0, 2 * np.pi), ("bg_hue", 0, 1), ("bg_sat", 0, 0.25),
    ("bg_val", 0.3, 0.6), ("grad_angle", 0, 2 * np.pi), ("grad", 0, 0.15),
    ("tex_angle", 0, np.pi), ("tex_freq", 1.5, 4.0), ("tex_freq2", 2.0, 6.0),
    ("tex_phase", 0, 2 * np.pi), ("tex_amp", 0.04, 0.1))


def _scenes(num_images, seed, stream):
    """Random scene parameters, each an array of shape (num_images,).

    Draws are made row by row (image by image), so the first k scenes of a seed are the same
    whatever num_images is.
    """
    u = _rng(seed, stream).random((num_images, len(_PARAMETERS)))
    scenes = {name: low + (high - low) * u[:, i] for i, (name, low, high) in
              enumerate(_PARAMETERS)}
    scenes["label"] = np.minimum(scenes["label"].astype(np.int64), NUM_CLASSES - 1)
    scenes["hue"] = (CLASS_HUES[scenes["label"]] + scenes.pop("hue_jitter")) % 1.0
    return scenes


#----------------------------------------------------------------------------
# Rendering.

def hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, all in [0, 1]; inputs broadcast; output has a trailing axis 3."""
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float32), np.asarray(s, np.float32),
                                  np.asarray(v, np.float32))
    k = (np.array([5.0, 3.0, 1.0], np.float32) + h[..., None] * 6.0) % 6.0
    return v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4.0 - k), 0, 1)


def _signed_distance(labels, x, y, r):
    """Signed distance (negative inside) to each image's shape; x, y, r broadcast (n, R, R)."""
    d = np.empty(np.broadcast_shapes(x.shape, r.shape), np.float32)
    for k, kind in enumerate(SHAPE_CLASSES):
        i = labels == k
        if not i.any():
            continue
        xi, yi, ri = x[i], y[i], r[i]
        if kind == "circle":
            d[i] = np.hypot(xi, yi) - ri
        elif kind == "square":
            d[i] = np.maximum(np.abs(xi), np.abs(yi)) - 0.8 * ri
        elif kind == "triangle":
            normals = [(np.cos(t), np.sin(t)) for t in np.pi / 2 + 2 * np.pi / 3 * np.arange(3)]
            d[i] = np.max([xi * nx + yi * ny for nx, ny in normals], axis=0) - 0.55 * ri
        elif kind == "ring":
            d[i] = np.abs(np.hypot(xi, yi) - 0.7 * ri) - 0.3 * ri
        else:  # cross: two bars of half-length r and half-width 0.3 r
            ax, ay = np.abs(xi), np.abs(yi)
            d[i] = np.minimum(np.maximum(ax - ri, ay - 0.3 * ri),
                              np.maximum(ax - 0.3 * ri, ay - ri))
    return d


def _render_chunk(p, resolution, style):
    """float32 (n, R, R, 3) in [0, 1] for the scene parameters p (arrays of length n)."""
    c = ((np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 - 1)
    u, v = c[None, None, :], c[None, :, None]                  # pixel centres in [-1, 1]
    col = {k: np.asarray(a, np.float32)[:, None, None] for k, a in p.items()}
    px, py = u - col["cx"], v - col["cy"]
    ca, sa = np.cos(col["angle"]), np.sin(col["angle"])
    x, y = ca * px + sa * py, -sa * px + ca * py                # shape frame, (n, R, R)
    d = _signed_distance(p["label"], x, y, col["size"])
    pixels_per_unit = resolution / 2.0
    cover = np.clip(0.5 - d * pixels_per_unit, 0, 1)[..., None]  # anti-aliased edge
    if style == "photo":
        bg = hsv_to_rgb(col["bg_hue"], col["bg_sat"], col["bg_val"])
        gradient = col["grad"] * (u * np.cos(col["grad_angle"]) + v * np.sin(col["grad_angle"]))
        t = u * np.cos(col["tex_angle"]) + v * np.sin(col["tex_angle"])
        t2 = -u * np.sin(col["tex_angle"]) + v * np.cos(col["tex_angle"])
        texture = col["tex_amp"] * (np.sin(np.pi * col["tex_freq"] * t + col["tex_phase"])
                                    + 0.5 * np.sin(np.pi * col["tex_freq2"] * t2))
        bg = bg + (gradient + texture)[..., None]
        shading = 1.0 + 0.2 * (x * np.cos(col["light"]) + y * np.sin(col["light"])) / col["size"]
        fg = hsv_to_rgb(col["hue"], col["sat"], np.clip(col["val"] * shading, 0, 1))
        image = bg * (1 - cover) + fg * cover
    else:  # cartoon
        bg = hsv_to_rgb(col["bg_hue"], 0.3, 0.92)
        fg = hsv_to_rgb((col["hue"] + 0.5) % 1.0, 0.9, 0.9)
        image = bg * (1 - cover) + fg * cover
        outline = np.clip(0.5 - (np.abs(d) - 0.07) * pixels_per_unit, 0, 1)[..., None]
        image = image * (1 - outline) + _OUTLINE * outline
    return np.clip(image, 0, 1)


def render(scenes, resolution, style="photo"):
    """uint8 (n, R, R, 3) images of the given scene parameters, rendered in chunks."""
    if style not in ("photo", "cartoon"):
        raise ValueError(f"style must be 'photo' or 'cartoon', got {style!r}")
    n = len(scenes["label"])
    out = np.empty((n, resolution, resolution, 3), np.uint8)
    chunk = max(1, 2 ** 20 // (resolution * resolution))
    for start in range(0, n, chunk):
        part = {k: a[start:start + chunk] for k, a in scenes.items()}
        out[start:start + chunk] = np.rint(_render_chunk(part, resolution, style) * 255)
    return out


def _check(num_images, resolution):
    if int(num_images) < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")


#----------------------------------------------------------------------------
# Per-process memo of rendered datasets.

# A training run, its SWD reals, its reals.png and an evaluation in the same process all read
# the same images; rendering 4096 32x32 images costs ~0.5 s of numpy, so the most recent small
# datasets are kept (read-only arrays, so no caller can change what another one gets).
_MEMO_BYTES = 64 * 2 ** 20     # per entry; larger datasets are rendered on every call
_MEMO_ENTRIES = 4
_memo = collections.OrderedDict()
_memo_lock = threading.Lock()


def _memoized(key, num_bytes, make):
    """make() (a tuple of arrays), remembered under `key` when it is at most _MEMO_BYTES."""
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    value = make()
    if num_bytes <= _MEMO_BYTES:
        for array in value:
            array.setflags(write=False)
        with _memo_lock:
            _memo[key] = value
            while len(_memo) > _MEMO_ENTRIES:
                _memo.popitem(last=False)
    return value


#----------------------------------------------------------------------------
# The datasets.

def shapes(num_images, resolution=32, seed=0):
    """The `shapes` dataset.

    Returns:
        images: uint8 (num_images, resolution, resolution, 3), NHWC.
        labels: int64 (num_images,), class indices into SHAPE_CLASSES.
        Both read-only: small datasets are rendered once per process and shared (copy to
        modify).
    """
    _check(num_images, resolution)

    def make():
        scenes = _scenes(num_images, seed, _STREAMS["shapes"])
        return render(scenes, resolution, "photo"), scenes["label"]

    key = ("shapes", int(num_images), int(resolution), int(seed))
    return _memoized(key, int(num_images) * resolution ** 2 * 3, make)


def shapes2cartoon(num_images, resolution=32, seed=0, split="train", paired=False):
    """The `shapes2cartoon` unpaired pair: (A, B), each uint8 (num_images, R, R, 3), read-only
    (shared, as `shapes`).

    Args:
        split: "train" or "test" (independent scenes, as separate folders would be).
        paired: render B from A's scenes (ground-truth translation) instead of its own scenes.
    """
    _check(num_images, resolution)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")

    def make():
        scenes_a = _scenes(num_images, seed, _STREAMS[split + "A"])
        scenes_b = scenes_a if paired else _scenes(num_images, seed, _STREAMS[split + "B"])
        return render(scenes_a, resolution, "photo"), render(scenes_b, resolution, "cartoon")

    key = ("shapes2cartoon", int(num_images), int(resolution), int(seed), split, bool(paired))
    return _memoized(key, 2 * int(num_images) * resolution ** 2 * 3, make)


def classify_shapes(images):
    """Class of `shapes` images from the hue of their saturated pixels (no training needed).

    Pixels with HSV saturation > 0.45 and value > 0.45 are the shape (backgrounds have
    saturation <= 0.33 there); their circular-mean hue is assigned to the nearest CLASS_HUES.

    Args:
        images: uint8 [0, 255] or float [-1, 1] array (N, H, W, 3).
    Returns:
        int64 (N,) predicted classes, -1 where no pixel is saturated (no visible shape).
    """
    x = np.asarray(images)
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else (x.astype(np.float32) + 1) / 2
    mx, mn = x.max(-1), x.min(-1)
    chroma = mx - mn
    sat = np.where(mx > 0, chroma / np.maximum(mx, 1e-6), 0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(mx == r, ((g - b) / safe) % 6, np.where(mx == g, (b - r) / safe + 2,
                                                           (r - g) / safe + 4)) / 6.0
    mask = ((sat > 0.45) & (mx > 0.45)).astype(np.float32)
    angle = 2 * np.pi * hue
    mean_cos = (np.cos(angle) * mask).sum((1, 2))
    mean_sin = (np.sin(angle) * mask).sum((1, 2))
    mean_hue = (np.arctan2(mean_sin, mean_cos) / (2 * np.pi)) % 1.0
    distance = np.abs((mean_hue[:, None] - CLASS_HUES[None, :] + 0.5) % 1.0 - 0.5)
    predicted = distance.argmin(1)
    return np.where(mask.sum((1, 2)) > 0, predicted, -1).astype(np.int64)
