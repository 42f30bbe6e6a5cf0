"""Test session setup: quiet TensorFlow, two logical CPU devices for tf.distribute tests.

Logical devices must be configured before TensorFlow initialises its runtime, so this runs at
collection time, before any test module touches TensorFlow.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


# The slowest modules (seconds with -n 2, oneDNN off, 2-core EPYC), run first: `--dist loadfile`
# hands whole modules to the workers in collection order, so a long module started last would
# keep one worker busy while the other idles (longest-first packing).
SLOWEST_FIRST = ("test_training_loop", "test_biggan_loop", "test_sq_training", "test_float_paths",
                 "test_ugatit_loop", "test_export_biggan", "test_export_ugatit",
                 "test_biggan_trainer", "test_trainer", "test_export", "test_ugatit_trainer")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    # A stable sort: tests keep their order within a module (module fixtures are shared).
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))
