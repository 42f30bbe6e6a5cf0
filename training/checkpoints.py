"""Checkpoints of everything a run needs to continue exactly, by explicit variable names.

Keras 3 models are not reliable `tf.train.Checkpoint` dependencies: layers held in lists or
dicts are silently left out, and a variable reachable through an optimizer is filed under the
optimizer. Keys use variable paths, so models and optimizers need explicit names (an
auto-numbered `adam_3` would differ between processes). So a checkpoint here is a flat, explicit map `name -> variable` built from
`Layer.variables` (weights, buffers and seed-generator states) and `Optimizer.variables`:

    state = checkpoint_state(G=G, D=D, g_optimizer=opt, nimg=trainer.nimg)
    checkpoints = Checkpoints(state, run_dir, keep=3, is_chief=True)

Restoring checks that every variable of the model received a value.
"""

import os
import shutil

import keras
import tensorflow as tf

CHECKPOINT_DIR = "checkpoints"


def _tf_variable(variable):
    """The tf.Variable (or distributed variable) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def checkpoint_state(**objects):
    """{"<name>:<variable path>": tf.Variable} for models, layers, optimizers and variables.

    Args:
      **objects: keras Layers/Models and Optimizers (all their variables), Keras or tf
        Variables, or keras.random.SeedGenerators, by name.
    """
    state = {}
    for name, obj in objects.items():
        if isinstance(obj, keras.random.SeedGenerator):
            variables = [obj.state]
        elif isinstance(obj, (keras.layers.Layer, keras.optimizers.Optimizer)):
            variables = obj.variables
        else:
            variables = [obj]
        for variable in variables:
            if hasattr(obj, "variables"):
                key = f"{name}:{variable.path}"
            else:
                key = name
            if key in state:
                raise ValueError(f"checkpoint_state: two variables named {key!r}; give layers "
                                 "unique names.")
            state[key] = _tf_variable(variable)
    return state


class Checkpoints:
    """tf.train.CheckpointManager over a `checkpoint_state` map; multi-worker aware.

    Saves are atomic (TensorFlow writes to temporary files and updates the index last, so an
    interrupted save leaves the previous checkpoint as the latest). Every worker must take part
    in a save (tf.distribute), but only the chief keeps its files: the others write to a scratch
    folder that is deleted right after.
    """

    def __init__(self, state, run_dir, keep=3, is_chief=True, worker_index=0):
        self.checkpoint = tf.train.Checkpoint(state=state)
        self.is_chief = is_chief
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        if not is_chief:
            self.directory = os.path.join(run_dir, f".worker{worker_index}-scratch")
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.directory, keep,
                                                  checkpoint_name="ckpt")

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def save(self, number):
        path = self.manager.save(checkpoint_number=number)
        if not self.is_chief:
            shutil.rmtree(self.directory, ignore_errors=True)
        return path

    def restore(self, path):
        """Loads `path`; raises if any variable of the state is missing from it."""
        self.checkpoint.read(path).assert_existing_objects_matched().expect_partial()


def latest_checkpoint(run_dir):
    """Path of the newest checkpoint of a run folder, or None."""
    return tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))


def resume_or_record(checkpoints, options, run_dir, resume, is_chief):
    """Starts a run: restores the latest checkpoint (--resume) or records the new run's options.

    Returns the restored checkpoint path, or None for a new run.
    """
    if resume:
        if checkpoints.latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoints.directory}.")
        checkpoints.restore(checkpoints.latest)
        return checkpoints.latest
    if is_chief:
        options.save(run_dir)
    return None
