"""What a model path is (run folder, checkpoint, converted networks, SavedModel), without
importing TensorFlow, so command-line tools report a wrong path before any start-up cost."""

import json
import os

PATH_KINDS = ("savedmodel", "run", "checkpoint", "converted")


class ExportError(ValueError):
    """A problem the user can fix (a wrong path, an existing folder, an impossible setting);
    the message is one line naming the fix."""


def is_savedmodel(path):
    return os.path.isfile(os.path.join(path, "saved_model.pb"))


def run_dir_of(checkpoint):
    """The run folder of <run>/checkpoints/ckpt-N."""
    return os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))


def path_kind(path):
    """(kind, normalised path), kind one of PATH_KINDS; ExportError if the path is missing or
    none of them. A checkpoint may be given by its prefix or by its .index / .data file."""
    if not path:
        raise ExportError("no model path given.")
    if os.path.isfile(path):
        base = os.path.basename(path)
        if base.endswith(".index"):
            path = path[:-len(".index")]
        elif ".data-" in base:
            path = path[:path.rindex(".data-")]
    if os.path.isdir(path):
        if is_savedmodel(path):
            return "savedmodel", path
        if os.path.isfile(os.path.join(path, "training_options.json")):
            return "run", path
        if os.path.isfile(os.path.join(path, "networks.json")):
            return "converted", path
    elif os.path.isfile(path + ".index"):
        if not os.path.isfile(os.path.join(run_dir_of(path), "training_options.json")):
            raise ExportError(f"{path}: a checkpoint outside a run folder (no "
                              f"training_options.json in {run_dir_of(path)}); give a run's "
                              "checkpoints/ckpt-N.")
        return "checkpoint", path
    elif not os.path.exists(path):
        raise ExportError(f"{path}: no such file or directory.")
    raise ExportError(f"{path}: not a generator; expected a run folder (training_options.json), "
                      "a checkpoint (<run>/checkpoints/ckpt-N), an exported SavedModel "
                      "(saved_model.pb) or converted networks (networks.json).")


def run_family(run_dir):
    """The model family of a run folder (its training_options.json "model")."""
    try:
        with open(os.path.join(run_dir, "training_options.json")) as f:
            return json.load(f).get("model", "")
    except (OSError, ValueError, AttributeError) as error:
        raise ExportError(f"{run_dir}: unreadable training_options.json ({error}).") from None


def default_export_dir(path):
    """<run>/export for a run folder, <run>/export-ckpt-N for a checkpoint, <dir>/export for
    converted networks."""
    kind, path = path_kind(path)
    if kind == "checkpoint":
        return os.path.join(run_dir_of(path), f"export-{os.path.basename(path)}")
    return os.path.join(path, "export")
