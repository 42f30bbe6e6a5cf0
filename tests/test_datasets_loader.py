"""tf.data pipelines: reals processing, fade-in, shuffling, labels, distribution, U-GAT-IT."""

import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from datasets import (DatasetError, augment_size_for, fade_reals, open_dataset, open_unpaired,
                      resolution_for_lod, synthetic)
from datasets.prepare import create_synthetic


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    """A labelled 16x16 TFRecord dataset of 48 shapes images (record i = shapes(48)[i])."""
    path = tmp_path_factory.mktemp("data") / "shapes16"
    create_synthetic(path, "shapes", resolution=16, num_images=48, seed=0, log=quiet)
    return path


def fade_lod_reference(x_nchw, lod):
    """StyleGAN training/training_loop.py process_reals, 'FadeLOD' scope, in numpy (NCHW)."""
    n, c, h, w = x_nchw.shape
    y = x_nchw.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), keepdims=True)
    y = np.tile(y, [1, 1, 1, 2, 1, 2]).reshape(n, c, h, w)
    t = lod - np.floor(lod)
    return x_nchw + (y - x_nchw) * t    # tflib.lerp(x, y, t)


#----------------------------------------------------------------------------
# Reals processing.

def test_fade_reals_matches_the_reference():
    x = np.random.RandomState(0).uniform(-1, 1, (3, 8, 8, 2)).astype(np.float32)
    for lod in (0.0, 0.25, 1.7, 2.0):
        expected = fade_lod_reference(x.transpose(0, 3, 1, 2), lod).transpose(0, 2, 3, 1)
        # Float32 both sides, |x| <= 1: 2x2 mean (3 sums < 4, 2.4e-7 each, / 4) then the lerp
        # (3 roundings of |.| <= 2): <= 4.2e-7 per side, < 1e-6 apart.
        np.testing.assert_allclose(fade_reals(tf.constant(x), tf.constant(lod)), expected,
                                   atol=1e-6)
    np.testing.assert_array_equal(fade_reals(tf.constant(x), tf.constant(3.0)), x)


def test_fade_reals_follows_a_changing_lod_variable_without_retracing():
    lod = tf.Variable(1.0)
    traces = []

    @tf.function
    def step(images):
        traces.append(1)
        return fade_reals(images, lod)

    x = tf.random.stateless_uniform([2, 4, 4, 3], [1, 2])
    outputs = []
    for value in (1.0, 1.5, 1.999):
        lod.assign(value)
        outputs.append(step(x).numpy())
    assert len(traces) == 1
    np.testing.assert_array_equal(outputs[0], x.numpy())
    for value, out in zip((1.5, 1.999), outputs[1:]):
        expected = fade_lod_reference(x.numpy().transpose(0, 3, 1, 2), value)
        # As above: <= 4.2e-7 per side for |x| <= 1.
        np.testing.assert_allclose(out, expected.transpose(0, 2, 3, 1), atol=1e-6)


def test_resolution_for_lod():
    assert [resolution_for_lod(32, lod) for lod in (0, 0.5, 1, 1.3, 2.99, 3)] == \
        [32, 32, 16, 16, 8, 4]


def test_float_range_mirror_and_determinism(shapes_dir):
    dataset = open_dataset(shapes_dir)
    originals = dataset.images().astype(np.float32) * (2 / 255) - 1
    by_content = {o.tobytes(): i for i, o in enumerate(originals)}
    flipped_content = {o[:, ::-1].tobytes(): i for i, o in enumerate(originals)}
    images, _ = next(iter(dataset.pipeline(48, mirror=True, seed=3)))
    images = images.numpy()
    assert images.dtype == np.float32 and images.min() >= -1 and images.max() <= 1
    plain = sum(x.tobytes() in by_content for x in images)
    flipped = sum(x.tobytes() in flipped_content for x in images)
    assert plain + flipped == 48 and 12 <= flipped <= 36   # each image once, ~half mirrored
    again, _ = next(iter(dataset.pipeline(48, mirror=True, seed=3)))
    np.testing.assert_array_equal(images, again)
    unflipped, _ = next(iter(dataset.pipeline(48, mirror=False, seed=3)))
    assert all(x.tobytes() in by_content for x in unflipped.numpy())


def test_shuffle_epochs_and_seeds(shapes_dir):
    dataset = open_dataset(shapes_dir)
    originals = {x.tobytes(): i for i, x in enumerate(dataset.images())}

    def order(seed, epochs=1):
        batches = dataset.pipeline(16, dtype=tf.uint8, seed=seed, repeat=epochs > 1)
        images = np.concatenate([b.numpy() for b, _ in batches.take(3 * epochs)])
        return [originals[x.tobytes()] for x in images]

    first = order(0)
    assert sorted(first) == list(range(48)) and first != list(range(48))
    assert order(0) == first and order(1) != first
    two_epochs = order(0, epochs=2)
    assert sorted(two_epochs[:48]) == sorted(two_epochs[48:]) == list(range(48))
    assert two_epochs[:48] != two_epochs[48:]                       # reshuffled each epoch
    last = list(dataset.pipeline(20, dtype="uint8", repeat=False, drop_remainder=False))
    assert [b.shape[0] for b, _ in last] == [20, 20, 8]


def test_labels_travel_with_their_images(shapes_dir):
    dataset = open_dataset(shapes_dir, resolution=8)
    assert dataset.info.label_names == synthetic.SHAPE_CLASSES
    images, labels = next(iter(dataset.pipeline(48, seed=5, mirror=True)))
    assert labels.dtype == tf.float32 and labels.shape == (48, 5)
    np.testing.assert_array_equal(labels.numpy().sum(1), np.ones(48))
    np.testing.assert_array_equal(synthetic.classify_shapes(images.numpy()),
                                  labels.numpy().argmax(1))


def test_pipeline_argument_errors(shapes_dir, two_replica_strategy):
    dataset = open_dataset(shapes_dir)
    with pytest.raises(DatasetError, match="batch_size must be >= 1"):
        dataset.pipeline(0)
    with pytest.raises(DatasetError, match="dtype must be float32 or uint8"):
        dataset.pipeline(4, dtype=tf.int32)
    with pytest.raises(DatasetError, match=r"no 32x32 level; available: \[16, 8, 4\]"):
        dataset.pipeline(4, 32)
    with pytest.raises(DatasetError, match="not divisible by the 2 replicas"):
        dataset.distribute(two_replica_strategy, 5)


#----------------------------------------------------------------------------
# Distribution.

def test_each_replica_gets_its_share_under_mirrored_strategy(shapes_dir, two_replica_strategy):
    strategy = two_replica_strategy
    dataset = open_dataset(shapes_dir)
    originals = {x.tobytes(): i for i, x in enumerate(dataset.images())}
    distributed = dataset.distribute(strategy, 8, 16, dtype="uint8", shuffle=False,
                                     repeat=False)

    @tf.function
    def step(images, labels):
        def replica_fn(x, y):
            return tf.shape(x)[0], tf.reduce_sum(y)
        return strategy.run(replica_fn, args=(images, labels))

    seen = []
    for images, labels in distributed:
        per_replica = strategy.experimental_local_results(images)
        assert [p.shape for p in per_replica] == [(4, 16, 16, 3)] * 2
        assert [p.device.endswith(f"CPU:{i}") for i, p in enumerate(per_replica)] == [True] * 2
        sizes, label_sums = step(images, labels)
        assert [int(s) for s in strategy.experimental_local_results(sizes)] == [4, 4]
        assert [float(s) for s in strategy.experimental_local_results(label_sums)] == [4, 4]
        for p in per_replica:
            seen += [originals[x.tobytes()] for x in p.numpy()]
    assert sorted(seen) == list(range(48))   # one epoch, every image once, split over replicas


def test_input_pipelines_read_disjoint_shards(shapes_dir):
    dataset = open_dataset(shapes_dir)
    originals = {x.tobytes(): i for i, x in enumerate(dataset.images())}
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2,
                                             input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        batches = dataset.pipeline(4, dtype="uint8", repeat=False, input_context=context)
        shards.append({originals[x.tobytes()] for b, _ in batches for x in b.numpy()})
    assert len(shards[0]) == len(shards[1]) == 24 and not shards[0] & shards[1]


#----------------------------------------------------------------------------
# U-GAT-IT unpaired loader.

def write_root(root, images_a, images_b):
    for folder, images in (("trainA", images_a), ("trainB", images_b), ("testA", images_a)):
        os.makedirs(root / folder / "nested")
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / folder / "nested" / f"{i}.png")


def find_window(big, small):
    """Offsets (y, x, flipped) at which `small` is a window of `big` or of its mirror."""
    r = small.shape[0]
    for flipped, source in ((False, big), (True, big[:, ::-1])):
        for y in range(big.shape[0] - r + 1):
            for x in range(big.shape[1] - r + 1):
                if np.allclose(source[y:y + r, x:x + r], small, atol=1e-4):
                    return y, x, flipped
    return None


def test_augment_size_is_286_over_256():
    assert [augment_size_for(r) for r in (256, 128, 64, 32)] == [286, 143, 72, 36]


def test_unpaired_training_augmentation_from_folders(tmp_path):
    rng = np.random.RandomState(0)
    a = rng.randint(0, 256, (3, 12, 20, 3)).astype(np.uint8)     # non-square, resized anyway
    b = rng.randint(0, 256, (4, 16, 16, 3)).astype(np.uint8)
    write_root(tmp_path / "root", a, b)
    pair = open_unpaired(tmp_path / "root")
    assert pair.info.counts == {"trainA": 3, "trainB": 4, "testA": 3, "testB": 0}
    resized_a = [tf.image.resize(x, [18, 18], "bilinear", antialias=True).numpy() * (2 / 255) - 1
                 for x in a]
    flips, offsets = set(), set()
    for step, (batch_a, batch_b) in enumerate(pair.train_pipeline(16, batch_size=2, seed=1)
                                              .take(6)):
        assert batch_a.shape == batch_b.shape == (2, 16, 16, 3)
        for crop in batch_a.numpy():
            found = [find_window(r, crop) for r in resized_a]
            match = next(f for f in found if f is not None)   # a window of some resized image
            flips.add(match[2])
            offsets.add(match[:2])
    assert flips == {False, True} and len(offsets) > 1           # random flips and crops
    # Test time: resize only (equals Pillow's bilinear resize before rounding), file order.
    tests = np.concatenate([x.numpy() for x in pair.test_pipeline("A", 8, batch_size=2)])
    for got, image in zip(tests, a):
        pillow = np.stack([np.asarray(Image.fromarray(image[..., c].astype(np.float32), "F")
                                      .resize((8, 8), Image.BILINEAR)) for c in range(3)], -1)
        # Triangle-filter resizes of 0..255 pixels in float32 (<= 16 taps: <= 16 eps32 * 255)
        # times 2/255: <= 4e-6; Pillow's filter weights are float64: < 1e-4.
        np.testing.assert_allclose(got, pillow * (2 / 255) - 1, atol=1e-4)


def test_unpaired_identity_when_augmentation_is_off():
    pair = open_unpaired("shapes2cartoon", resolution=8, num_images=6, seed=2)
    a, b = synthetic.shapes2cartoon(6, 8, seed=2)
    batch_a, batch_b = next(iter(pair.train_pipeline(8, batch_size=6, flip=False,
                                                     augment_size=8, shuffle=False)))
    # x * 2/255 - 1 in float32: <= 3 roundings of |.| <= 2, <= 3.6e-7 << 1e-5.
    np.testing.assert_allclose(batch_a, a * (2 / 255) - 1, atol=1e-5)
    np.testing.assert_allclose(batch_b, b * (2 / 255) - 1, atol=1e-5)
    with pytest.raises(DatasetError, match="smaller than the crop"):
        pair.train_pipeline(8, augment_size=4)


def test_training_streams_run_without_the_autotuning_thread(shapes_dir):
    """Every training stream ends in datasets.loader.prefetched_stream: model-based autotuning
    off, whose thread made deleting the iterator wait up to 60 s at the end of every run. The
    stream still yields its batches (the full pipeline: TFRecords, built-in, unpaired)."""
    streams = [open_dataset(str(shapes_dir)).pipeline(4, mirror=True),
               open_dataset("shapes", resolution=8, num_images=16).pipeline(4),
               open_unpaired("shapes2cartoon", resolution=8, num_images=6).train_pipeline(
                   8, batch_size=2)]
    for stream in streams:
        assert stream.options().autotune.enabled is False
        batch = next(iter(stream))
        assert batch[0].shape[0] in (2, 4) and np.all(np.isfinite(batch[0]))


def test_unpaired_domains_are_shuffled_independently():
    pair = open_unpaired("shapes2cartoon", resolution=8, num_images=16, seed=0)
    a, b = synthetic.shapes2cartoon(16, 8, seed=0)
    index_a = {x.tobytes(): i for i, x in enumerate(a)}
    index_b = {x.tobytes(): i for i, x in enumerate(b)}
    batch_a, batch_b = next(iter(pair.train_pipeline(8, batch_size=16, flip=False,
                                                     augment_size=8)))

    def order(batch, index):
        return [index[np.rint((x + 1) * 127.5).astype(np.uint8).tobytes()] for x in
                batch.numpy()]

    order_a, order_b = order(batch_a, index_a), order(batch_b, index_b)
    assert sorted(order_a) == sorted(order_b) == list(range(16))
    assert order_a != order_b


def test_unpaired_under_mirrored_strategy(two_replica_strategy):
    pair = open_unpaired("shapes2cartoon", resolution=8, num_images=8)
    distributed = pair.distribute(two_replica_strategy, 2, 8)
    a, b = next(iter(distributed))
    assert [x.shape for x in two_replica_strategy.experimental_local_results(a)] == \
        [(1, 8, 8, 3)] * 2
    assert [x.shape for x in two_replica_strategy.experimental_local_results(b)] == \
        [(1, 8, 8, 3)] * 2


@pytest.mark.parametrize("shuffle, mirror", [(True, True), (False, False)])
def test_start_image_resumes_the_stream_exactly(shapes_dir, shuffle, mirror):
    """Batches from start_image = k * batch equal batch k onward of an uninterrupted stream,
    across epoch boundaries (48 images, batch 16: epochs end every 3 batches)."""
    tf.random.set_seed(0)  # a global seed of 0 once broke tensor-valued shuffle seeds
    dataset = open_dataset(shapes_dir)
    kwargs = dict(dtype=tf.uint8, shuffle=shuffle, mirror=mirror, seed=7)
    straight = [b[0].numpy() for b in dataset.pipeline(16, **kwargs).take(8)]
    for k in (1, 3, 4):
        resumed = [b[0].numpy() for b in dataset.pipeline(16, start_image=16 * k, **kwargs).take(8 - k)]
        for a, b in zip(straight[k:], resumed):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(DatasetError, match="multiple of the batch size"):
        dataset.pipeline(16, start_image=8)
