"""Reading the TensorFlow profiler's trace of training steps: kernels, phases, busy cores.

`kernel_events` reads every kernel the executor ran from the XPlane protobuf that
`tf.profiler.experimental` writes; `busy_cores` turns them into the number of cores busy over
time, which shows where an iteration leaves a core idle (a serial chain of small ops on one
thread while the other waits), the part of the wall time that no kernel speed-up shortens.
"""

import collections
import glob
import os
import re

# Ops that only call other ops (their kernels are counted themselves).
CONTAINERS = {"PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If",
              "StatelessIf", "Case", "StatelessCase", "Process", "Run"}

KernelEvent = collections.namedtuple("KernelEvent", "thread start end phase op_type op_name")


def kernel_events(logdir, phases):
    """Every executor kernel of the trace under `logdir`: a list of KernelEvent (thread name,
    start and end in seconds on the trace's clock, the first of `phases` whose name is a scope
    of the op, else "other", op type, op name with its scopes), sorted by start."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    events = []
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = {k: m.name for k, m in plane.event_metadata.items()}
            for line in plane.lines:
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name:   # executor kernels are named "op name:op type"
                        continue
                    op_name, op_type = name.rsplit(":", 1)
                    # Skip calls of other ops and the host's own "Process" / "Run" / function
                    # spans, which enclose the kernels.
                    if op_type in CONTAINERS or not op_type.isidentifier() or "__inference" in name:
                        continue
                    start = line.timestamp_ns * 1e-9 + event.offset_ps * 1e-12
                    phase = next((p for p in phases if f"{p}/" in op_name), "other")
                    events.append(KernelEvent(line.name, start, start + event.duration_ps * 1e-12,
                                              phase, op_type, op_name))
    return sorted(events, key=lambda e: e.start)


def in_scopes(events, names):
    """The events of ops inside a scope named by `names` (e.g. the FQ layers' names): a scope
    of the op's name is one of them, one of them with TensorFlow's "_<n>" suffix of a repeated
    call, or "<name>_update" (FeatureQuantization.update_dictionary's scope). Gradient ops are
    named after the forward op's scopes, so they count too."""
    if not names:
        return []
    scope = re.compile("(%s)(_[0-9]+|_update)?" % "|".join(re.escape(n) for n in names))
    return [e for e in events
            if any(scope.fullmatch(part) for part in e.op_name.split("/")[:-1])]


def busy_cores(events, bins):
    """Cores busy over the span of `events`, in `bins` equal time bins.

    A thread counts as busy while any of its kernels runs (kernels of one thread that overlap,
    e.g. one nested in another's span, count once), so a bin's value is the number of threads
    busy, averaged over the bin: between 0 and the number of threads.

    Returns:
      (bin width in seconds, [busy threads per bin], [phase with the most kernel time per bin,
      None where nothing ran]).
    """
    if not events:
        return 0.0, [], []
    start = min(e.start for e in events)
    width = (max(e.end for e in events) - start) / bins or 1.0
    busy = [0.0] * bins
    phase_time = [collections.Counter() for _ in range(bins)]

    def spread(a, b, add):   # add(bin, seconds) for the part of [a, b) in each bin
        a, b = a - start, b - start   # relative times: exact bin arithmetic
        for k in range(min(int(a / width), bins - 1), min(int(b / width), bins - 1) + 1):
            overlap = min(b, (k + 1) * width) - max(a, k * width)
            if overlap > 0:
                add(k, overlap)

    by_thread = collections.defaultdict(list)
    for e in events:
        by_thread[e.thread].append((e.start, e.end))
        spread(e.start, e.end, lambda k, s, p=e.phase: phase_time[k].update({p: s}))
    for intervals in by_thread.values():
        merged = []
        for a, b in sorted(intervals):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        for a, b in merged:
            spread(a, b, lambda k, s: busy.__setitem__(k, busy[k] + s / width))
    phases = [t.most_common(1)[0][0] if t else None for t in phase_time]
    return width, busy, phases
