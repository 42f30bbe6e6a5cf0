"""Test session setup: TensorFlow started as the tools start it (without its start-up noise),
its thread pools split between the xdist workers, two logical CPU devices for tf.distribute
tests.

Logical devices must be configured before TensorFlow initialises its runtime, so this runs at
collection time, before any test module touches TensorFlow.
"""

import os
import sys
import typing

# Under pytest-xdist each worker gets its share of the cores for TensorFlow's thread pools
# (read when TensorFlow initialises, and inherited by the subprocesses tests start, so a
# SavedModel loaded in a fresh process runs with the same pools as the test that wrote it).
# Two workers with a full pool each on two cores spend time preempting and spinning: the
# suite took 8-9% longer in wall and user time, and 25% more system time (2-core EPYC).
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if _workers > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _workers))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", _threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", _threads)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # the tools' start, without TensorFlow's start-up noise

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


@pytest.fixture(scope="session")
def two_replica_strategy():
    """MirroredStrategy over two logical CPU devices (as Keras' own distribute tests).

    One instance per session: strategies created later in the same process reuse collective
    instance keys, and their all-reduces then clash with the first one's ("Shape mismatch in
    the collective instance").
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture
def op_determinism():
    """tf.config.experimental.enable_op_determinism for one test (it is process-wide)."""
    from tensorflow.python.framework import config as tf_config
    tf.config.experimental.enable_op_determinism()
    yield
    tf_config.disable_op_determinism()


@pytest.fixture
def onednn_graph_run():
    """run(code) -> the stdout of Python `code` run in a fresh process with oneDNN on (the
    training tools' setting) and the repository importable, after asserting that it exited
    with 0 and that grappler's remapper logged no failure while optimising its graphs (a
    failure drops the remapper's fusions on the whole graph; see `networks.layers.leaky_relu`).
    TensorFlow's own settings (oneDNN, log level) are the process's: they are read at start."""
    import subprocess

    def run(code, timeout=300):
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_ENABLE_ONEDNN_OPTS="1",
                   TF_CPP_MIN_LOG_LEVEL="1")
        done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "remapper failed" not in done.stderr, done.stderr[-2000:]
        return done.stdout

    return run


class Half(typing.NamedTuple):
    """A mixed policy's compute type: `unit_roundoff` is the largest relative error of one
    rounding to it (2^-(mantissa bits + 1)), the unit test tolerances are counted in."""
    policy: str
    name: str
    dtype: tf.dtypes.DType
    unit_roundoff: float


HALVES = {"mixed_float16": Half("mixed_float16", "float16", tf.float16, 2.0 ** -11),
          "mixed_bfloat16": Half("mixed_bfloat16", "bfloat16", tf.bfloat16, 2.0 ** -8)}


@pytest.fixture(params=list(HALVES))
def mixed_precision(request):
    """Each mixed policy of --precision in turn (a Half); float32 again afterwards."""
    keras.mixed_precision.set_global_policy(request.param)
    yield HALVES[request.param]
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def mixed_float16():
    """mixed_float16 only: loss scaling, which bfloat16 does not need."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield HALVES["mixed_float16"]
    keras.mixed_precision.set_global_policy("float32")


# The slowest modules run first: `--dist loadfile` hands whole modules to the workers in this
# order, each worker taking the next one as it runs out of work, so a long module started last
# would keep one worker busy while the other idles (longest-first packing). Seconds with -n 2,
# AMD EPYC 2 cores, oneDNN off, 2026-12-07: training_loop ~250, training_step ~250, ugatit_loop
# 126, float_paths 105-129, export_biggan 107, biggan_loop 113, training_multiworker ~100,
# sq_training 68, biggan_trainer 56, trainer 51, export_ugatit 48, cli 47, export 43, ...
SLOWEST_FIRST = ("test_training_loop", "test_training_step", "test_ugatit_loop",
                 "test_float_paths", "test_biggan_loop", "test_export_biggan",
                 "test_training_multiworker", "test_sq_training", "test_biggan_trainer",
                 "test_trainer", "test_export_ugatit", "test_cli", "test_export",
                 "test_ugatit_trainer", "test_stylegan2", "test_generator_cli", "test_gan",
                 "test_convert", "test_biggan_networks")


def pytest_configure(config):
    # pytest-xdist (3.x) reorders loadfile/loadscope modules by their number of tests unless
    # told not to, which put the one-test float-path module (44 s) last and left the other
    # worker idle for most of it; keep the order below instead.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # A stable sort: tests keep their order within a module (module fixtures are shared).
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
