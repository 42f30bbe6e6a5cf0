"""FQ's own work in one StyleGAN2 training iteration, timed alone.

An A/B of whole steps (FQ on / off) resolves about 1% only with many copies of each step
(identical copies run a few percent apart, `timing.time_copies`). FQ's own ops timed alone, on
the machine with nothing else running, are a precise figure beside it: what FQ would add to an
iteration that overlapped none of it. In a step FQ's ops run beside the others (the look-ups
branch off D's forward pass, the update after it), so where the step leaves a core idle part
of the way they cost less (the StyleGAN2 demo, one thread per op: 1.1% of an iteration alone,
about 0 in the A/B), and contention for caches and memory bandwidth is not in the figure.

One iteration's FQ work with the default update cadence ("step", `fq_keras.gan`), per FQ layer
of the discriminator: G main's look-up of the fakes, D main's look-ups of the reals and of the
fakes (in the trainer's D-step lanes, one look-up per lane), each with the commitment loss's
gradient to the features, and one dictionary update from the reals and fakes together. The
layers are fresh copies of the discriminator's (same K, C, decay), so the step's own
dictionaries are left alone; the features are random, in the discriminator's compute dtype, of
the shape block R's FQ quantises: (batch, R / 2, R / 2, C).
"""

import numpy as np

from timing import function_runner, interleaved_times


def fq_iteration(discriminator, batch, lanes=1):
    """(run, sync, layers): run / sync (`timing.interleaved_times`) of one iteration's FQ work
    for `discriminator`'s FQ layers (`D.fq_blocks`, `D.fq_layers`) at per-replica `batch`, the
    D step's fakes in `lanes` look-ups of batch / lanes samples; layers: the fresh copies the
    work uses, one per FQ layer."""
    import tensorflow as tf
    from fq_keras import FeatureQuantization

    dtype = discriminator.compute_dtype
    work = []
    for block, layer in zip(discriminator.fq_blocks, discriminator.fq_layers):
        fq = FeatureQuantization.from_config(layer.get_config())
        shape = (batch, block // 2, block // 2, layer.channels)
        fq.build(shape)
        g_fakes, reals, fakes = (tf.Variable(tf.cast(tf.random.normal(shape), dtype))
                                 for _ in range(3))
        work.append((fq, g_fakes, reals, fakes))

    def lookup_with_gradient(fq, features, parts=1):
        with tf.GradientTape() as tape:
            tape.watch(features)
            results = [fq.lookup(part) for part in tf.split(features, parts)]
            loss = tf.add_n([tf.reduce_sum(r["per_sample_loss"]) for r in results])
        gradient = tape.gradient(loss, features)
        indices = tf.concat([r["indices"] for r in results], 0)
        return indices, gradient

    @tf.function
    def step():
        outputs = []
        for fq, g_fakes, reals, fakes in work:
            _, g_gradient = lookup_with_gradient(fq, g_fakes.value())
            real_indices, real_gradient = lookup_with_gradient(fq, reals.value())
            fake_indices, fake_gradient = lookup_with_gradient(fq, fakes.value(), lanes)
            fq.update_dictionary([reals, fakes], [real_indices, fake_indices])
            # One element of each gradient: the caller waits for all of them.
            outputs += [tf.reshape(g, [-1])[0] for g in (g_gradient, real_gradient,
                                                            fake_gradient)]
        return tf.add_n([tf.cast(o, tf.float32) for o in outputs])

    run, sync = function_runner(step)
    return run, sync, [fq for fq, *_ in work]


def time_fq_iteration(discriminator, batch, lanes=1, repeats=21, calls=5):
    """Median seconds of one iteration's FQ work (`fq_iteration`), `repeats` repeats of
    `calls` calls each after a warm-up; None when `discriminator` has no FQ layers."""
    if not discriminator.fq_layers:
        return None
    run, sync, _ = fq_iteration(discriminator, batch, lanes)
    times = interleaved_times({"fq": (run, sync)}, repeats, steps=calls)
    return float(np.median(times["fq"]))
