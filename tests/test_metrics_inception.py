"""FID / KID / IS and the Inception GraphDef path, with a small stand-in for the real graph.

`write_standin_inception_graph` builds a frozen graph with the tensor names, shapes and input
structure of classify_image_graph_def.pb (inception-2015-12-05): a JPEG string placeholder
`DecodeJpeg/contents` -> `DecodeJpeg` -> `Cast` -> `ExpandDims` [1, H, W, 3] -> `ResizeBilinear`
to 299x299 (TF1 semantics) -> (x - 128) / 128 -> a tiny random conv net -> `pool_3`
[1, 1, 1, 2048] -> `pool_3/_reshape` [1, 2048] (fixed batch 1, as in the real graph) ->
`softmax/logits/MatMul` with `softmax/weights` [2048, 1008] -> `softmax/logits` (+ bias) ->
`softmax`.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from metrics.frechet_inception_distance import (frechet_distance, frechet_inception_distance,
                                                trace_sqrt_product)
from metrics.inception import InceptionV3, cached_real_features, feature_statistics
from metrics.inception_score import inception_score
from metrics.kernel_inception_distance import kernel_inception_distance

CLASSES = 1008
EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7


def write_standin_inception_graph(path, seed=0):
    rng = np.random.RandomState(seed)
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, shape=[], name="DecodeJpeg/contents")
        decoded = tf.raw_ops.DecodeJpeg(contents=contents, channels=3, name="DecodeJpeg")
        expanded = tf.expand_dims(tf.cast(decoded, tf.float32, name="Cast"), 0, name="ExpandDims")
        resized = tf.raw_ops.ResizeBilinear(images=expanded, size=tf.constant([299, 299]),
                                            align_corners=False, half_pixel_centers=False,
                                            name="ResizeBilinear")
        x = tf.multiply(tf.subtract(resized, 128.0, name="Sub"), 1.0 / 128.0, name="Mul")
        x = tf.nn.avg_pool2d(x, 23, 23, "VALID")  # [1, 13, 13, 3]
        x = tf.nn.relu(tf.nn.conv2d(x, rng.randn(3, 3, 3, 32).astype(np.float32), 1, "VALID"))
        x = tf.nn.relu(tf.nn.conv2d(x, rng.randn(1, 1, 32, 2048).astype(np.float32) * 0.2, 1,
                                    "VALID"))
        pool = tf.nn.avg_pool2d(x, 11, 1, "VALID", name="pool_3")  # [1, 1, 1, 2048]
        flat = tf.reshape(pool, [1, 2048], name="pool_3/_reshape")
        weights = tf.constant(rng.randn(2048, CLASSES).astype(np.float32) * 0.05,
                              name="softmax/weights")
        matmul = tf.matmul(flat, weights, name="softmax/logits/MatMul")
        logits = tf.nn.bias_add(matmul, rng.randn(CLASSES).astype(np.float32),
                                name="softmax/logits")
        tf.nn.softmax(logits, name="softmax")
    with open(path, "wb") as f:
        f.write(graph.as_graph_def().SerializeToString())
    return path


@pytest.fixture(scope="module")
def standin_graph(tmp_path_factory):
    return write_standin_inception_graph(str(tmp_path_factory.mktemp("inception") / "g.pb"))


def random_images(n, size, seed):
    return np.random.RandomState(seed).randint(0, 256, (n, size, size, 3)).astype(np.uint8)


# ---- GraphDef path ----

def tf1_session_outputs(graph_path, image):
    """TTUR / OpenAI style: import the graph, feed one [1, H, W, 3] image at ExpandDims:0."""
    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as f:
        graph_def.ParseFromString(f.read())
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run(["pool_3:0", "softmax/logits/MatMul:0"],
                               {"ExpandDims:0": image[None].astype(np.float32)})


def test_graphdef_features_and_logits_match_a_tf1_session_feed(standin_graph):
    inception = InceptionV3(standin_graph, minibatch_size=3)
    for size in (16, 40):  # any input size: the graph resizes to 299 itself
        images = random_images(5, size, size)
        out = inception.run(images)
        assert out["features"].shape == (5, 2048) and out["logits"].shape == (5, CLASSES)
        for i in (0, 4):
            pool3, matmul = tf1_session_outputs(standin_graph, images[i])
            np.testing.assert_allclose(out["features"][i], pool3.reshape(-1), rtol=1e-5,
                                       atol=1e-6)
            # Logits = pool_3 @ W without the output bias (OpenAI's IS).
            np.testing.assert_allclose(out["logits"][i], matmul[0], rtol=1e-5, atol=1e-5)
    # Float input in [-1, 1] is quantised to uint8 first, as the exporter does.
    images = random_images(2, 16, 0)
    np.testing.assert_array_equal(inception(images)[0],
                                  inception(images.astype(np.float32) / 127.5 - 1.0)[0])


def test_graphdef_errors_name_the_flag(tmp_path, standin_graph):
    with pytest.raises(FileNotFoundError, match="--inception=.*classify_image_graph_def.pb"):
        InceptionV3(str(tmp_path / "missing.pb"))
    with pytest.raises(FileNotFoundError, match="--inception"):
        InceptionV3(None)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\xff\xfe not a protobuf \x00" * 10)
    with pytest.raises(ValueError, match="--inception"):
        InceptionV3(str(garbage))
    other = tmp_path / "other.pb"
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(1.0, name="something")
    other.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(ValueError, match="lacks the nodes"):
        InceptionV3(str(other))


def test_real_feature_cache_is_keyed_by_dataset_count_and_network(tmp_path, standin_graph):
    inception = InceptionV3(standin_graph, minibatch_size=4)
    images = random_images(12, 16, 1)
    calls = []

    def first(n):
        def load():
            calls.append(n)
            return (images[i:i + 5] for i in range(0, n, 5))  # an iterable of minibatches
        return load

    cache = str(tmp_path / "cache")
    a = cached_real_features(inception, first(10), "synthetic-16", 10, cache)
    b = cached_real_features(inception, first(10), "synthetic-16", 10, cache)
    assert (a["cached"], b["cached"], calls) == (False, True, [10])
    for name in ("features", "logits", "mu", "sigma"):
        np.testing.assert_array_equal(a[name], b[name])
    # The cache holds the statistics of its own features (same float64 code on the same array).
    mu, sigma = feature_statistics(b["features"])
    np.testing.assert_array_equal(b["mu"], mu)
    np.testing.assert_array_equal(b["sigma"], sigma)
    # ... and those features are the network's: bit-equal for the same minibatches (4, 1, 4, 1),
    np.testing.assert_array_equal(b["features"], inception.run(
        [images[:5], images[5:10]])["features"])
    # and to float32 accuracy for another batching (4, 4, 2), where conv / matmul kernels may
    # block differently: the features chain reductions of 529 (23x23 pool), 27 (3x3x3 conv),
    # 32 (1x1 conv) and 121 (11x11 pool) terms, so they err by at most ~709 eps32 of their scale.
    again = inception.run(images[:10])["features"]
    np.testing.assert_allclose(b["features"], again, rtol=0,
                               atol=709 * EPS32 * np.abs(again).max())  # 709 eps32 ~ 8.4e-5
    assert not cached_real_features(inception, first(12), "synthetic-16", 12, cache)["cached"]
    assert not cached_real_features(inception, first(10), "other-data", 10, cache)["cached"]
    other_net = InceptionV3(write_standin_inception_graph(str(tmp_path / "g2.pb"), seed=1))
    assert not cached_real_features(other_net, first(10), "synthetic-16", 10, cache)["cached"]
    assert calls == [10, 12, 10, 10]
    assert sorted(os.listdir(cache)) == sorted(f for f in os.listdir(cache) if f.endswith(".npz"))
    assert len(os.listdir(cache)) == 4
    with pytest.raises(ValueError, match="expected 12 real images"):
        cached_real_features(inception, first(10), "short", 12, cache)


# ---- Fréchet distance ----

def test_frechet_distance_closed_forms():
    rng = np.random.RandomState(0)
    # Diagonal: sum (s1 + s2 - 2 sqrt(s1 s2)) = sum (sqrt(s1) - sqrt(s2))^2.
    mu1, mu2 = rng.randn(6), rng.randn(6)
    s1, s2 = rng.rand(6) + 0.1, rng.rand(6) + 0.1
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    # Float64 6x6 eigh, cond(s) <= 11: error ~ 6 * eps64 * 11 ~ 1.5e-14 << 1e-12.
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected,
                                                                                  rel=1e-12)
    # Non-commuting 2x2: for M with positive eigenvalues, Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)).
    a = np.array([[2.0, 0.7], [0.7, 1.0]])
    b = np.array([[0.5, -0.3], [-0.3, 1.5]])
    assert not np.allclose(a @ b, b @ a)
    m = a @ b
    tr_sqrt = np.sqrt(np.trace(m) + 2.0 * np.sqrt(np.linalg.det(m)))
    # Float64 2x2 (cond < 6): a few eps64 * cond ~ 1e-15, no cancellation (FID ~ 3 of terms ~ 5).
    assert trace_sqrt_product(a, b) == pytest.approx(tr_sqrt, rel=1e-12)
    assert frechet_distance(np.zeros(2), a, np.ones(2), b) == pytest.approx(
        2.0 + np.trace(a) + np.trace(b) - 2.0 * tr_sqrt, rel=1e-12)
    # General SPD, 64-D: Tr sqrtm(S1 S2) = sum sqrt(eig(S1 S2)) (real, positive eigenvalues).
    x, y = rng.randn(64, 200), rng.randn(64, 200)
    s1, s2 = x @ x.T / 200, y @ y.T / 200
    expected = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))
    # Float64 64-D, cond(s) ~ 12: eigen errors ~ 64 * eps64 * cond^2 ~ 2e-12 << 1e-9.
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)
    # 2 Tr(a) - 2 Tr sqrt(a a) with Tr(a) = 3 in float64: a few eps64 * 3 ~ 1e-15 << 1e-12.
    assert frechet_distance(mu1[:2], a, mu1[:2], a) == pytest.approx(0.0, abs=1e-12)


def test_fid_from_samples_of_known_gaussians_and_singular_covariances():
    rng = np.random.RandomState(1)
    d, n = 4, 50000
    q, _ = np.linalg.qr(rng.randn(d, d))
    cov1 = q @ np.diag([1.0, 2.0, 0.5, 3.0]) @ q.T
    cov2 = np.diag([1.5, 1.0, 1.0, 0.2])
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    f1 = rng.multivariate_normal(mu1, cov1, n)
    f2 = rng.multivariate_normal(mu2, cov2, n)
    closed = frechet_distance(mu1, cov1, mu2, cov2)
    assert frechet_inception_distance(f1, f2) == pytest.approx(closed, rel=0.03)
    # np.cov with N - 1, as the reference.
    mu, sigma = feature_statistics(f1[:10])
    np.testing.assert_array_equal(sigma, np.cov(f1[:10], rowvar=False))  # same call: bit-equal
    # Fewer samples than dimensions (singular covariances): finite, real, >= 0.
    small = frechet_inception_distance(rng.randn(10, 128), rng.randn(10, 128) + 0.1)
    assert np.isfinite(small) and small > 0


def test_fid_of_fewer_images_than_features_is_the_covariance_route_exactly():
    """N <= D: FID from the features (singular values of A1 A2^T) equals the D x D covariance
    route, which differs only by its rounding: each of its D - N zero eigenvalues contributes
    sqrt(|rounding|) <= sqrt(D * eps64 * ||S1|| ||S2||) ~ 3e-7 here, <= 2 * 118 * 3e-7 ~ 7e-5
    absolute on an FID of ~ 270 (rel < 3e-7 << 1e-6)."""
    rng = np.random.RandomState(5)
    f1, f2 = rng.randn(10, 128) * 1.5, rng.randn(12, 128) + 0.3
    mu1, s1 = feature_statistics(f1)
    mu2, s2 = feature_statistics(f2)
    low_rank = frechet_inception_distance(f1, f2)
    assert low_rank == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-6)
    # float32 features (Inception's) are computed in float64, as the statistics are.
    f32 = f1.astype(np.float32)
    assert frechet_inception_distance(f32, f2) == frechet_inception_distance(
        f32.astype(np.float64), f2)
    # The route is symmetric and needs no D x D work: identical sets are at distance 0.
    assert frechet_inception_distance(f1, f1) == pytest.approx(0.0, abs=1e-9)
    assert frechet_inception_distance(f2, f1) == pytest.approx(low_rank, rel=1e-12)
    # More images than features: the statistics route (one code path for both argument forms).
    g1, g2 = rng.randn(40, 16), rng.randn(40, 16) + 0.2
    assert frechet_inception_distance(g1, g2) == frechet_inception_distance(
        feature_statistics(g1), feature_statistics(g2))


# ---- KID ----

def ref_kid(real, fake, num_subsets, max_subset_size, seed):
    """Loop form of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3."""
    rng = np.random.RandomState(seed)
    d = real.shape[1]
    m = min(len(real), len(fake), max_subset_size)
    values = []
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
        yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
        values.append((xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m))
    return np.mean(values), np.std(values)


def test_kid_matches_loop_form_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.RandomState(2)
    real, fake = rng.randn(30, 8), rng.randn(25, 8) + 0.3
    ours = kernel_inception_distance(real, fake, num_subsets=4, max_subset_size=12, seed=3)
    expected = ref_kid(real, fake, 4, 12, 3)
    # Float64 sums of 12^2 kernel terms ~O(1): ~144 * eps64 * |terms| / |kid| ~ 1e-12 << 1e-10.
    assert (ours["kid"], ours["kid_std"]) == pytest.approx(expected, rel=1e-10)

    a, b = rng.randn(600, 64), rng.randn(600, 64)
    same = kernel_inception_distance(a, b, num_subsets=50, max_subset_size=200, seed=0)
    assert abs(same["kid"]) < 3.0 * same["kid_std"], same
    shifted = kernel_inception_distance(a, b + 0.5, num_subsets=50, max_subset_size=200, seed=0)
    assert shifted["kid"] > 3.0 * shifted["kid_std"] and shifted["kid"] > 10 * abs(same["kid"])
    with pytest.raises(ValueError, match="equal D"):
        kernel_inception_distance(a, b[:, :3])


# ---- IS ----

def test_inception_score_closed_forms():
    classes = 7
    labels = np.arange(70) % classes  # every split holds every class equally often
    confident = np.full((70, CLASSES), -40.0)
    confident[np.arange(70), labels] = 40.0
    result = inception_score(confident[:, :classes], splits=10)
    # Float64; off-class probabilities e^-80 ~ 2e-35: IS = 7 to a few eps64, std 0 to ~1e-15.
    assert result["inception_score"] == pytest.approx(classes, rel=1e-9)
    assert result["inception_score_std"] == pytest.approx(0.0, abs=1e-9)
    # 1008 logits of which only 7 classes are ever predicted: still 7.
    assert inception_score(confident)["inception_score"] == pytest.approx(classes, rel=1e-9)
    # One class for everything, or uniform predictions: IS = 1.
    assert inception_score(np.tile(confident[:1], (70, 1)))["inception_score"] == pytest.approx(1.0)
    assert inception_score(np.zeros((20, 5)), splits=2)["inception_score"] == pytest.approx(1.0)
    # Matches the reference formula on softmax probabilities for soft predictions.
    logits = np.random.RandomState(0).randn(40, 6)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = [np.exp(np.mean(np.sum(part * (np.log(part) - np.log(part.mean(0, keepdims=True))),
                                    1))) for part in np.split(p, 4)]
    result = inception_score(logits, splits=4)
    # Float64 log-softmax vs softmax-then-log on N(0,1) logits: ~10 eps64 ~ 2e-15 << 1e-10.
    assert (result["inception_score"], result["inception_score_std"]) == pytest.approx(
        (np.mean(scores), np.std(scores)), rel=1e-10)
    with pytest.raises(ValueError, match="splits"):
        inception_score(logits[:3], splits=10)
