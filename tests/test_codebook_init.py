"""Codebook initialisation (CBI): log-domain Sinkhorn against numpy, CBI steps, feature files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from fq_keras.codebook_init import (
    initialize_codebook, load_image_features, make_code_mapper, sinkhorn)
from fq_keras.style_quantization import StyleQuantization


def numpy_sinkhorn(cost, epsilon, iterations=20000):
    """Plain (kernel) Sinkhorn in float64: u = a / (K v), v = b / (K^T u), P = diag(u) K diag(v)."""
    n, k = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(k, 1.0 / k)
    kernel = np.exp(-cost / epsilon)
    v = np.ones(k)
    for _ in range(iterations):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None]


def numpy_log_sinkhorn(cost, epsilon, iterations=20000):
    """The same fixed point with potentials and log-sum-exps (float64), for tiny epsilon."""
    n, k = cost.shape

    def lse(x, axis):
        m = x.max(axis=axis, keepdims=True)
        return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)

    f, g = np.zeros(n), np.zeros(k)
    for _ in range(iterations):
        f = epsilon * (-np.log(n) - lse((g[None] - cost) / epsilon, 1))
        g = epsilon * (-np.log(k) - lse((f[:, None] - cost) / epsilon, 0))
    return np.exp((f[:, None] + g[None] - cost) / epsilon)


def synthetic_cost(n, k, dim, seed):
    rng = np.random.RandomState(seed)
    x, y = rng.randn(n, dim), rng.randn(k, dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return ((x[:, None] - y[None]) ** 2).sum(-1)  # in [0, 4], as in CBI


def clustered_features(seed=0, per_cluster=16, clusters=4, dim=8):
    rng = np.random.RandomState(seed)
    centres = 3.0 * np.eye(dim)[:clusters]
    return np.concatenate([rng.randn(per_cluster, dim) * 0.5 + c for c in centres]).astype(
        np.float32)


def assert_uniform_marginals(plan, tolerance=1e-4):
    n, k = plan.shape
    # The solvers stop at relative marginal error < 1e-5 (1e-6 below); float32 sums of <= 20
    # entries add <= 20 eps32 ~ 2.4e-6 relative: 1e-4 bounds both with margin.
    np.testing.assert_allclose(plan.sum(1) * n, 1.0, atol=tolerance)
    np.testing.assert_allclose(plan.sum(0) * k, 1.0, atol=tolerance)


# ---------------------------------------------------------------------------------------------
# Sinkhorn.

@pytest.mark.parametrize("n, k, epsilon", [(12, 7, 0.5), (20, 20, 0.1), (9, 16, 0.05)])
def test_sinkhorn_matches_numpy(n, k, epsilon):
    cost = synthetic_cost(n, k, 5, seed=n + k)
    result = sinkhorn(cost.astype(np.float32), epsilon=epsilon)
    plan = result["plan"].numpy()
    expected = numpy_sinkhorn(cost, epsilon)
    # Marginals are checked relative to 1/N and 1/K: to 1e-4 of each entry's target mass.
    assert_uniform_marginals(plan)
    np.testing.assert_allclose(plan, expected, rtol=1e-3, atol=1e-4 / (n * k))
    np.testing.assert_allclose(result["transport_cost"].numpy(), (expected * cost).sum(),
                               rtol=1e-4)
    assert result["marginal_error"].numpy() < 1e-4
    assert 1 <= int(result["iterations"]) < 1000


def test_sinkhorn_small_epsilon_stays_finite_in_log_domain():
    """epsilon = 0.004: exp(-C / eps) underflows (C up to 4); the log-domain plan does not."""
    cost = synthetic_cost(10, 6, 3, seed=1)
    epsilon = 0.004
    with np.errstate(all="ignore"):
        assert (np.exp(-cost.astype(np.float32) / epsilon) == 0).any()
    result = sinkhorn(cost.astype(np.float32), epsilon=epsilon, max_iterations=20000,
                      tolerance=1e-6)
    plan = result["plan"].numpy()
    assert np.isfinite(plan).all()
    assert_uniform_marginals(plan)
    # Both solvers stop on the marginals; entries below ~1e-5 (of a largest 0.1) still move
    # slowly at this epsilon and differ between them by up to ~1e-6.
    np.testing.assert_allclose(plan, numpy_log_sinkhorn(cost, epsilon), rtol=1e-3, atol=1e-5)


def test_sinkhorn_recovers_a_permutation():
    """Same point sets, permuted: with small epsilon the plan is the permutation / N."""
    rng = np.random.RandomState(2)
    x = rng.randn(8, 4)
    permutation = rng.permutation(8)
    cost = ((x[:, None] - x[permutation][None]) ** 2).sum(-1).astype(np.float32)
    result = sinkhorn(cost, epsilon=0.01, max_iterations=5000)
    plan = result["plan"].numpy()
    np.testing.assert_array_equal(permutation[plan.argmax(1)], np.arange(8))
    np.testing.assert_allclose(plan.max(1), 1 / 8, rtol=1e-3)
    assert result["transport_cost"].numpy() < 1e-3


def test_sinkhorn_warm_start_takes_fewer_iterations():
    cost = synthetic_cost(30, 12, 4, seed=3).astype(np.float32)
    cold = sinkhorn(cost, epsilon=0.02)
    warm = sinkhorn(cost, epsilon=0.02, initial_target_potential=cold["target_potential"])
    assert int(warm["iterations"]) < int(cold["iterations"]) / 4
    # Both stop within relative marginal error 1e-5 of one fixed point: entries (<= 1/30) differ
    # by <= 2 * 1e-5 / 30 ~ 7e-7; float32 rounding of P adds only ~eps32 * P ~ 4e-9.
    np.testing.assert_allclose(warm["plan"].numpy(), cold["plan"].numpy(), atol=1e-6)


def test_sinkhorn_compiles():
    cost = synthetic_cost(12, 7, 5, seed=4).astype(np.float32)
    compiled = tf.function(lambda c: sinkhorn(c, epsilon=0.1)["plan"])(cost)
    # Graph rewrites may round the potentials (|f|, |g| < 2) a few ulps differently: 4 ulp(1) =
    # 4.8e-7 in f + g - C, / eps = 0.1, is 4.8e-6 in the exponent of P, so 4.8e-6 relative in P.
    np.testing.assert_allclose(compiled.numpy(), sinkhorn(cost, epsilon=0.1)["plan"].numpy(),
                               rtol=5e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(epsilon=0.0), "epsilon"), (dict(max_iterations=0), "max_iterations")])
def test_sinkhorn_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sinkhorn(np.ones((3, 2), np.float32), **kwargs)


# ---------------------------------------------------------------------------------------------
# CBI steps.

@pytest.mark.parametrize("hyperspherical, batch_size", [(True, None), (False, 32)])
def test_cbi_lowers_transport_cost(hyperspherical, batch_size):
    features = clustered_features()
    initial = np.random.RandomState(5).randn(16, 4).astype(np.float32)
    sq = StyleQuantization(16, 4, hyperspherical=hyperspherical,
                           codebook_initializer=keras.initializers.Constant(initial))
    mapper = make_code_mapper(4, 8, hidden_units=32, seed=1)
    result = initialize_codebook(sq, features, steps=60, learning_rate=1e-2, epsilon=0.05,
                                 batch_size=batch_size, mapper=mapper)
    history = result["transport_cost"]
    assert history.shape == (60,) and np.isfinite(history).all()
    if batch_size is None:  # warm starts from the same images: capped plans stay near-exact
        assert result["marginal_error"].max() < 0.05
    assert 1 <= result["sinkhorn_iterations"].min() <= result["sinkhorn_iterations"].max() <= 100
    assert history[-5:].mean() < 0.6 * history[:5].mean()
    assert not np.allclose(sq.codebook.numpy(), initial)

    # The learned codes, mapped, are closer to the images than the initial ones were.
    def cost_of(codebook):
        codes = tf.math.l2_normalize(codebook, axis=1) if hyperspherical else codebook
        mapped = tf.math.l2_normalize(mapper(codes), axis=1).numpy()
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        cost = ((unit[:, None] - mapped[None]) ** 2).sum(-1)
        return (numpy_sinkhorn(cost, 0.05, 3000) * cost).sum()

    assert cost_of(sq.codebook.numpy()) < cost_of(initial)


def test_cbi_is_deterministic_with_a_seed(tmp_path):
    features = clustered_features(seed=6)
    path = tmp_path / "features.npy"
    np.save(path, features)
    codebooks = []
    for _ in range(2):
        sq = StyleQuantization(8, 4, codebook_initializer=keras.initializers.Constant(
            np.random.RandomState(7).randn(8, 4)))
        result = initialize_codebook(sq, str(path), steps=5, batch_size=16, seed=3,
                                     hidden_units=16)
        codebooks.append((sq.codebook.numpy(), result["transport_cost"]))
    np.testing.assert_array_equal(codebooks[0][0], codebooks[1][0])
    np.testing.assert_array_equal(codebooks[0][1], codebooks[1][1])


def test_cbi_on_a_mirrored_layer(two_replica_strategy):
    """CBI runs on one device outside the scope; every replica then holds the result."""
    with two_replica_strategy.scope():
        sq = StyleQuantization(8, 4)
        sq.build()
    before = sq.codebook.numpy()
    initialize_codebook(sq, clustered_features(), steps=3, hidden_units=16)
    replicas = two_replica_strategy.experimental_local_results(sq.codebook.value)
    assert not np.allclose(replicas[0].numpy(), before)
    np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy())
    with two_replica_strategy.scope():
        with pytest.raises(RuntimeError, match="outside `strategy.scope\\(\\)`"):
            initialize_codebook(sq, clustered_features(), steps=1)


def test_cbi_non_finite_leaves_codebook_unchanged():
    initial = np.random.RandomState(8).randn(8, 4).astype(np.float32)
    sq = StyleQuantization(8, 4, hyperspherical=False,
                           codebook_initializer=keras.initializers.Constant(initial))
    with pytest.raises(FloatingPointError, match="non-finite"):
        initialize_codebook(sq, clustered_features(), steps=3, learning_rate=1e38,
                            hidden_units=16)
    np.testing.assert_array_equal(sq.codebook.numpy(), initial)


# ---------------------------------------------------------------------------------------------
# Bad feature files and arguments: one clear error, codebook untouched.

def _bad_file(tmp_path, kind):
    path = tmp_path / f"{kind}.npy"
    if kind == "rank1":
        np.save(path, np.ones(10, np.float32))
    elif kind == "rank3":
        np.save(path, np.ones((4, 2, 3), np.float32))
    elif kind == "nan":
        array = np.ones((6, 3), np.float32)
        array[4, 1] = np.nan
        np.save(path, array)
    elif kind == "inf":
        array = np.ones((6, 3), np.float32)
        array[2, 0] = np.inf
        np.save(path, array)
    elif kind == "strings":
        np.save(path, np.array([["a", "b"], ["c", "d"]]))
    elif kind == "one_row":
        np.save(path, np.ones((1, 5), np.float32))
    elif kind == "not_npy":
        path.write_text("image,feature\n1,2\n")
    elif kind == "npz":
        path = tmp_path / "features.npz"
        np.savez(path, features=np.ones((4, 3)))
    return path


@pytest.mark.parametrize("kind, error, match", [
    ("missing", FileNotFoundError, "does not exist"),
    ("rank1", ValueError, r"2-D array \(num_images, feature_dim\), got shape \(10,\)"),
    ("rank3", ValueError, r"2-D array .* got shape \(4, 2, 3\)"),
    ("nan", ValueError, "non-finite values .* 1 of 6 rows \\(first: row 4\\)"),
    ("inf", ValueError, r"non-finite values .*\(first: row 2\)"),
    ("strings", ValueError, "must hold numbers"),
    ("one_row", ValueError, "at least 2 images"),
    ("not_npy", ValueError, "not a readable .npy array"),
    ("npz", ValueError, ".npz archive"),
])
def test_bad_feature_files(tmp_path, kind, error, match):
    path = tmp_path / "missing.npy" if kind == "missing" else _bad_file(tmp_path, kind)
    with pytest.raises(error, match=match):
        load_image_features(path)
    initial = np.random.RandomState(9).randn(8, 4).astype(np.float32)
    sq = StyleQuantization(8, 4, codebook_initializer=keras.initializers.Constant(initial))
    sq.build()
    with pytest.raises(error, match=match):
        initialize_codebook(sq, str(path), steps=2)
    np.testing.assert_array_equal(sq.codebook.numpy(), initial)


def test_load_image_features_round_trip(tmp_path):
    features = np.random.RandomState(10).randn(5, 7)
    np.save(tmp_path / "f.npy", features)
    loaded = load_image_features(tmp_path / "f.npy")
    assert loaded.dtype == np.float32 and loaded.shape == (5, 7)
    np.testing.assert_allclose(loaded, features, rtol=1e-6)  # float64 -> float32: <= 2^-24


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=0), "steps"),
    (dict(batch_size=1), "batch_size"),
    (dict(mapper="wrong_dim"), "outputs 5 features but the image features have 8"),
])
def test_cbi_bad_arguments(kwargs, match):
    if kwargs.get("mapper") == "wrong_dim":
        kwargs["mapper"] = make_code_mapper(4, 5, hidden_units=8)
    sq = StyleQuantization(8, 4)
    with pytest.raises(ValueError, match=match):
        initialize_codebook(sq, clustered_features(), **kwargs)
