"""FQ dictionary usage statistics and the Figure 1 index-map PNG, against numpy counts."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fq_keras import FeatureQuantization
from metrics.codebook import (CodebookStatistics, _indices_of, codebook_figure, codebook_usage,
                              dictionary_order, index_map_colors, rank_palette,
                              save_codebook_figure)


def numpy_usage(indices, k):
    counts = np.bincount(np.asarray(indices).reshape(-1), minlength=k)
    p = counts / counts.sum()
    return counts, np.exp(-np.sum(p * np.log(p + 1e-10))), int(k - np.unique(indices).size)


def make_layer(k=16, c=4, name="fq"):
    layer = FeatureQuantization(k, name=name,
                                embeddings_initializer=tf.keras.initializers.RandomNormal(seed=1))
    layer.build((None, 5, 5, c))
    return layer


def test_codebook_usage_matches_numpy_count():
    indices = np.random.RandomState(0).randint(0, 10, (3, 5, 5))  # items 10..15 never used
    usage = codebook_usage(indices, 16)
    counts, perplexity, dead = numpy_usage(indices, 16)
    np.testing.assert_array_equal(usage["counts"], counts)
    assert usage["num_vectors"] == 75
    assert usage["perplexity"] == pytest.approx(perplexity, rel=1e-6)
    assert (usage["dead_items"], usage["dead_fraction"]) == (dead, pytest.approx(dead / 16))
    assert dead >= 6
    assert codebook_usage(np.zeros(9, int), 4)["perplexity"] == pytest.approx(1.0, abs=1e-6)
    assert codebook_usage(np.arange(8) % 4, 4)["perplexity"] == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        codebook_usage(np.array([3, 16]), 16)


def test_codebook_statistics_accumulate_lookups_features_and_index_maps():
    layers = [make_layer(16, 4, "fq_16"), make_layer(8, 6, "fq_8")]
    rng = np.random.RandomState(1)
    batches = [[rng.randn(2, 5, 5, 4).astype(np.float32), rng.randn(2, 3, 3, 6).astype(np.float32)]
               for _ in range(3)]
    stats = CodebookStatistics(layers)
    stats.update([layers[0].lookup(batches[0][0]), layers[1].lookup(batches[0][1])])  # lookups
    stats.update(batches[1])  # feature maps: looked up by the layers
    stats.update({"fq_16": layers[0].lookup(batches[2][0])["indices"],  # index maps, by name
                  "fq_8": layers[1].lookup(batches[2][1])["indices"]})
    result = stats.result()
    for i, layer in enumerate(layers):
        indices = np.concatenate([layer.lookup(b[i])["indices"].numpy().ravel() for b in batches])
        counts, perplexity, dead = numpy_usage(indices, layer.num_embeddings)
        np.testing.assert_array_equal(result[layer.name]["counts"], counts)
        assert result[layer.name]["perplexity"] == pytest.approx(perplexity, rel=1e-6)
        assert result[layer.name]["dead_items"] == dead
    with pytest.raises(ValueError, match="unknown FQ layers"):
        stats.update({"fq_32": batches[0][0]})
    with pytest.raises(ValueError, match="2 FQ layers"):
        stats.update(batches[0][:1])


def test_dictionary_order_follows_the_first_principal_component():
    rng = np.random.RandomState(2)
    t = rng.permutation(20).astype(np.float64)
    direction = rng.randn(8)
    embeddings = t[:, None] * direction[None, :] + 0.01 * rng.randn(20, 8)
    rank = dictionary_order(embeddings)
    by_t = np.argsort(np.argsort(t))
    assert np.array_equal(rank, by_t) or np.array_equal(rank, 19 - by_t)
    perm = rng.permutation(20)  # the ordering belongs to the items, not to their slots
    np.testing.assert_array_equal(dictionary_order(embeddings[perm]), rank[perm])
    palette = rank_palette(20)
    assert palette.shape == (20, 3) and len({tuple(c) for c in palette}) == 20


def test_codebook_png_has_the_expected_size_and_colours(tmp_path):
    layer = make_layer(16, 4)
    rng = np.random.RandomState(3)
    real = layer.lookup(rng.randn(5, 4, 4, 4).astype(np.float32))
    fake_features = rng.randn(6, 4, 4, 4).astype(np.float32)
    images = rng.randint(0, 256, (6, 16, 16, 3)).astype(np.uint8)
    path = str(tmp_path / "fig" / "codebook.png")
    size = save_codebook_figure(path, layer, real, fake_features, real_images=images[:5],
                                fake_images=images.astype(np.float32) / 127.5 - 1.0,
                                max_samples=4, cell_size=20, padding=3)
    # 4 columns (max_samples), 4 rows (real images, real maps, fake images, fake maps).
    assert size == (4 * 20 + 5 * 3, 4 * 20 + 5 * 3)
    with Image.open(path) as png:
        assert png.size == size and png.mode == "RGB"
        pixels = np.asarray(png)
    assert [f for f in (tmp_path / "fig").iterdir()] == [tmp_path / "fig" / "codebook.png"]
    colours = index_map_colors(real["indices"].numpy(), layer.embeddings.numpy())  # [5, 4, 4, 3]
    # Real map of sample 2 is row 1; its map cell (0, 0) covers pixels [0, 5) of the 20 px cell.
    top, left = 3 + 1 * 23, 3 + 2 * 23
    np.testing.assert_array_equal(pixels[top + 2, left + 2], colours[2, 0, 0])
    np.testing.assert_array_equal(pixels[top + 17, left + 17], colours[2, 3, 3])
    assert (pixels[:3] == 255).all() and (pixels[:, :3] == 255).all()  # white frame
    fake = layer.lookup(fake_features)["indices"].numpy()
    grid = codebook_figure(layer.embeddings.numpy(), real["indices"], fake, cell_size=8,
                           padding=0)
    assert grid.shape == (2 * 8, 5 * 8, 3)  # maps only, min(8, 5, 6) = 5 columns


def test_codebook_figure_bad_inputs(tmp_path):
    layer = make_layer(16, 4)
    flat = np.random.RandomState(0).randn(4, 4).astype(np.float32)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        save_codebook_figure(str(tmp_path / "x.png"), layer, flat, flat)
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        codebook_figure(layer.embeddings.numpy(), np.full((1, 2, 2), 16), np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="need their FeatureQuantization layer"):
        _indices_of(flat)  # float features without their layer
    assert not list(tmp_path.iterdir())
