"""What every command-line tool of the project shares.

run_training.py, run_generator.py, run_export.py, run_metrics.py, run_convert.py,
run_translation.py and `python -m datasets.prepare` speak one dialect: dashes in flag names,
`--network` for what is read, `--outdir` for a folder a tool creates and fills, `--out` for the
one run folder or file it writes, and the same `--trunc`, `--batch`, `--num-images`,
`--resolution`, `--seeds` everywhere. A mistake a user can make is one line on stderr,
`<tool>: error: <what and how to fix it>`, with exit status 2: a malformed flag value as well
as a check of the tool's own. Flags renamed to that dialect keep their old spelling for one
release, with a one-line notice. Long work (feature extraction, many images) shows one
`Progress` line.
"""

import os
import re
import sys
import threading
import time

from absl import app, flags


def training_environment():
    """Environment defaults of the training tools (run_training.py and the training benches),
    set before TensorFlow is imported; a value the user set wins.

    TF_CPP_MIN_LOG_LEVEL=2: no TensorFlow info lines (the start-up lines it cannot silence:
    `import_tensorflow_quietly`). TF_ENABLE_ONEDNN_OPTS=1: oneDNN
    kernels on every x86 CPU, not only on those with AVX-512-class features where TensorFlow
    turns them on itself: on an AMD EPYC with AVX2 only (family 25, 2 cores, 2026-12-05) the
    StyleGAN2 demo's iteration ran at 119.8 against 88.4 img/s with Eigen (FQ on; FQ off 117.3
    against 94.5), and stylegan2-ada-pytorch's setting at 32² at 10.8 against 8.7 img/s,
    although the lone 3x3 convolution was no faster (192 against 215 GFLOP/s). It changes
    float32 summation orders on such machines, not what is computed.

    Does nothing once TensorFlow is loaded (a test process importing a tool): it reads the
    setting on import only, and a value set later would just leak into child processes.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


# TensorFlow's start-up lines that TF_CPP_MIN_LOG_LEVEL cannot silence: its C++ code writes them
# while importing and listing devices, before absl logging is initialised (tensorflow/tensorflow
# #100442). None asks anything of the user: oneDNN is on by our choice (training_environment),
# and on a machine without an NVIDIA driver TensorFlow says so, then logs its failed cuInit as an
# error ("E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)"), which alarms a newcomer.
NO_DRIVER = re.compile(r"I\d{4} [\d:.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers "
                       r"on your machine, GPU will not be used\.$")
STARTUP_NOISE = (
    re.compile(r"WARNING: All log messages before absl::InitializeLog\(\) is called are written "
               r"to STDERR$"),
    re.compile(r"I\d{4} [\d:.]+ +\d+ port\.cc:\d+\] oneDNN custom operations are on\. "),
    NO_DRIVER,
)
# Left out only after NO_DRIVER: with a driver, a failed cuInit is a real error (a driver and
# CUDA mismatch, say) and is shown.
CUINIT_FAILED = re.compile(r"E\d{4} [\d:.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ")


class StartupNoiseFilter:
    """keep(line) -> False for TensorFlow's start-up noise (STARTUP_NOISE, and the failed cuInit
    once NO_DRIVER was seen), True for every other line (a str without its newline)."""

    def __init__(self):
        self.no_driver = False

    def keep(self, line):
        if any(pattern.match(line) for pattern in STARTUP_NOISE):
            self.no_driver = self.no_driver or bool(NO_DRIVER.match(line))
            return False
        return not (self.no_driver and CUINIT_FAILED.match(line))


def filtered_stderr(action, keep):
    """action() with the process's stderr (file descriptor 2, which C++ code writes to) passed
    through keep(line) line by line: the lines kept go on to the real stderr as they come (a
    thread forwards them), so a crash inside `action` loses at most the line in flight. The
    descriptor is restored, and every line forwarded, before this returns or raises. Returns
    what action() returns. Where descriptor 2 cannot be duplicated, action() runs unfiltered."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return action()
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward():
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if keep(line.decode(errors="replace").rstrip("\r\n")):
                    try:
                        os.write(real, line)
                    except OSError:   # stderr gone (a closed pipe): keep draining, so that
                        pass          # no writer blocks on a full pipe

    thread = threading.Thread(target=forward, name="stderr-filter", daemon=True)
    thread.start()
    try:
        return action()
    finally:
        sys.stderr.flush()
        os.dup2(real, 2)   # closes the pipe's last write end: the thread reads to its end
        thread.join()
        os.close(real)


# One filter for the process: what it saw on import (no driver) holds for later probes too.
_STARTUP_NOISE_FILTER = StartupNoiseFilter()


def without_startup_noise(action):
    """action() with TensorFlow's start-up noise left out of stderr (`filtered_stderr`): for
    the calls that probe CUDA again, such as starting the profiler; the failed cuInit is left
    out only where the import found no driver."""
    return filtered_stderr(action, _STARTUP_NOISE_FILTER.keep)


def import_tensorflow_quietly():
    """Imports TensorFlow and lists its devices without its start-up noise (STARTUP_NOISE),
    TF_CPP_MIN_LOG_LEVEL defaulting to 2 (no info lines); every other line it writes is shown.
    Every tool calls it where it needs TensorFlow first (after its flag checks, so that a usage
    error stays instant); afterwards nothing is filtered. Does nothing once TensorFlow is
    loaded."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    def load():
        import tensorflow as tf
        tf.config.list_physical_devices()   # the cuInit probe; the runtime stays configurable

    without_startup_noise(load)


def usage_error(tool, message):
    """Prints `<tool>: error: <message>` on stderr; returns the exit status 2."""
    print(f"{tool}: error: {message}", file=sys.stderr)
    return 2


def run(tool, main, argv, fv):
    """main(argv, fv), with app.UsageError as one line on stderr and exit status 2."""
    try:
        return main(argv, fv)
    except app.UsageError as error:
        return usage_error(tool, error)


def parse_flags(tool, fv, argv):
    """fv(argv), where a flag value absl cannot parse (a word for a number, an unknown enum
    value, an unknown flag) is one line on stderr and SystemExit(2) (absl would print two
    lines and exit 1). Returns the remaining arguments."""
    try:
        return fv(argv)
    except flags.Error as error:
        sys.exit(usage_error(tool, error))


def start(tool, run_fn):
    """The `__main__` of a tool: app.run(run_fn), its flags parsed by `parse_flags`."""
    app.run(run_fn, flags_parser=lambda argv: parse_flags(tool, flags.FLAGS, argv))


def define_renamed(fv, renamed):
    """The old spellings {old: new} of renamed flags, as aliases of the new flags."""
    for old, new in renamed.items():
        flags.DEFINE_alias(old, new, flag_values=fv)


def warn_renamed(tool, fv, renamed):
    """One notice on stderr for each old spelling on the command line."""
    for old, new in renamed.items():
        if old in fv and fv[old].present:
            print(f"{tool}: --{old} is deprecated and goes in the next release; use --{new}.",
                  file=sys.stderr)


class Progress:
    """`<what>: <done>/<total> <unit>  <rate> <unit>/s  ETA h:mm:ss` for a long loop.

    On a terminal the line is rewritten in place (\\r) at most every `interval` seconds; in a
    log (stream not a terminal) it is a plain line at each quarter of the total and after
    `log_interval` seconds without one, never one per step. `update` costs one clock read, so
    it can be called per image.

        progress = Progress(len(seeds), "generating")
        for seed in seeds:
            ...
            progress.update()
        progress.close()          # the final line (count, rate, time taken)

    Args:
      total: items expected.
      what: the label in front of the count.
      unit: what is counted ("images").
      stream: where the line goes (default sys.stdout, looked up when the Progress is made).
      log: instead of a stream, a callable taking each line (as in a log).
      interval, log_interval: seconds between lines on a terminal / in a log.
    """

    def __init__(self, total, what, unit="images", stream=None, log=None, interval=0.5,
                 log_interval=60.0):
        self.total, self.what, self.unit = max(int(total), 0), what, unit
        self.stream = stream or sys.stdout
        self.log = log
        self.tty = log is None and bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if self.tty else log_interval
        self.done, self.quarter, self.closed = 0, 1, False
        self.start = self.last = time.monotonic()

    def update(self, count=1):
        """Counts `count` more items done; shows the line when it is due."""
        self.done += count
        now = time.monotonic()
        quarter_reached = not self.tty and self.done * 4 >= self.quarter * self.total
        if quarter_reached or now - self.last >= self.interval:
            while self.done * 4 >= self.quarter * self.total and self.quarter <= 4:
                self.quarter += 1
            if self.done < self.total:   # the last line is close()'s
                self._show(now)

    def close(self):
        """Shows the final line (once): count, rate and the time taken."""
        if not self.closed:
            self.closed = True
            self._show(time.monotonic(), final=True)

    def rate(self):
        """Items per second so far."""
        seconds = time.monotonic() - self.start
        return self.done / seconds if seconds > 0 else 0.0

    def _show(self, now, final=False):
        self.last = now
        seconds, rate = now - self.start, self.rate()
        if final:
            tail = f"{seconds:.1f} s"
        else:
            eta = (self.total - self.done) / rate if rate else 0.0
            tail = f"ETA {int(eta) // 3600}:{int(eta) // 60 % 60:02d}:{int(eta) % 60:02d}"
        line = (f"{self.what}: {self.done}/{self.total} {self.unit}  {rate:.1f} {self.unit}/s  "
                f"{tail}")
        if self.log is not None:
            self.log(line)
            return
        if self.tty:
            self.stream.write(f"\r{line}\033[K" + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def progress(items, total, what, unit="images", count=None, stream=None):
    """Yields `items`, showing a `Progress` of `total`: each item counts `count(item)` (e.g.
    `len` for minibatches), or 1, once the consumer asks for the next one. The final line
    comes when the items run out."""
    shown = Progress(total, what, unit, stream)
    for item in items:
        yield item
        shown.update(1 if count is None else count(item))
    shown.close()
