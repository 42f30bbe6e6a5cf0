"""What an FQ dictionary is doing: usage statistics and the FQ-GAN paper's Figure 1 view.

Works on the `FeatureQuantization` API only (`lookup(h)["indices"]`, `embeddings`,
`num_embeddings`), so it serves any discriminator: pass the FQ layers and, per layer, either the
lookups a discriminator returned with `return_fq=True`, the feature maps that enter the layer, or
integer index maps.

- Usage per layer: histogram of item counts, perplexity exp(-sum p log(p + 1e-10)) (the official
  FQ formula, `fq_keras.codebook.perplexity_from_counts`), dead items (never picked) and their
  fraction, accumulated over any number of batches.
- Figure 1 view: for a batch of real and of generated images, the per-position index map of an FQ
  layer, each item coloured by its place in a 1-D ordering of the dictionary (the first principal
  component of the items), so that similar items get similar colours. Saved as PNG.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
from PIL import Image

from fq_keras import codebook as fq_codebook
from metrics.images import to_uint8_images


def _indices_of(source, fq_layer=None):
    """int numpy indices from a lookup dict, an integer index array, or features + layer."""
    if isinstance(source, dict):
        if "indices" not in source:
            raise ValueError("codebook: a lookup dict must contain 'indices' (the result of "
                             "FeatureQuantization.lookup).")
        return np.asarray(source["indices"])
    array = tf.convert_to_tensor(source)
    if array.dtype.is_integer:
        return array.numpy()
    if fq_layer is None:
        raise ValueError("codebook: feature maps need their FeatureQuantization layer to be "
                         "looked up; pass the layer or the lookup results instead.")
    return fq_layer.lookup(array)["indices"].numpy()


def codebook_usage(indices, num_embeddings):
    """Usage statistics of one dictionary from the item index of every feature vector.

    Args:
      indices: integer array of any shape, values in [0, num_embeddings).
      num_embeddings: K.

    Returns:
      dict: counts (K,) int64 histogram, num_vectors, perplexity (float, K for uniform use, 1 for
      a single item), dead_items (int, items never picked), dead_fraction (float).
    """
    flat = np.asarray(indices).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= num_embeddings):
        raise ValueError(f"codebook_usage: indices must be in [0, {num_embeddings}), got values "
                         f"in [{flat.min()}, {flat.max()}].")
    counts = tf.cast(fq_codebook.code_counts(tf.constant(flat, tf.int32), num_embeddings),
                     tf.int64).numpy()
    return _usage_from_counts(counts)


def _usage_from_counts(counts):
    counts_f = tf.constant(counts, tf.float64)
    return {
        "counts": counts,
        "num_vectors": int(counts.sum()),
        "perplexity": float(fq_codebook.perplexity_from_counts(counts_f)),
        "dead_items": int(np.sum(counts == 0)),
        "dead_fraction": float(fq_codebook.unused_fraction_from_counts(counts_f)),
    }


class CodebookStatistics:
    """Accumulates dictionary usage of several FQ layers over many batches.

    Args:
      fq_layers: list of FeatureQuantization layers (named by `layer.name`) or dict name -> layer.

    Example:
      >>> stats = CodebookStatistics(discriminator.fq_layers)
      >>> for images in batches:
      ...     _, lookups = discriminator(images, return_fq=True)
      ...     stats.update(lookups)            # or feature maps, or index maps, one per layer
      >>> stats.result()["fq_16"]["perplexity"]
    """

    def __init__(self, fq_layers):
        if isinstance(fq_layers, dict):
            self.layers = dict(fq_layers)
        else:
            self.layers = {layer.name: layer for layer in fq_layers}
        if not self.layers:
            raise ValueError("CodebookStatistics: no FQ layers given.")
        self.counts = {name: np.zeros(layer.num_embeddings, np.int64)
                       for name, layer in self.layers.items()}

    def update(self, inputs):
        """Adds one batch: a list (layer order) or dict (by name) of lookups/features/indices."""
        if not isinstance(inputs, dict):
            inputs = list(inputs)
            if len(inputs) != len(self.layers):
                raise ValueError(f"CodebookStatistics.update: got {len(inputs)} inputs for "
                                 f"{len(self.layers)} FQ layers.")
            inputs = dict(zip(self.layers, inputs))
        unknown = set(inputs) - set(self.layers)
        if unknown:
            raise ValueError(f"CodebookStatistics.update: unknown FQ layers {sorted(unknown)}; "
                             f"known: {sorted(self.layers)}.")
        for name, source in inputs.items():
            layer = self.layers[name]
            self.counts[name] += codebook_usage(_indices_of(source, layer),
                                                layer.num_embeddings)["counts"]

    def result(self):
        """dict name -> `codebook_usage` dict over everything added so far."""
        return {name: _usage_from_counts(counts.copy()) for name, counts in self.counts.items()}


def dictionary_order(embeddings):
    """Rank of every dictionary item along the first principal component of the items.

    Args:
      embeddings: (K, C) dictionary.

    Returns:
      int64 (K,): rank[k] in [0, K), items close in feature space get close ranks. The component's
      sign is fixed (largest-magnitude loading positive) so the ordering is deterministic.
    """
    items = np.asarray(embeddings, np.float64)
    centered = items - items.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    component = vt[0] * (np.sign(vt[0][np.argmax(np.abs(vt[0]))]) or 1.0)
    order = np.argsort(centered @ component, kind="stable")
    rank = np.empty(items.shape[0], np.int64)
    rank[order] = np.arange(items.shape[0])
    return rank


def rank_palette(num_colors):
    """uint8 (num_colors, 3): a hue ramp from violet (rank 0) through blue, green, to red."""
    t = np.linspace(0.0, 1.0, num_colors)
    hue = 0.75 * (1.0 - t) * 6.0  # HSV hue in sextants, saturation 0.85, value 0.95
    sector = np.floor(hue).astype(int) % 6
    frac = hue - np.floor(hue)
    v, s = 0.95, 0.85
    p, q, u = v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))
    table = np.stack([
        np.choose(sector, [v, q, p, p, u, v]),
        np.choose(sector, [u, v, v, q, p, p]),
        np.choose(sector, [p, p, u, v, v, q]),
    ], axis=1)
    return np.rint(table * 255).astype(np.uint8)


def index_map_colors(indices, embeddings):
    """RGB uint8 (..., 3) picture of index maps, items coloured by `dictionary_order`."""
    rank = dictionary_order(embeddings)
    return rank_palette(rank.shape[0])[rank[np.asarray(indices)]]


def codebook_figure(embeddings, real_indices, fake_indices, real_images=None, fake_images=None,
                    max_samples=8, cell_size=64, padding=2):
    """The Figure 1 grid as an uint8 (height, width, 3) array.

    Rows, top to bottom: real images (if given), real index maps, generated images (if given),
    generated index maps; n = min(max_samples, batch sizes) columns. Every cell is
    cell_size x cell_size (index maps enlarged by nearest neighbour, images bilinearly), cells are
    separated and framed by `padding` white pixels:
        width  = n * cell_size + (n + 1) * padding
        height = rows * cell_size + (rows + 1) * padding

    Args:
      embeddings: (K, C) dictionary of the FQ layer.
      real_indices, fake_indices: integer (N, H, W) index maps.
      real_images, fake_images: optional uint8 (N, h, w, 3) or float in [-1, 1].
    """
    real_indices, fake_indices = np.asarray(real_indices), np.asarray(fake_indices)
    for name, maps in (("real", real_indices), ("fake", fake_indices)):
        if maps.ndim != 3:
            raise ValueError(f"codebook_figure: {name} index maps must be (N, H, W) (an FQ layer "
                             f"on spatial NHWC features), got shape {maps.shape}.")
    if cell_size < 1 or padding < 0 or max_samples < 1:
        raise ValueError("codebook_figure: cell_size and max_samples must be >= 1, padding >= 0.")
    n = min(max_samples, real_indices.shape[0], fake_indices.shape[0])
    num_embeddings = np.asarray(embeddings).shape[0]
    for maps in (real_indices, fake_indices):
        if maps.size and (maps.min() < 0 or maps.max() >= num_embeddings):
            raise ValueError(f"codebook_figure: indices must be in [0, {num_embeddings}).")
    rows = []
    for images, maps in ((real_images, real_indices), (fake_images, fake_indices)):
        if images is not None:
            images = to_uint8_images(images)
            if images.shape[0] < n:
                raise ValueError(f"codebook_figure: {images.shape[0]} images for {n} columns.")
            rows.append([np.asarray(Image.fromarray(img).resize(
                (cell_size, cell_size), Image.Resampling.BILINEAR)) for img in images[:n]])
        colored = index_map_colors(maps[:n], embeddings)
        rows.append([np.asarray(Image.fromarray(c).resize(
            (cell_size, cell_size), Image.Resampling.NEAREST)) for c in colored])
    height = len(rows) * cell_size + (len(rows) + 1) * padding
    width = n * cell_size + (n + 1) * padding
    canvas = np.full((height, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        top = padding + r * (cell_size + padding)
        for c, cell in enumerate(row):
            left = padding + c * (cell_size + padding)
            canvas[top:top + cell_size, left:left + cell_size] = cell
    return canvas


def save_codebook_figure(path, fq_layer, real, fake, real_images=None, fake_images=None,
                         **kwargs):
    """Writes the Figure 1 view of one FQ layer as a PNG; returns its (width, height).

    Args:
      path: output .png path (written atomically: temporary file, then rename).
      fq_layer: the FeatureQuantization layer (its `embeddings` give the colour ordering).
      real, fake: per batch, the layer's lookup dict, its NHWC input features, or (N, H, W)
        integer index maps.
      real_images, fake_images, **kwargs: see `codebook_figure`.
    """
    canvas = codebook_figure(np.asarray(fq_layer.embeddings), _indices_of(real, fq_layer),
                             _indices_of(fake, fq_layer), real_images, fake_images, **kwargs)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".png.tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            Image.fromarray(canvas).save(f, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return canvas.shape[1], canvas.shape[0]
