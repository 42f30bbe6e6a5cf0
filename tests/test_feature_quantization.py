"""FeatureQuantization against the hand-checked numbers of ../shared/reference/fq-official.md."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from fq_keras import FeatureQuantization, codebook

# Dictionary (K=3, C=2) and NHWC input (1, 2, 2, 2) of the reference's hand-checked example.
HAND_E = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], np.float32)
HAND_H = np.array([[0.9, 0.1], [1.1, -0.1], [0.2, 0.8], [0.0, 1.2]], np.float32).reshape(1, 2, 2, 2)
HAND_COUNTS = np.array([2.0, 2.0, 0.0], np.float32)


def hand_layer(zero_debias=True, commitment_cost=0.25, **kwargs):
    return FeatureQuantization(
        3, decay=0.8, commitment_cost=commitment_cost, epsilon=1e-5, zero_debias=zero_debias,
        embeddings_initializer=keras.initializers.Constant(HAND_E), **kwargs)


def random_layer(K=16, C=8, seed=0, **kwargs):
    init = np.random.RandomState(seed).randn(K, C).astype(np.float32)
    return FeatureQuantization(K, embeddings_initializer=keras.initializers.Constant(init), **kwargs)


def numpy_debiased_ema(counts_seq, sums_seq, decay, K, eps):
    """Straight transcription of Sonnet v1 VectorQuantizerEMA with zero-debiased EMA."""
    size_b, sums_b = np.zeros(K, np.float64), np.zeros_like(sums_seq[0], np.float64)
    for t, (n, s) in enumerate(zip(counts_seq, sums_seq), start=1):
        size_b = decay * size_b + (1 - decay) * n
        sums_b = decay * sums_b + (1 - decay) * s
        N, m = size_b / (1 - decay ** t), sums_b / (1 - decay ** t)
        total = N.sum()
        e = m / ((N + eps) / (total + K * eps) * total)[:, None]
    return e, N


# ---------------------------------------------------------------------------------------------
# Hand-checked vectors.

def test_hand_lookup():
    fq = hand_layer(commitment_cost=0.25)
    out = fq.lookup(HAND_H)
    np.testing.assert_array_equal(out["indices"].numpy(), [[[0, 0], [1, 1]]])
    # Float32 mean of 8 squares <= 0.04: <= 8 eps32 * 0.04 ~ 4e-8 < 1e-6 (as the reference asks).
    np.testing.assert_allclose(out["loss"].numpy() / 0.25, 0.02, atol=1e-6)
    np.testing.assert_allclose(out["per_sample_loss"].numpy(), [0.25 * 0.02], atol=1e-6)
    # exp(-sum p log p) = 2 for p = (1/2, 1/2): ~4 float32 roundings near 2, <= 4 ulp(1) ~ 5e-7.
    np.testing.assert_allclose(out["perplexity"].numpy(), 2.0, atol=1e-6)
    np.testing.assert_array_equal(out["quantized"].numpy().reshape(4, 2), HAND_E[[0, 0, 1, 1]])


def test_hand_debiased_update():
    fq = hand_layer(zero_debias=True)
    fq.update_dictionary(HAND_H, fq.lookup(HAND_H)["indices"])
    # ~10 float32 roundings (2^-24 each) of values <= 1: <= 6e-7, + 5e-8 for 7-decimal hand values.
    np.testing.assert_allclose(
        fq.embeddings.numpy(), [[1.0000025, 0.0], [0.1000002, 1.0000025], [0.0, 0.0]], atol=1e-6)
    assert int(fq.num_updates.numpy()) == 1


def test_hand_plain_update_pytorch_variant():
    fq = hand_layer(zero_debias=False)
    fq.update_dictionary(HAND_H, fq.lookup(HAND_H)["indices"])
    e = fq.embeddings.numpy()
    # ~10 float32 roundings (2^-24 each): <= 6e-7 relative; + 5e-8 for the 7-decimal hand values.
    np.testing.assert_allclose(e[:2], [[3.0000375, 0.0], [0.1000013, 3.0000375]], rtol=1e-6,
                               atol=5e-8)
    # The unused item blows up to about -80003 (m_0 = e_0 kept, N ~ 0): rtol for that magnitude.
    np.testing.assert_allclose(e[2], [-80003.0, -80003.0], rtol=1e-5)


@pytest.mark.parametrize("zero_debias", [True, False])
def test_repeated_updates_cluster_sizes(zero_debias):
    fq = hand_layer(zero_debias=zero_debias)
    indices = fq.lookup(HAND_H)["indices"]
    for t in range(1, 8):
        fq.update_dictionary(HAND_H, indices)
        acc = fq.ema_cluster_size.numpy()
        # Values <= 2: <= 3 roundings (<= 2.4e-7) per EMA step, damped by 0.8 per step, add up to
        # <= 2.4e-7 / 0.2 * (1 - 0.8^t); debiased: / (1 - 0.8^t), so <= 1.2e-6 in both forms.
        if zero_debias:
            np.testing.assert_allclose(acc / (1 - 0.8 ** t), HAND_COUNTS, atol=1.5e-6)
        else:
            np.testing.assert_allclose(acc, HAND_COUNTS * (1 - 0.8 ** t), atol=1.5e-6)


def test_debiased_updates_match_numpy_transcription():
    rng = np.random.RandomState(1)
    fq = random_layer(K=6, C=3, decay=0.85, zero_debias=True)
    counts_seq, sums_seq = [], []
    for _ in range(5):
        h = rng.randn(4, 3, 3, 3).astype(np.float32)
        idx = fq.lookup(h)["indices"].numpy().reshape(-1)
        counts_seq.append(np.bincount(idx, minlength=6).astype(np.float64))
        sums = np.zeros((6, 3))
        np.add.at(sums, idx, h.reshape(-1, 3))
        sums_seq.append(sums)
        fq.update_dictionary(h, idx.reshape(4, 3, 3))
        e_ref, _ = numpy_debiased_ema(counts_seq, sums_seq, 0.85, 6, 1e-5)
        # Float32 cluster means of n_k <= 36 features: <= n_k eps32 mean|h| ~ 36 * 1.2e-7 * 1.5
        # ~ 6e-6 worst, + ~10 roundings (2^-24) of |e| < 3 ~ 2e-6: < 1e-5.
        np.testing.assert_allclose(fq.embeddings.numpy(), e_ref, atol=1e-5)


def test_lookup_matches_numpy_brute_force():
    rng = np.random.RandomState(2)
    fq = random_layer(K=32, C=5)
    h = rng.randn(3, 4, 4, 5).astype(np.float32)
    indices = fq.lookup(h)["indices"].numpy().reshape(-1)
    d = ((h.reshape(-1, 1, 5) - fq.embeddings.numpy()[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(indices, d.argmin(1))


def test_nearest_item_is_the_first_of_equal_items_and_the_exact_arg_min_of_the_distances():
    # Exact ties: items 1, 3 and 6 are copies of one vector, items 2 and 5 of another.
    rng = np.random.RandomState(4)
    codes = rng.randn(7, 6).astype(np.float32)
    codes[3] = codes[6] = codes[1]
    codes[5] = codes[2]
    h = np.concatenate([codes[[1, 2, 3, 5, 6]] + 1e-3 * rng.randn(5, 6).astype(np.float32),
                        rng.randn(200, 6).astype(np.float32)])
    indices = codebook.nearest_code_indices(tf.constant(h), tf.constant(codes)).numpy()
    assert indices.dtype == np.int32 and indices.shape == (205,)
    np.testing.assert_array_equal(indices[:5], [1, 2, 1, 2, 1])
    assert set(indices) <= {0, 1, 2, 4}
    # The same arg-min, first index on ties, as TensorFlow's over ||e||^2 - 2 h.e in float32.
    scores = tf.reduce_sum(tf.square(codes), 1) - 2.0 * tf.matmul(tf.constant(h), codes,
                                                                  transpose_b=True)
    np.testing.assert_array_equal(indices, tf.argmin(scores, axis=1).numpy())



@pytest.mark.parametrize("n, c", [(8192, 256), (512, 64)])
def test_code_sums_add_the_rows_in_row_order(n, c):
    """The dictionary's feature sums are the rows added into their items one after another in
    row order, bit for bit (numpy's unbuffered np.add.at), eagerly and in a graph, by either
    kernel (XLA's scatter from XLA_SUMS_MIN_ELEMENTS on, ScatterNd below; the large batch is
    also large enough for the CPU kernels to share rows between threads): the update's numbers
    do not depend on the batch size, the thread count or the run."""
    assert (n * c >= codebook.XLA_SUMS_MIN_ELEMENTS) == (n == 8192)   # one case per kernel
    rng = np.random.RandomState(7)
    k = 64
    # Magnitudes over six decades: another summation order changes the rounding.
    rows = (rng.randn(n, c) * 10.0 ** rng.uniform(-3, 3, (n, 1))).astype(np.float32)
    indices = rng.randint(0, k, n).astype(np.int32)
    expected = np.zeros((k, c), np.float32)
    np.add.at(expected, indices, rows)
    for sums in (codebook.code_sums(tf.constant(rows), tf.constant(indices), k),
                 tf.function(codebook.code_sums)(tf.constant(rows), tf.constant(indices), k)):
        assert sums.shape == (k, c) and sums.dtype == tf.float32
        np.testing.assert_array_equal(sums.numpy(), expected)
    # The rows added in reverse order differ: the comparison above can see the order.
    reverse = np.zeros((k, c), np.float32)
    np.add.at(reverse, indices[::-1], rows[::-1])
    assert np.any(reverse != expected)

@pytest.mark.parametrize("rows", [6, codebook.XLA_SUMS_MIN_ELEMENTS // 4])
@pytest.mark.parametrize("bad", [-1, 8])
def test_update_with_an_index_outside_the_dictionary_raises_and_writes_nothing(bad, rows):
    """An item index outside [0, K) is an error, eagerly and in a graph, and the dictionary is
    left as it was, with either kernel of code_sums (XLA's scatter, used for the larger batch,
    would silently drop the row)."""
    fq = random_layer(K=8, C=4)
    h = np.random.RandomState(5).randn(rows, 4).astype(np.float32)
    indices = fq.lookup(h)["indices"].numpy()
    before = [v.numpy().copy() for v in fq.non_trainable_weights]
    indices[3] = bad
    for update in (fq.update_dictionary, tf.function(fq.update_dictionary)):
        # In a graph the counts' Bincount may be the first to see a negative index.
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"indices must be in \[0, 8\)|must be non-negative|"
                                 r"does not index into shape \[8,4\]"):
            update(tf.constant(h), tf.constant(indices))
        for old, variable in zip(before, fq.non_trainable_weights):
            np.testing.assert_array_equal(variable.numpy(), old)


def test_rank2_inputs():
    fq = random_layer(K=8, C=4)
    h = np.random.RandomState(3).randn(10, 4).astype(np.float32)
    out = fq.lookup(h)
    assert out["indices"].shape == (10,)
    assert out["quantized"].shape == (10, 4)
    assert out["per_sample_loss"].shape == (10,)


# ---------------------------------------------------------------------------------------------
# Gradients.

def test_commitment_gradient_and_no_dictionary_gradient():
    c = 0.25
    fq = random_layer(K=8, C=4, commitment_cost=c)
    h = tf.Variable(np.random.RandomState(4).randn(2, 3, 3, 4).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        out = fq.lookup(h)
        loss = out["loss"]
    grad_h = tape.gradient(loss, h).numpy()
    expected = 2.0 * c * (h.numpy() - out["quantized"].numpy()) / h.numpy().size
    # Elementwise, <= 4 float32 roundings: <= 4 * 2^-24 ~ 2.4e-7 relative << rtol; atol is inert.
    np.testing.assert_allclose(grad_h, expected, rtol=1e-5, atol=1e-8)
    assert tape.gradient(loss, fq.embeddings.value) is None
    assert fq.trainable_weights == []
    # The per-sample losses under per-sample weights (as the global-batch scaling weights them)
    # and in a graph: sample n's gradient is 2 c w_n (h - e_k) / M, M = 3 * 3 * 4 elements.
    weights = tf.constant([0.5, 3.0])

    @tf.function
    def weighted_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = tf.reduce_sum(fq.lookup(x)["per_sample_loss"] * weights)
        return tape.gradient(value, x)

    expected = (2.0 * c * (h.numpy() - out["quantized"].numpy()) / 36
                * weights.numpy()[:, None, None, None])
    np.testing.assert_allclose(weighted_gradient(tf.convert_to_tensor(h)).numpy(), expected,
                               rtol=1e-5, atol=1e-8)   # as above


def test_optimizer_step_leaves_dictionary_unchanged():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    fq = random_layer(K=8, C=4, forward="quantized")
    x = fq(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
    before = fq.embeddings.numpy().copy()
    optimizer = keras.optimizers.Adam(0.1)
    h = np.random.RandomState(5).randn(2, 4, 4, 3).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(h) ** 2) + fq.lookup(model.layers[1](h))["loss"]
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    assert all(g is not None for g in grads)
    np.testing.assert_array_equal(fq.embeddings.numpy(), before)


def test_quantized_forward_is_straight_through():
    fq = random_layer(K=8, C=4, forward="quantized")
    h = tf.Variable(np.random.RandomState(6).randn(2, 3, 3, 4).astype(np.float32))
    weights = tf.constant(np.random.RandomState(7).randn(2, 3, 3, 4).astype(np.float32))
    with tf.GradientTape() as tape:
        out = fq(h)
        objective = tf.reduce_sum(out * weights)
    # h + (e - h): 2 roundings of values < 4 (randn): <= 2 * ulp(4) / 2 = 4.8e-7 < 1e-6.
    np.testing.assert_allclose(out.numpy(), fq.lookup(h)["quantized"].numpy(), atol=1e-6)
    # d(h + sg(.))/dh passes the upstream gradient through unchanged: exact.
    np.testing.assert_array_equal(tape.gradient(objective, h).numpy(), weights.numpy())


def test_quantized_forward_switch_feeds_h_when_off_and_h_plus_sg_e_minus_h_when_on():
    """The paper's warm-up switch: s = 0 gives h exactly, s = 1 (the default, so a layer used
    outside a trainer behaves as before) h + sg(e - h) as float32 computes it."""
    fq = random_layer(K=8, C=4, forward="quantized")
    h = np.random.RandomState(9).randn(2, 3, 3, 4).astype(np.float32)
    out_on = fq(h).numpy()
    assert float(fq.quantized_forward.numpy()) == 1.0 and not fq.quantized_forward.trainable
    q = fq.lookup(h)["quantized"].numpy()
    np.testing.assert_array_equal(out_on, h + (q - h))      # same float32 ops: exact
    fq.quantized_forward.assign(0.0)
    np.testing.assert_array_equal(fq(h).numpy(), h)
    # Continuous layers have no switch (their checkpoints are unchanged).
    assert not hasattr(random_layer(K=8, C=4), "quantized_forward")


def test_continuous_forward_returns_inputs_and_lookup_on_request():
    fq = random_layer(K=8, C=4)
    h = tf.constant(np.random.RandomState(8).randn(2, 3, 3, 4).astype(np.float32))
    assert fq(h) is h
    out, result = fq(h, return_lookup=True)
    np.testing.assert_array_equal(out.numpy(), h.numpy())
    np.testing.assert_array_equal(result["indices"].numpy(), fq.lookup(h)["indices"].numpy())


def test_look_ups_of_lanes_merge_into_the_whole_batch_look_up():
    """merge_lookups of the look-ups of strided parts (BatchLanes) is the whole batch's
    look-up: the same items, per-sample losses, counts and perplexity, and features row for row
    aligned with the indices (what update_dictionary reads)."""
    from networks.layers import BatchLanes
    fq = random_layer(K=8, C=4)
    h = tf.constant(np.random.RandomState(9).randn(6, 3, 3, 4).astype(np.float32))
    lanes = BatchLanes(2)
    merged = fq.merge_lookups([fq.lookup(h[j::2]) for j in range(2)], lanes.merge)
    whole = fq.lookup(h)
    assert set(merged) == set(whole)
    for key in ("quantized", "indices", "features", "per_sample_loss"):
        np.testing.assert_array_equal(merged[key].numpy(), whole[key].numpy(), err_msg=key)
    for key in ("loss", "perplexity"):   # means of the same numbers, summed in another order
        np.testing.assert_allclose(merged[key].numpy(), whole[key].numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Usage statistics.

def test_perplexity_uniform_and_single():
    K = 4
    fq = FeatureQuantization(K, embeddings_initializer=keras.initializers.Constant(np.eye(K) * 3))
    uniform = np.tile(np.eye(K, dtype=np.float32) * 3, (5, 1))  # every item 5 times
    out = fq.lookup(uniform)
    np.testing.assert_allclose(out["perplexity"].numpy(), K, rtol=1e-5)
    stats = fq.update_dictionary(uniform, out["indices"])
    np.testing.assert_allclose(stats["perplexity"].numpy(), K, rtol=1e-5)
    assert fq.usage_statistics()["unused_fraction"] == 0.0

    single = np.tile(np.eye(K, dtype=np.float32)[:1] * 3, (7, 1))
    out = fq.lookup(single)
    np.testing.assert_allclose(out["perplexity"].numpy(), 1.0, rtol=1e-5)
    fq.update_dictionary(single, out["indices"])
    usage = fq.usage_statistics()
    np.testing.assert_allclose(usage["perplexity"], 1.0, rtol=1e-5)
    assert usage["unused_fraction"] == pytest.approx(0.75)
    assert usage["num_updates"] == 2


# ---------------------------------------------------------------------------------------------
# tf.distribute, mixed precision, XLA.

def _lookup_and_update(fq, h):
    fq.update_dictionary(h, fq.lookup(h)["indices"])


@pytest.mark.parametrize("zero_debias", [True, False])
def test_two_replicas_equal_one_device(two_replica_strategy, zero_debias):
    rng = np.random.RandomState(9)
    init = rng.randn(16, 8).astype(np.float32)
    # Features on a 1/8 grid (|h| < 8): every per-replica, all-reduced or one-device cluster sum
    # is exact in float32 (<= 128 terms: < 2^13 on a 2^-3 grid), so both runs see the same
    # counts and sums and then do the same elementwise EMA arithmetic: bit-equal results.
    batches = [(np.round(rng.randn(8, 4, 4, 8) * 8) / 8).astype(np.float32) for _ in range(3)]

    single = FeatureQuantization(16, zero_debias=zero_debias,
                                 embeddings_initializer=keras.initializers.Constant(init))
    step = tf.function(lambda h: _lookup_and_update(single, h))
    for h in batches:
        step(h)

    strategy = two_replica_strategy
    with strategy.scope():
        mirrored = FeatureQuantization(16, zero_debias=zero_debias,
                                       embeddings_initializer=keras.initializers.Constant(init))
        mirrored.build((None, 4, 4, 8))

    @tf.function
    def distributed_step(h):
        strategy.run(lambda x: _lookup_and_update(mirrored, x), args=(h,))

    for h in batches:
        halves = strategy.experimental_distribute_values_from_function(
            lambda ctx, h=h: h[ctx.replica_id_in_sync_group * 4:(ctx.replica_id_in_sync_group + 1) * 4])
        distributed_step(halves)

    for name in ("embeddings", "ema_cluster_size", "ema_embedding_sums", "num_updates"):
        replicas = strategy.experimental_local_results(getattr(mirrored, name).value)
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0].numpy(), replicas[1].numpy())
        np.testing.assert_array_equal(replicas[0].numpy(), getattr(single, name).numpy())


def test_mixed_precision(mixed_precision):
    half = mixed_precision
    fq = random_layer(K=8, C=4, forward="quantized")
    h = tf.constant(np.random.RandomState(10).randn(2, 3, 3, 4) * 100, half.dtype)
    out = fq(h)
    assert out.dtype == half.dtype
    result = fq.lookup(h)
    assert result["quantized"].dtype == half.dtype
    assert result["loss"].dtype == tf.float32
    for _ in range(3):
        fq.update_dictionary(h, fq.lookup(h)["indices"])
    assert fq.embeddings.dtype == "float32"
    assert np.all(np.isfinite(fq.embeddings.numpy()))
    assert np.isfinite(fq.lookup(h)["loss"].numpy())


def test_xla_compiled_step_matches_eager():
    rng = np.random.RandomState(11)
    # A 1/8 grid makes the cluster sums exact in any order (64 terms |h| < 8: < 2^10 on 2^-3).
    h = (np.round(rng.randn(4, 4, 4, 8) * 8) / 8).astype(np.float32)
    eager, compiled = random_layer(K=16, C=8), random_layer(K=16, C=8)
    _lookup_and_update(eager, h)
    tf.function(lambda x: _lookup_and_update(compiled, x), jit_compile=True)(h)
    # Left: ~10 elementwise roundings (pow, EMA, smoothing, divide), 2^-24 each: <= 6e-7 relative.
    np.testing.assert_allclose(compiled.embeddings.numpy(), eager.embeddings.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# State round trips.

def _state(fq):
    return {w.path: w.numpy().copy() for w in fq.weights}


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.RandomState(12)
    fq = random_layer(K=8, C=4, decay=0.9)
    for _ in range(3):
        _lookup_and_update(fq, rng.randn(2, 3, 3, 4).astype(np.float32))
    saved = _state(fq)
    path = tf.train.Checkpoint(fq=fq).write(str(tmp_path / "ckpt"))

    restored = random_layer(K=8, C=4, decay=0.9, seed=99)
    restored.build((None, 3, 3, 4))
    tf.train.Checkpoint(fq=restored).read(path).assert_consumed()
    for name, value in _state(restored).items():
        np.testing.assert_array_equal(value, saved[name.replace(restored.name, fq.name)])
    # Same state, same next update.
    h = rng.randn(2, 3, 3, 4).astype(np.float32)
    _lookup_and_update(fq, h)
    _lookup_and_update(restored, h)
    np.testing.assert_array_equal(restored.embeddings.numpy(), fq.embeddings.numpy())


def test_keras_serialization_round_trip(tmp_path):
    inputs = keras.Input((3, 3, 4))
    fq = FeatureQuantization(8, decay=0.7, commitment_cost=2.0, epsilon=1e-4, zero_debias=False,
                             forward="quantized")
    model = keras.Model(inputs, fq(inputs))
    rng = np.random.RandomState(13)
    for _ in range(2):
        _lookup_and_update(fq, rng.randn(2, 3, 3, 4).astype(np.float32))
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    fq2 = loaded.layers[-1]
    assert isinstance(fq2, FeatureQuantization)
    for key in ("num_embeddings", "decay", "commitment_cost", "epsilon", "zero_debias", "forward"):
        assert getattr(fq2, key) == getattr(fq, key)
    for a, b in zip(fq.weights, fq2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    h = rng.randn(2, 3, 3, 4).astype(np.float32)
    np.testing.assert_array_equal(loaded(h).numpy(), model(h).numpy())


# ---------------------------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize("kwargs, match", [
    (dict(num_embeddings=1), "num_embeddings"),
    (dict(num_embeddings=8.0), "num_embeddings"),
    (dict(num_embeddings=8, decay=1.0), "decay"),
    (dict(num_embeddings=8, decay=0.0), "decay"),
    (dict(num_embeddings=8, epsilon=0.0), "epsilon"),
    (dict(num_embeddings=8, commitment_cost=-1.0), "commitment_cost"),
    (dict(num_embeddings=8, forward="hard"), "forward"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureQuantization(**kwargs)


def test_channel_mismatch():
    fq = random_layer(K=8, C=4)
    fq.lookup(np.zeros((1, 2, 2, 4), np.float32))
    with pytest.raises(ValueError, match="5 channels but the dictionary has 4"):
        fq.lookup(np.zeros((1, 2, 2, 5), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_never_touch_the_dictionary(bad):
    fq = random_layer(K=8, C=4)
    h = np.random.RandomState(14).randn(2, 2, 2, 4).astype(np.float32)
    indices = fq.lookup(h)["indices"]
    h[0, 1, 1, 2] = bad
    before = _state(fq)
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite features"):
        fq.update_dictionary(h, indices)
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite features"):
        tf.function(lambda x: fq.update_dictionary(x, indices))(h)
    for name, value in _state(fq).items():
        np.testing.assert_array_equal(value, before[name])


# ---------------------------------------------------------------------------------------------
# Memory: distances by matrix products.

def test_no_n_by_k_by_c_tensor_in_graph():
    """64x64x256 features, K=1024: no intermediate in lookup + update has N*K*C elements."""
    fq = FeatureQuantization(1024)
    fq.build((None, 64, 64, 256))

    @tf.function
    def step(h):
        fq.update_dictionary(h, fq.lookup(h)["indices"])

    graph = step.get_concrete_function(tf.TensorSpec((1, 64, 64, 256), tf.float32)).graph
    largest = max(
        (np.prod(t.shape.as_list()) for op in graph.get_operations() for t in op.outputs
         if t.shape.rank and t.shape.is_fully_defined()), default=0)
    n, k, c = 64 * 64, 1024, 256
    assert largest == n * k  # the (N, K) distance matrix is the largest tensor
    assert largest < n * k * c
