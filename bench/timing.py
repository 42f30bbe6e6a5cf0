"""Interleaved timing shared by the benchmarks.

Variants built in one process run back to back, in an order that alternates from repeat to
repeat (`repeat_order`), and an overhead is the median of the repeats' paired ratios
(`paired_ratio`): the machine's drift between repeats (several percent on a shared host) cancels
in each ratio, which whole-run medians of each variant do not resolve at the ~1% level.
Identical copies of one compiled step differ by a few percent, so an A/B figure pools copies of
each variant built in a balanced order (`balanced_copies`, `pooled_times`) and states the error
from their spread (`between_copies_error`); `time_copies` does all of it for a script, and
`describe_overhead` prints the result. Steps of several seconds whose schedule repeats in a
cycle (bench_peer.py) interleave item by item instead (`interleaved_cycles`).
"""

import contextlib
import logging
import time

import numpy as np


def constant_batches(reals, labels):
    """An iterator repeating one (reals, labels) batch: a step's input without data-pipeline
    time."""
    import tensorflow as tf
    return iter(tf.data.Dataset.from_tensors((reals, labels)).repeat())


def repeat_order(names, repeat):
    """The variants' order in repeat `repeat` (0-based): as given on even repeats, reversed on
    odd ones, so neighbours run back to back and each goes first half of the time."""
    names = list(names)
    return names if repeat % 2 == 0 else names[::-1]


def balanced_copies(names, copies):
    """[(name, copy)] to build `copies` copies of each variant in, balancing the build order.

    Identical copies of one compiled step run a few percent apart, and a copy built earlier
    ~1% slower than one built later (Intel Xeon, 2026-12-05): with two variants, building
    them a, b, b, a, a, b, ... cancels a linear trend, and averaging the copies
    (`pooled_times`) the rest, on average (`between_copies_error` is what remains).
    """
    names = list(names)
    return [(name, copy) for copy in range(copies)
            for name in (names if copy % 2 == 0 else names[::-1])]


def pooled_times(times, copies):
    """{(name, copy): [seconds]} -> {name: [mean over the copies of entry i]}; entries keyed by
    a plain name (a variant built once) pass through."""
    pooled = {key: value for key, value in times.items() if not isinstance(key, tuple)}
    for name in dict.fromkeys(key[0] for key in times if isinstance(key, tuple)):
        pooled[name] = list(np.mean([times[(name, c)] for c in range(copies)], axis=0))
    return pooled


class _RetracingWarningFilter(logging.Filter):
    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def quiet_retracing():
    """Within the block, TensorFlow's "N out of the last N calls to <function> triggered
    tf.function retracing" warning is dropped (every other log record passes): a benchmark
    that builds copies of one step traces a new function per copy on purpose, and TensorFlow
    counts the copies' traces together (one call-statistics key per Python function)."""
    logger = logging.getLogger("tensorflow")
    quiet = _RetracingWarningFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def function_runner(fn, *args):
    """(run, sync) for `interleaved_times` of a function returning tensors: run() calls
    fn(*args), sync() reads the last call's result to numpy (waits for it)."""
    import tensorflow as tf
    last = []

    def run():
        last[:] = [fn(*args)]

    def sync():
        if last:
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, last[0])

    return run, sync


def time_copies(builders, copies, repeats, steps=1, warmup=1, prefix="  ", singles=None):
    """Builds `copies` copies of each variant and times them all interleaved.

    Copies are built in `balanced_copies` order, each run once untimed right after it is built
    (tracing / compiling, without TensorFlow's retracing warning: `quiet_retracing`; printed as `<prefix>compiled <name> #<copy> in <seconds> s`, without
    the #<copy> for one copy), then every copy is timed by `interleaved_times`, so copy i of
    each variant are neighbours in time.

    Args:
      builders: {name: build} with build() -> (run, sync) as `interleaved_times` takes them,
        called once per copy (each call must build and trace its own step); names are strings.
      copies: copies of each variant (1: single-copy figures, no between-copies error).
      repeats, steps, warmup: as `interleaved_times`.
      prefix: indentation of the printed compile lines.
      singles: {name: build} of variants built once, after the copies, and timed in the same
        repeats (figures beside the A/B pair, e.g. a speed-up of one setting).

    Returns:
      (times, pooled): {(name, copy): [seconds per step of each repeat]} (and {name: [...]}
      for the singles), what `between_copies_error` takes, and {name: [mean over the copies
      of repeat i's seconds per step]} (`pooled_times`; the singles' own times), what
      `paired_ratio` / `describe_overhead` take.
    """
    order = [((name, copy), builders[name], f"{name} #{copy + 1}" if copies > 1 else name)
             for name, copy in balanced_copies(builders, copies)]
    order += [(name, build, name) for name, build in (singles or {}).items()]
    variants = {}
    with quiet_retracing():
        for key, build, label in order:
            run, sync = build()
            start = time.perf_counter()
            run()
            sync()
            print(f"{prefix}compiled {label:30s} in {time.perf_counter() - start:6.1f} s",
                  flush=True)
            variants[key] = run, sync
    times = interleaved_times(variants, repeats, steps, warmup)
    return times, pooled_times(times, copies)


def interleaved_times(variants, repeats, steps=1, warmup=1):
    """Seconds per step of each variant, timed interleaved.

    Args:
      variants: {name: (run, sync)}: run() starts one step, sync() waits for every step started
        (e.g. reads a counter the step updates).
      repeats: timed blocks per variant; repeat i runs the variants in `repeat_order(.., i)`.
      steps: steps per timed block (the block's time is divided by it).
      warmup: untimed steps before each timed block. Without them a block starts with whatever
        the previous variant left in the caches: the variants at the ends of the alternating
        order follow themselves every other repeat and start warm, the others cold, which made
        the end ones ~2% faster at the demo's 40 ms step (Intel Xeon, 2026-12-05).

    Returns:
      {name: [seconds per step of each repeat]}, entry i of every variant from repeat i.
    """
    times = {name: [] for name in variants}
    for repeat in range(repeats):
        for name in repeat_order(variants, repeat):
            run, sync = variants[name]
            for _ in range(warmup):
                run()
            sync()
            start = time.perf_counter()
            for _ in range(steps):
                run()
            sync()
            times[name].append((time.perf_counter() - start) / steps)
    return times


def interleaved_cycles(variants, cycle, repeats):
    """Seconds per cycle of each variant, timed interleaved item by item.

    Per repeat, each item of `cycle` (e.g. one iteration's phases of a lazy schedule) runs on
    every variant back to back, in an order that alternates from item to item
    (`repeat_order`), with a sync after each; a variant's cycle time is the sum of its items'.
    A variant's items are thus seconds, not a whole cycle, apart from the others': on a shared
    2-core host whose speed wanders by several percent within a minute, pairing 3-s iterations
    rather than 50-s cycles (`interleaved_times`) took the error of the reference setting's FQ
    on / off ratio at 32x32 from +- 2.2% over the repeats and +- 1.4 between copies (8 repeats,
    4 copies each, 58 min) to +- 0.6 over the repeats in two runs of 2 copies each (10 and
    8 repeats, 35 and 29 min), +- 0.4 and +- 1.8 between copies (AMD EPYC, 2 cores,
    2026-12-06): the copies' spread, where it is large, is what is left.

    Args:
      variants: {name: (run, sync)}: run(item) starts one item, sync() waits for everything
        started.
      cycle: the items of one cycle, in order.
      repeats: timed cycles per variant.

    Returns:
      {name: [seconds of each repeat's cycle]}, entry i of every variant from repeat i.
    """
    times = {name: [0.0] * repeats for name in variants}
    position = 0
    for repeat in range(repeats):
        for item in cycle:
            for name in repeat_order(variants, position):
                run, sync = variants[name]
                start = time.perf_counter()
                run(item)
                sync()
                times[name][repeat] += time.perf_counter() - start
            position += 1
    return times


def paired_ratio(numerator, denominator):
    """Per-repeat ratios numerator[i] / denominator[i] of two variants' times, summarised.

    Args:
      numerator, denominator: equal-length sequences of seconds, entry i of both timed in the
        same repeat.

    Returns:
      (median, mean, standard error of the mean) of the ratios; the error is nan for one repeat.
    """
    ratios = np.asarray(numerator, np.float64) / np.asarray(denominator, np.float64)
    if ratios.size < 2:
        return float(np.median(ratios)), float(ratios.mean()), float("nan")
    error = ratios.std(ddof=1) / np.sqrt(ratios.size)
    return float(np.median(ratios)), float(ratios.mean()), float(error)


def between_copies_error(times, numerator, denominator, copies):
    """Standard error of the pooled ratio mean(numerator's copies) / mean(denominator's) that
    comes from the spread between copies (`balanced_copies`), from each copy's median.

    Identical copies of one compiled step differ by a few percent, and a copy's speed drifts
    by as much between the halves of a run (Intel Xeon, 2026-12-05; the cause is not
    established: TensorFlow's executor, which decides from measured op times which ops run
    inline, is one candidate): the repeats' paired ratios do not see this error, and at the 1%
    level it is the larger one. nan for fewer than 2 copies.
    """
    if copies < 2:
        return float("nan")
    a, b = (np.array([np.median(times[(name, c)]) for c in range(copies)])
            for name in (numerator, denominator))
    relative = np.sqrt(a.var(ddof=1) / (copies * a.mean() ** 2)
                       + b.var(ddof=1) / (copies * b.mean() ** 2))
    return float(relative * a.mean() / b.mean())


def describe_overhead(label, numerator, denominator, copy_error=None):
    """One line: `label` x.xxx (median of n paired repeats, +y.y%; mean +z.z% +- e.e[; +- c.c
    between copies]); an error that one repeat or one copy cannot give is left out."""
    median, mean, error = paired_ratio(numerator, denominator)
    spread = "" if np.isnan(error) else f" +- {error * 100:.1f}"
    between = ("" if copy_error is None or np.isnan(copy_error)
               else f"; +- {copy_error * 100:.1f} between copies")
    return (f"{label} {median:.3f}x (median of {len(numerator)} paired repeats, "
            f"{(median - 1) * 100:+.1f}%; mean {(mean - 1) * 100:+.1f}%{spread}{between})")


def of_copies(copies):
    """How a figure pools `copies` copies, for a heading: 'one copy' or 'mean of n copies'."""
    return "one copy" if copies == 1 else f"mean of {copies} copies"


def describe_copies(label, times, numerator, denominator, copies):
    """`describe_overhead` of two variants timed by `time_copies` ({(name, copy): [seconds]}):
    the paired ratio of their pooled times, with the error between copies."""
    pooled = pooled_times(times, copies)
    return describe_overhead(label, pooled[numerator], pooled[denominator],
                             between_copies_error(times, numerator, denominator, copies))
