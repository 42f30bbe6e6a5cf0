"""tf.distribute strategies for the trainers: one device, one host (Mirrored), many hosts.

    default      tf.distribute's default strategy (one device: the first GPU, else the CPU).
    mirrored     MirroredStrategy over `devices` (default: every GPU, else the CPU).
    multiworker  MultiWorkerMirroredStrategy; each host runs the same command with its own
                 TF_CONFIG (cluster addresses + this task's index) and its own run folder.
                 Only the chief (task 0) writes logs, samples and the exported model; every
                 worker takes part in each checkpoint, as tf.distribute requires, and keeps
                 the newest in its own folder, which its --resume restores.

Hand-written losses in the trainers are summed over the per-replica batch and divided by the
global batch (Keras' optimizers SUM gradients across replicas).
"""

import contextlib
import json
import os
import re
import shutil

import tensorflow as tf

from networks.layers import cpu_flags, onednn_enabled
from training import TrainingConfigError

STRATEGIES = ("default", "mirrored", "multiworker")


def make_strategy(name, devices=None):
    """Creates the strategy `name` (see module docstring). `devices`: list of device names."""
    if name == "default":
        if devices:
            raise ValueError("--devices needs --strategy mirrored.")
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices or None)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multiworker needs the TF_CONFIG environment variable on every worker, "
                'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}\'.')
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


# What installs TensorFlow's GPU support (CUDA and cuDNN as pip packages), for the warning below.
GPU_INSTALL_COMMAND = 'pip install "tensorflow[and-cuda]==2.21.*"'


def device_names(strategy):
    """Short names ("CPU:0", "GPU:1") of the devices this worker's replicas run on; for the
    default strategy the one device TensorFlow places ops on (the first GPU, else the CPU)."""
    try:
        names = strategy.extended.worker_devices
    except RuntimeError:   # the default strategy has no device list of its own
        names = [d.name for d in (tf.config.list_logical_devices("GPU")
                                  or tf.config.list_logical_devices("CPU"))[:1]]
    specs = [tf.DeviceSpec.from_string(name) for name in names]
    return [f"{spec.device_type}:{spec.device_index}" for spec in specs]


def gpu_names():
    """Model names of the GPUs TensorFlow sees ([] without any)."""
    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def gpu_support_warning():
    """A one-line warning (or None) when TensorFlow sees no GPU on a machine that has one:
    `nvidia-smi` on PATH, or CUDA_VISIBLE_DEVICES naming devices (set to "" or "-1", it hides
    them on purpose: no warning). The usual cause is a TensorFlow without its CUDA libraries,
    which TensorFlow itself reports only in a log line that TF_CPP_MIN_LOG_LEVEL=2 (set by the
    tools) hides."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if tf.config.list_physical_devices("GPU") or (visible is not None
                                                  and visible.strip() in ("", "-1")):
        return None
    if shutil.which("nvidia-smi"):
        why = "nvidia-smi is on PATH"
    elif visible:
        why = f"CUDA_VISIBLE_DEVICES={visible.strip()}"
    else:
        return None
    return (f"Warning: TensorFlow sees no GPU although {why}; training runs on the CPU. "
            f"Install GPU support with: {GPU_INSTALL_COMMAND}")


def task_index():
    """This worker's index in TF_CONFIG (0 without TF_CONFIG)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return int(config.get("task", {}).get("index", 0))


def is_chief(strategy):
    """True on the worker that writes logs, samples and exports."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return strategy.cluster_resolver.task_id == 0
    return True


def check_global_batch(global_batch, replicas):
    """TrainingConfigError (one line, exit 2 in run_training.py) unless the global batch
    splits evenly over the replicas."""
    if global_batch % replicas:
        raise TrainingConfigError(f"--batch {global_batch} is not divisible by the {replicas} "
                                  f"replicas; use a multiple of {replicas}.")


def cpu_has_amx_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU has AMX bfloat16 tile units (Intel Sapphire Rapids and later), from the
    kernel's CPU flags (Linux; False where they cannot be read)."""
    return "amx_bf16" in cpu_flags(cpuinfo)


def default_precision(small_ops, cpuinfo="/proc/cpuinfo"):
    """--precision auto: mixed_bfloat16 for a CPU-sized preset (`small_ops`, as
    set_intra_op_threads) trained on a CPU with AMX bfloat16 and oneDNN (TensorFlow's default
    on x86 Linux; TF_ENABLE_ONEDNN_OPTS=0 turns it off), else float32.

    There bfloat16 convolutions run on the AMX tiles at 2-2.6x the float32 rate: the StyleGAN2
    demo trains 1.28-1.32x faster with SWD and shape-classifier scores within the spread between
    seeds, BigGAN's demo 1.35x, U-GAT-IT's 1.08x (Intel Xeon with AMX, 2 cores, 2026-12-04;
    bench/bench_training.py --float32, README); without AMX bfloat16 is
    emulated and slower than float32, and the paper-sized presets keep the precision of the
    official code (float32)."""
    if not small_ops or tf.config.list_physical_devices("GPU"):
        return "float32"
    if not onednn_enabled():   # TensorFlow's own answer, as the layers' kernel choices
        return "float32"
    return "mixed_bfloat16" if cpu_has_amx_bf16(cpuinfo) else "float32"


@contextlib.contextmanager
def dtype_policy(name):
    """Keras' global dtype policy `name` inside (None: unchanged), the previous policy
    restored on exit. Layers keep the policy they were built with, so the networks and trainer
    are built inside; nothing else in the process sees the change."""
    import keras
    previous = keras.mixed_precision.global_policy()
    if name is not None:
        keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def set_intra_op_threads(threads, small_ops=False):
    """Threads one op may use (call before TensorFlow initialises): `threads`, or when it is
    None 1 for `small_ops` (a CPU-sized preset) on a machine without GPUs and otherwise
    TensorFlow's default, every core (0 also keeps it). Returns the number set (0 = default).

    Small ops gain little from being split over the cores and pay its synchronisation; with one
    thread each, TensorFlow's inter-op threads (one per core) run independent ops side by side
    (run_training.py has the measurements). In a process whose TensorFlow already runs (a
    caller of run_training.main, as the tests), the setting in force stays and is returned.
    """
    if threads is None:
        threads = 1 if small_ops and not tf.config.list_physical_devices("GPU") else 0
    if threads and threads != tf.config.threading.get_intra_op_parallelism_threads():
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:   # TensorFlow is initialised: its thread pools exist already
            pass
    return tf.config.threading.get_intra_op_parallelism_threads()


def batch_lanes():
    """Lanes for the serial chains of a training step (`networks.layers.BatchLanes`): 2 where
    ops run on one thread each (`set_intra_op_threads`: the CPU-sized presets) on a machine
    without GPUs and with 2 or more cores, else 1.

    With one thread per op, the D step's synthesis of the fakes and D's pass on them form a
    chain that keeps one core busy while the other waits (bench/profile_training.py shows it);
    as two lanes of half the batch they run side by side: the StyleGAN2 demo's G main + D main
    iteration in 0.93x the time on a 2-core AMD EPYC with AVX2 (bench/bench_training.py --lanes).
    The lazy R1's double back-propagation on the reals runs in the same lanes."""
    if tf.config.list_physical_devices("GPU"):
        return 1
    if tf.config.threading.get_intra_op_parallelism_threads() != 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return 2 if (cores or 1) >= 2 else 1


def split_virtual_cpus(count):
    """Splits the CPU into `count` logical devices (call before TensorFlow initialises).

    Lets MirroredStrategy run several replicas on a CPU-only machine, as this project's tests do.
    Returns the device names.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    return [f"/cpu:{i}" for i in range(count)]


def _replica_sum(strategy):
    """sum(values) -> numpy array: float64 values summed over every replica of every worker
    (one small all-reduce; a worker with several replicas counts once per replica)."""
    @tf.function(autograph=False)
    def reduce_sum(values):
        per_replica = strategy.run(lambda: tf.identity(values))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return lambda values: reduce_sum(tf.constant(values, tf.float64)).numpy()


def any_worker(strategy):
    """agree(*flags) -> tuple of bools: each flag true if it is true on any worker.

    Workers of a MultiWorkerMirroredStrategy must decide together to stop or to write a
    checkpoint (a save is a collective; a worker that stops alone leaves the others waiting
    in their next all-reduce): there `agree` is one small all-reduce (a SUM of 0/1 flags:
    tf.distribute has no MAX). Elsewhere (one process) it returns the flags as they are.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return lambda *flags: tuple(bool(f) for f in flags)
    replica_sum = _replica_sum(strategy)

    def agree(*flags):
        return tuple(bool(v > 0) for v in replica_sum([float(bool(f)) for f in flags]))

    return agree


def check_own_run_folders(strategy, run_dir):
    """Raises TrainingConfigError on every worker of a multi-worker run whose workers share a
    run folder (one --out on a shared file system): each worker writes its own checkpoints and
    options, which would overwrite one another there. No-op in one process.

    Each worker leaves a marker file `.worker<index>` in its folder while the others look for
    theirs (two small all-reduces, before anything else is written); markers older than a
    minute before this worker's are left-overs of an earlier process and do not count."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    index = strategy.cluster_resolver.task_id
    marker = os.path.join(run_dir, f".worker{index}")
    with open(marker, "w"):
        pass
    agree = any_worker(strategy)
    try:
        agree(False)   # every worker has written its marker
        since = os.path.getmtime(marker) - 60.0
        others = [name for name in os.listdir(run_dir)
                  if re.fullmatch(r"\.worker\d+", name) and name != f".worker{index}"
                  and os.path.getmtime(os.path.join(run_dir, name)) >= since]
        (shared,) = agree(bool(others))   # and has looked
    finally:   # (another worker may have removed the shared folder already)
        with contextlib.suppress(FileNotFoundError):
            os.remove(marker)
    if shared:
        raise TrainingConfigError(
            f"the workers share the run folder {run_dir}; give each worker its own --out (e.g. "
            "on its local disk): every worker writes its own checkpoints.")


def same_on_every_worker(strategy, value):
    """Whether the integer `value` (< 2**52) is the same on every worker; every worker gets the
    same answer, so all can stop together. Always True in one process.

    Two all-reduces: the mean over replicas, then whether any worker differs from it (equal
    values sum exactly in float64, so the mean of equal values is the value)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    total, replicas = _replica_sum(strategy)([float(value), 1.0])
    return not any_worker(strategy)(float(value) != total / replicas)[0]
