"""What a training benchmark does before anything else, shared:

    import bench_env
    bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

`python bench/<script>.py` puts bench/ on sys.path (so this module, timing.py, ... import);
importing this module puts the repository root there too (cli_common, networks, training, ...).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import cli_common  # noqa: E402


def training_environment():
    """run_training.py's defaults (cli_common.training_environment), then TensorFlow imported
    as run_training.py imports it, without its start-up noise (the benches import it next)."""
    cli_common.training_environment()
    cli_common.import_tensorflow_quietly()
