"""`training_options.json`: the options of a run, written at its start and read to resume it.

Every model family's options dataclass inherits `RunOptions` (the options every run has) and
sets `MODELS`, the values of its `model` field, and `FAMILY`, the name errors use; reading a run
of another family is a clear error. `FAMILIES` maps each model to its family module.
"""

import dataclasses
import importlib
import json
import math
import os
import typing

from absl import app

OPTIONS_FILE = "training_options.json"
# Keras dtype policies a run may train under (RunOptions.precision); "auto" is resolved when the
# run starts (training.distribute.default_precision) and the concrete name is saved.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Model (run_training.py --model, the "model" of training_options.json) -> its family module
# (a TrainingFamily, below); imported when used.
FAMILIES = {"progan": "training.stylegan", "stylegan": "training.stylegan",
            "stylegan2": "training.stylegan", "ugatit": "training.ugatit",
            "biggan": "training.biggan"}


def parse_index_flag(flag, text, example):
    """A comma-separated list of distinct integers from a flag's text (FQ blocks or layers).

    Args:
      flag: the flag's name without dashes (for the message).
      text: its value; None = not given.
      example: what a valid value looks like in the message, e.g. "resolutions like 16,32".

    Returns:
      tuple of ints ("" gives (): no FQ), or None when text is None (the preset's choice).

    Raises:
      app.UsageError: one line naming the flag, for a word, or a value given twice.
    """
    if text is None:
        return None
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise app.UsageError(f"--{flag} must be comma-separated {example} (\"\" for none), "
                             f"got {text!r}.") from None
    if len(set(values)) != len(values):
        raise app.UsageError(f"--{flag} {text!r} names a value twice.")
    return values


def family_module(model):
    """The family module (TrainingFamily) of a model name of FAMILIES."""
    return importlib.import_module(FAMILIES[model])


@dataclasses.dataclass
class RunOptions:
    """What every run has (where and how it runs, how often it reports), and JSON persistence
    for the flat options dataclass of its family (tuples are stored as lists)."""

    MODELS = ()
    FAMILY = ""
    # Real images per loop position: the StyleGAN family's position is the image count (1);
    # BigGAN and U-GAT-IT override it with a property (their position counts iterations).
    images_per_iteration = 1

    seed: int = 0
    strategy: str = "default"          # tf.distribute strategy (training/distribute.py).
    devices: tuple = ()
    precision: str = "float32"         # PRECISIONS, or "auto" until the run starts.
    xla: bool = False
    tick_kimg: float = 4.0             # kimg between progress lines and log entries.
    snapshot_ticks: int = 10           # Ticks between checkpoints and sample images.
    keep_checkpoints: int = 3          # Newest checkpoints kept; 0 = all.
    metrics: tuple = ()                # ("swd",) computes SWD at each snapshot.
    swd_images: int = 256
    init_from: str = ""                # Weights a new run starts from ("" = random init).

    def images_at(self, position):
        """Real images shown at a loop position (a checkpoint's number): the StyleGAN family
        counts images, BigGAN and U-GAT-IT count iterations of `images_per_iteration`."""
        return position * self.images_per_iteration

    @property
    def small_ops(self):
        """A CPU-sized preset (`config` "demo", every family's default): its ops are small, which
        decides the threads per op (distribute.set_intra_op_threads) and --precision auto
        (distribute.default_precision)."""
        return self.config == "demo"

    @property
    def loss_scaling(self):
        """Loss scaling (LossScaleOptimizer) is what float16 needs; bfloat16 has float32's
        exponent range and trains without it."""
        return self.precision == "mixed_float16"

    def fq_warmup_kimg_resolved(self):
        """kimg of the FQ warm-up (alpha ramp, then the quantised D forward; fq_keras.gan) of a
        family with `fq_preset`, `fq_warmup_kimg` and `kimg`: --fq-warmup-kimg, or with the
        paper preset a quarter of the run when not given; 0 = none."""
        if self.fq_preset == "paper" and self.fq_warmup_kimg <= 0:
            return self.kimg / 4
        return self.fq_warmup_kimg

    @property
    def fq_warmup_iterations(self):
        """The FQ warm-up in iterations of `images_per_iteration` images, rounded up (BigGAN,
        U-GAT-IT)."""
        return int(math.ceil(self.fq_warmup_kimg_resolved() * 1000.0
                             / self.images_per_iteration))

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        model = values.get("model")
        if cls.MODELS and model not in cls.MODELS:
            raise ValueError(f"{OPTIONS_FILE} is a {model} run, not a {cls.FAMILY} one "
                             f"(run_training.py resumes it with --model {model}).")
        if "mixed_precision" in values:   # written before --precision (a bool: float16 or not)
            mixed = values.pop("mixed_precision")
            values.setdefault("precision", "mixed_float16" if mixed else "float32")
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


@typing.runtime_checkable
class TrainingFamily(typing.Protocol):
    """What a family module (training/stylegan.py, biggan.py, ugatit.py) gives run_training.py,
    export/ and the other tools; the training itself is its `TrainingRun` (training/loop.py).

    - `Options`: its RunOptions dataclass (presets resolved by its methods).
    - `options_from_flags(fv)`: Options from run_training.py's parsed flags (app.UsageError,
      one line, for a value the family cannot use).
    - `validate(options)`: every check possible before TensorFlow builds anything (opens the
      data; app.UsageError); fills in what the data decides.
    - `training_loop(options, run_dir, resume=False, log=print, ..., **loop_options)`: trains
      its TrainingRun with `training.loop.training_loop` and returns the run summary.
    - `load_networks(run_dir, checkpoint=None, which=...)`: (options, {name: network}) of a
      run folder's checkpoint (export, generation, translation).
    """

    Options: type

    def options_from_flags(self, fv): ...

    def validate(self, options): ...

    def training_loop(self, options, run_dir, resume=False, **kwargs): ...

    def load_networks(self, run_dir, checkpoint=None, which=()): ...
