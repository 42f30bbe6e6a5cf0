"""What a training benchmark does before anything else, shared:

    import bench_env
    bench_env.training_environment()   # as run_training.py, before TensorFlow is imported

`python bench/<script>.py` puts bench/ on sys.path (so this module, timing.py, ... import);
importing this module puts the repository root there too (cli_common, networks, training, ...).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cli_common import training_environment  # noqa: E402  run_training.py's defaults

__all__ = ["training_environment"]
