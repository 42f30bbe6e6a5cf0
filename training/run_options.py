"""`training_options.json`: the options of a run, written at its start and read to resume it.

Every model family's options dataclass inherits `RunOptions` and sets `MODELS`, the values of
its `model` field, and `FAMILY`, the name errors use; reading a run of another family is a clear
error.
"""

import dataclasses
import json
import os

OPTIONS_FILE = "training_options.json"


class RunOptions:
    """JSON persistence for a flat options dataclass (tuples are stored as lists)."""

    MODELS = ()
    FAMILY = ""

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        model = values.get("model")
        if cls.MODELS and model not in cls.MODELS:
            raise ValueError(f"{OPTIONS_FILE} is a {model} run, not a {cls.FAMILY} one "
                             f"(run_training.py resumes it with --model {model}).")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{OPTIONS_FILE} has unknown options {unknown}; was it written by "
                             "a newer version?")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def save(self, run_dir):
        """Writes run_dir/training_options.json atomically."""
        path = os.path.join(run_dir, OPTIONS_FILE)
        with open(path + ".tmp", "w") as f:
            f.write(self.to_json())
        os.replace(path + ".tmp", path)

    @classmethod
    def load(cls, run_dir):
        path = os.path.join(run_dir, OPTIONS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{run_dir}: no {OPTIONS_FILE}; not a run folder written by "
                                    "run_training.py.")
        with open(path) as f:
            return cls.from_json(f.read())
