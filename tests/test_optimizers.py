"""training/optimizers.py: the fused Adam is Keras' (TF1's) Adam; replicas, sparse gradients, XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.optimizers import Adam, lazy_adam

EPS32 = np.finfo(np.float32).eps


def gradients(steps, shape, seed=0):
    """Fixed gradient sequences (they do not depend on the weights), mixed magnitudes."""
    rng = np.random.RandomState(seed)
    scale = np.exp(rng.uniform(-12, 2, shape))
    return [(rng.randn(*shape) * scale).astype(np.float32) for _ in range(steps)]


@pytest.mark.parametrize("betas, interval", [((0.0, 0.99), 16), ((0.0, 0.99), 4), ((0.5, 0.999), 1)])
def test_fused_adam_equals_keras_adam(betas, interval):
    """Same start, same gradients, 6 steps (lazy ratios as StyleGAN2's G and D).

    The kernel forms 1 - b1 and 1 - b2 from the float32 betas, Keras from the float64 ones
    then rounded: a relative difference up to ulp(b2) / (1 - b2) = 6e-8 / 0.0094 = 6.3e-6 in v's
    increment, 3.2e-6 in sqrt(v) and so in each update (m is exact for b1 = 0 and 0.5). Bound:
    1e-5 of the summed update magnitudes, plus one float32 rounding of |w| per step and side."""
    steps, shape = 6, (7, 33)
    init = np.random.RandomState(1).randn(*shape).astype(np.float32)
    grads = gradients(steps, shape)
    fused, c = lazy_adam(2e-3, betas, 1e-8, interval)
    reference = keras.optimizers.Adam(2e-3 * c, beta_1=betas[0] ** c, beta_2=betas[1] ** c,
                                      epsilon=1e-8)
    w_fused, w_ref = tf.Variable(init), tf.Variable(init)
    moved = np.zeros(shape, np.float32)
    for g in grads:
        before = w_ref.numpy()
        fused.apply([tf.constant(g)], [w_fused])
        reference.apply([tf.constant(g)], [w_ref])
        moved += np.abs(w_ref.numpy() - before)
    assert moved.max() > 1e-3  # the weights really moved
    bound = 1e-5 * moved + 2 * steps * EPS32 * np.abs(init).max()
    np.testing.assert_array_less(np.abs(w_fused.numpy() - w_ref.numpy()), bound + 1e-30)
    assert int(fused.iterations.numpy()) == steps
    # Slots are Keras' own (checkpoints keep their keys): momentum and velocity per variable.
    names = sorted(v.path.split("/")[-1] for v in fused.variables if v.shape == shape)
    assert len(names) == 2 and names[0].endswith("momentum") and names[1].endswith("velocity")


@pytest.mark.parametrize("compiled", [False, True])
def test_one_step_over_several_variables_and_dtypes_is_keras_adam(compiled):
    """The step's scalars (lr, b1^t, b2^t, eps) are made once per step, device and dtype: one
    apply over float32 and float64 variables moves each as Keras' Adam does, over steps with a
    new learning rate each (nothing of a step is kept for the next). Bound as in
    `test_fused_adam_equals_keras_adam`."""
    shapes = [((4, 3), "float32"), ((5,), "float64"), ((2, 2), "float32")]
    rng = np.random.RandomState(4)
    inits = [rng.randn(*shape).astype(dtype) for shape, dtype in shapes]
    fused = Adam(1e-2, beta_1=0.5, beta_2=0.9, name="fused")
    reference = keras.optimizers.Adam(1e-2, beta_1=0.5, beta_2=0.9, name="reference")
    w_fused = [keras.Variable(init, dtype=init.dtype) for init in inits]
    w_ref = [keras.Variable(init, dtype=init.dtype) for init in inits]
    fused.build(w_fused)   # slots outside the tf.function, as the trainers build them
    reference.build(w_ref)

    def applier(optimizer, variables):   # variables captured, as in the trainers' steps
        def apply(*grads):
            optimizer.apply(list(grads), variables)
        return tf.function(apply, autograph=False) if compiled else apply

    apply_fused, apply_ref = applier(fused, w_fused), applier(reference, w_ref)
    steps = 3
    moved = [np.zeros(shape) for shape, _ in shapes]
    for step in range(steps):
        grads = [tf.constant(rng.randn(*shape).astype(dtype)) for shape, dtype in shapes]
        for optimizer in (fused, reference):
            optimizer.learning_rate.assign(1e-2 * (step + 1))
        before = [w.numpy() for w in w_ref]
        apply_fused(*grads)
        apply_ref(*grads)
        for m, w, b in zip(moved, w_ref, before):
            m += np.abs(w.numpy() - b)
    for a, b, init, m in zip(w_fused, w_ref, inits, moved):
        assert a.dtype == init.dtype and m.min() > 1e-3
        bound = 1e-5 * m + 2 * steps * EPS32 * np.abs(init).max()
        np.testing.assert_array_less(np.abs(a.numpy() - b.numpy()), bound)


def test_two_replicas_hold_the_single_device_update(two_replica_strategy):
    """Each replica contributes half the gradient (exact in binary), all-reduced to the whole:
    every replica's weights and slots equal the single-device run bit for bit."""
    shape = (5, 9)
    init = np.random.RandomState(2).randn(*shape).astype(np.float32)
    grads = gradients(3, shape, seed=3)
    single, w_single = Adam(1e-3, beta_1=0.0, beta_2=0.99, name="single"), tf.Variable(init)
    for g in grads:
        single.apply([tf.constant(g)], [w_single])
    strategy = two_replica_strategy
    with strategy.scope():
        w = tf.Variable(init)
        mirrored = Adam(1e-3, beta_1=0.0, beta_2=0.99, name="mirrored")
        mirrored.build([w])

    @tf.function
    def step(g):
        strategy.run(lambda: mirrored.apply([g * 0.5], [w]))

    for g in grads:
        step(tf.constant(g))
    for value in strategy.experimental_local_results(w):
        np.testing.assert_array_equal(value.numpy(), w_single.numpy())
    for a, b in zip(single.variables, mirrored.variables):
        for value in strategy.experimental_local_results(b.value):
            np.testing.assert_array_equal(value.numpy(), a.numpy(), err_msg=a.path)


def test_sparse_gradients_update_as_their_dense_form():
    """An embedding's gradient arrives as IndexedSlices (rows 1 and 3, row 1 twice); the fused
    kernel is dense, so it gets the densified sum: the same as applying the dense gradient."""
    table = np.random.RandomState(4).randn(5, 3).astype(np.float32)
    sparse_var, dense_var = tf.Variable(table), tf.Variable(table)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.gather(sparse_var, [1, 3, 1]) * tf.constant([[1.0, 2.0, 3.0]]))
    grad = tape.gradient(loss, sparse_var)
    assert isinstance(grad, tf.IndexedSlices)
    Adam(0.1, name="sparse").apply([grad], [sparse_var])
    Adam(0.1, name="dense").apply([tf.convert_to_tensor(grad)], [dense_var])
    np.testing.assert_array_equal(sparse_var.numpy(), dense_var.numpy())
    changed = np.any(sparse_var.numpy() != table, axis=1)
    assert changed.tolist() == [False, True, False, True, False]


def test_xla_compiled_update_equals_the_eager_kernel():
    """XLA's compiled update evaluates the same element-wise formula; its fusions may round
    alpha * m / (sqrt(v) + eps) in another order: a few ulps of each update (~lr), so 1e-5 of lr
    per step plus one rounding of |w| per step."""
    shape, steps = (4, 6), 3
    init = np.random.RandomState(5).randn(*shape).astype(np.float32)
    grads = gradients(steps, shape, seed=6)
    eager, w_eager = Adam(1e-2, beta_1=0.0, beta_2=0.99, name="eager"), tf.Variable(init)
    xla, w_xla = Adam(1e-2, beta_1=0.0, beta_2=0.99, name="xla"), tf.Variable(init)
    xla.build([w_xla])
    compiled = tf.function(lambda g: xla.apply([g], [w_xla]), jit_compile=True)
    for g in grads:
        eager.apply([tf.constant(g)], [w_eager])
        compiled(tf.constant(g))
    assert np.abs(w_eager.numpy() - init).max() > 1e-3
    np.testing.assert_allclose(w_xla.numpy(), w_eager.numpy(), rtol=0,
                               atol=steps * (1e-5 * 1e-2 + EPS32 * np.abs(init).max()))
