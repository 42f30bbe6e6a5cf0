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


# The host's spans of an asynchronous kernel (an XLA-compiled function call, a collective): the
# launch span carries the op's name and type as stats; an XLA call's run is nested in it.
ASYNC_START = "ExecutorState::ProcessAsync::Start"
XLA_RUN = "CpuExecutable::ExecuteAsyncOnStream"
XLA_CALL = "XlaCompiledCall"   # op type given to an XLA-compiled function call's span


def kernel_events(logdir, phases):
    """Every executor kernel of the trace under `logdir`: a list of KernelEvent (thread name,
    start and end in seconds on the trace's clock, the first of `phases` whose name is a scope
    of the op, else "other", op type, op name with its scopes), sorted by start.

    Synchronous kernels are the trace's "op name:op type" events. An asynchronous kernel is its
    launch span (ASYNC_START) with the name and type from its stats: an XLA-compiled function
    call (a function-call op whose span holds the XLA executable's run) as op type XLA_CALL
    under the call's own name and scopes, so it counts in its phase and layer; other
    asynchronous function calls only launch kernels counted themselves and are skipped."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    events = []
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = {k: m.name for k, m in plane.event_metadata.items()}
            stat_names = {k: m.name for k, m in plane.stat_metadata.items()}
            for line in plane.lines:
                xla_runs, launches = [], []
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    start = line.timestamp_ns * 1e-9 + event.offset_ps * 1e-12
                    span = (start, start + event.duration_ps * 1e-12)
                    if name == XLA_RUN:
                        xla_runs.append(span)
                    elif name == ASYNC_START:
                        stats = {stat_names.get(s.metadata_id): stat_names.get(s.ref_value)
                                 if s.ref_value else s.str_value for s in event.stats}
                        launches.append((span, stats.get("name") or "", stats.get("kernel_type")))
                    # Executor kernels are named "op name:op type" ("::" marks the host's own
                    # spans). Skip calls of other ops and function spans, which enclose kernels.
                    if ":" not in name or "::" in name:
                        continue
                    op_name, op_type = name.rsplit(":", 1)
                    if op_type in CONTAINERS or not op_type.isidentifier() or "__inference" in name:
                        continue
                    events.append(_kernel_event(line.name, span, op_type, op_name, phases))
                for span, op_name, op_type in launches:
                    if op_type in CONTAINERS:
                        if not any(span[0] <= a and b <= span[1] for a, b in xla_runs):
                            continue
                        op_type = XLA_CALL
                    if op_type:
                        events.append(_kernel_event(line.name, span, op_type, op_name, phases))
    return sorted(events, key=lambda e: e.start)


def _kernel_event(thread, span, op_type, op_name, phases):
    phase = next((p for p in phases if f"{p}/" in op_name), "other")
    return KernelEvent(thread, span[0], span[1], phase, op_type, op_name)


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
