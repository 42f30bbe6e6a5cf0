"""Checkpoints of everything a run needs to continue exactly, by explicit variable names.

Keras 3 models are not reliable `tf.train.Checkpoint` dependencies: layers held in lists or
dicts are silently left out, and a variable reachable through an optimizer is filed under the
optimizer. Keys use variable paths, so models and optimizers need explicit names (an
auto-numbered `adam_3` would differ between processes). So a checkpoint here is a flat, explicit map `name -> variable` built from
`Layer.variables` (weights, buffers and seed-generator states) and `Optimizer.variables`:

    state = checkpoint_state(G=G, D=D, g_optimizer=opt, nimg=trainer.nimg)
    checkpoints = Checkpoints(state, run_dir, keep=3, is_chief=True)

Restoring checks that every variable of the model received a value. Variables a trainer sets
from its counters before every use (`RECOMPUTED`) are not state and are left out, so
checkpoints written before such a variable existed still load.

A new run can start from the networks of another run's checkpoint or of converted official
weights (`init_from`, run_training.py --init-from): weights only, checked against the new run's
networks variable by variable.
"""

import os
import re

import keras
import tensorflow as tf

from training import TrainingConfigError

CHECKPOINT_DIR = "checkpoints"


# Variable names (Keras `variable.name`) a trainer recomputes from its counters before every
# use: FeatureQuantization's switch to the quantised forward (fq_keras.set_quantized_forward).
RECOMPUTED = ("quantized_forward",)


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
            if getattr(variable, "name", None) in RECOMPUTED:
                continue
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
    interrupted save leaves the previous checkpoint as the latest). Every worker of a
    multi-worker run takes part in every save (a collective) and writes into its own run
    folder (its own --out): the chief keeps `keep` checkpoints, the others only the newest,
    which is what each worker restores on --resume.
    """

    def __init__(self, state, run_dir, keep=3, is_chief=True):
        """keep: the newest checkpoints the chief keeps; 0 = all. Other workers keep one."""
        self.checkpoint = tf.train.Checkpoint(state=state)
        self.directory = os.path.join(run_dir, CHECKPOINT_DIR)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, (keep or None) if is_chief else 1,
            checkpoint_name="ckpt")

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def save(self, number):
        return self.manager.save(checkpoint_number=number)

    def restore(self, path):
        """Loads `path`; raises if any variable of the state is missing from it."""
        self.checkpoint.read(path).assert_existing_objects_matched().expect_partial()


def latest_checkpoint(run_dir):
    """Path of the newest checkpoint of a run folder, or None."""
    return tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_DIR))


def checkpoint_to_load(run_dir, checkpoint=None):
    """The checkpoint a run's networks are loaded from: `checkpoint`, or the latest if None.

    Raises FileNotFoundError (one line naming where it looked) when the run has none yet or
    the named one does not exist.
    """
    if checkpoint is None:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise FileNotFoundError(
                f"{run_dir}: no checkpoint in {os.path.join(run_dir, CHECKPOINT_DIR)} (the run "
                "has not saved one yet: train it to its first snapshot).")
    elif not tf.io.gfile.exists(checkpoint + ".index"):
        raise FileNotFoundError(f"no checkpoint {checkpoint} (looked for {checkpoint}.index).")
    return checkpoint


def run_checkpoints(run_dir):
    """{number: path} of the checkpoints a run folder keeps, oldest first (ckpt-N: N is the
    loop's position, training.loop)."""
    state = tf.train.get_checkpoint_state(os.path.join(run_dir, CHECKPOINT_DIR))
    paths = state.all_model_checkpoint_paths if state else []
    return {int(re.search(r"(\d+)$", path).group(1)): path for path in paths}


def resume_or_record(checkpoints, options, run_dir, resume):
    """Starts a run: restores the latest checkpoint (--resume) or records the new run's options
    (every worker in its own run folder, which is what its --resume reads).

    Returns the restored checkpoint path, or None for a new run.
    """
    if resume:
        if checkpoints.latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoints.directory}.")
        checkpoints.restore(checkpoints.latest)
        return checkpoints.latest
    options.save(run_dir)
    return None

#----------------------------------------------------------------------------
# A new run from trained weights (run_training.py --init-from).


def init_from(path, networks, model, log=print):
    """Copies the weights of `path` into the networks of a new run.

        init_from("converted/ffhq", {"G": G, "Gs": Gs, "D": D}, "stylegan2")

    Args:
      path: converted official networks (run_convert.py --outdir), a run folder (its latest
        checkpoint) or a checkpoint <run>/checkpoints/ckpt-N.
      networks: {name: built network} of the new run (G, Gs, D; U-GAT-IT its six networks).
      model: the new run's model (--model); the source's must be the same.
      log: where the one-line notes go (what was loaded, what starts fresh).

    Only the networks' weights and buffers are copied: optimizers, counters, the schedule and
    random states (seeded by the new run's seed) start fresh. A network the source lacks starts
    fresh (converted generator-only weights have no D), and so do the FQ dictionaries of a
    network the source has without FQ and the SQ codebook of a generator the source has
    without style quantization (SQ-GAN fine-tuning of official or plain StyleGAN2 weights:
    --init-from converted/ffhq --sq); a source without Gs gives G's weights to Gs
    (run_convert.py keeps the official G_ema as G). Every other variable must exist on both
    sides with the same shape, including FQ dictionaries and SQ codebooks the source has.

    Raises:
      TrainingConfigError: one line naming the mismatch (model family, or the configuration
        values that differ: resolution, widths, label size, FQ blocks, ...) or what is wrong
        with the path. Nothing is copied then.
    """
    source = _source_networks(path, model, tuple(networks))
    loaded, pairs, notes = [], [], []
    for name, network in networks.items():
        given = name if name in source else "G" if name == "Gs" and "G" in source else None
        if given is None:
            notes.append(f"{name} starts fresh: {path} has no {name}.")
            continue
        matched, fresh_fq, fresh_sq = _matching_variables(path, name, network, source[given])
        pairs += matched
        loaded.append(name if given == name else f"{name} (from {given})")
        if fresh_fq:
            notes.append(f"FQ dictionaries of {name} ({', '.join(fresh_fq)}) start fresh: "
                         f"{path} has none.")
        if fresh_sq:
            notes.append(f"The SQ codebook of {name} ({fresh_sq}) starts fresh: {path} has "
                         "none.")
    if not loaded:
        raise TrainingConfigError(f"--init-from {path}: holds none of this run's networks "
                                  f"({', '.join(networks)}).")
    for variable, value in pairs:
        variable.assign(value)
    log(f"Initialised from {path}: {', '.join(loaded)}.")
    for note in notes:
        log(note)


def _source_networks(path, model, names):
    """{name: network} of an --init-from path (TrainingConfigError if unusable)."""
    from export.paths import ExportError, path_kind, run_dir_of, run_family
    from training.run_options import family_module
    try:
        kind, path = path_kind(path)
        if kind == "savedmodel":
            raise ExportError(f"{path} is an exported generator (no D, no Gs); give the run "
                              "folder, one of its checkpoints or converted networks.")
        if kind == "converted":
            from networks import convert
            return convert.load_networks(path)
        run_dir, checkpoint = (path, None) if kind == "run" else (run_dir_of(path), path)
        source_model = run_family(run_dir)
        if source_model != model:
            raise ExportError(f"{path} is a {source_model} run and this run trains {model}; "
                              f"the model family must be the same.")
        return family_module(model).load_networks(run_dir, checkpoint, which=names)[1]
    except (ValueError, OSError, KeyError) as error:   # ExportError is a ValueError
        raise TrainingConfigError(f"--init-from {error}") from None


def _matching_variables(path, name, target, source):
    """([(target variable, source value)], names of target FQ layers left fresh, name of the
    target SQ layer left fresh or None) pairing the variables of two networks by path;
    TrainingConfigError naming what differs."""
    if type(source) is not type(target):
        from export import family_of
        raise TrainingConfigError(
            f"--init-from {path}: its {name} is a {family_of(source)} network "
            f"({type(source).__name__}) and this run trains {family_of(target)} "
            f"({type(target).__name__}); the model family must be the same.")
    fq_source = getattr(source, "fq_layers", [])
    fq_target = getattr(target, "fq_layers", []) if not fq_source else []
    sq_target = getattr(target, "sq", None) if getattr(source, "sq", None) is None else None
    fresh = {id(v) for layer in fq_target + [sq_target] if layer is not None
             for v in layer.variables}
    skipped = (_RNG_STATE,) + RECOMPUTED
    here = {_variable_key(target, v): v for v in target.variables
            if id(v) not in fresh and v.name not in skipped}
    there = {_variable_key(source, v): v for v in source.variables if v.name not in skipped}
    differ = sorted(set(here) ^ set(there)) + sorted(
        k for k in set(here) & set(there) if tuple(here[k].shape) != tuple(there[k].shape))
    if differ:
        config_there, config_here = source.get_config(), target.get_config()
        keys = [k for k in sorted(set(config_here) | set(config_there))
                if k not in ("name", "trainable", "dtype", "seed")
                and not (fq_target and k.startswith("fq"))
                and not (sq_target is not None and k.startswith("sq_"))
                and config_there.get(k) != config_here.get(k)]
        what = "; ".join(f"{k} {config_there.get(k)!r} there, {config_here.get(k)!r} here"
                         for k in keys)
        if not what:
            k = differ[0]
            shapes = [tuple(d[k].shape) if k in d else "absent" for d in (there, here)]
            what = f"variable {k} {shapes[0]} there, {shapes[1]} here"
        hint = (" (--conditional / --noconditional choose this run's label input)"
                if "c_dim" in keys else
                " (--sq and the --sq-* flags choose this run's style quantization)"
                if any(k.startswith("sq_") for k in keys) else "")
        raise TrainingConfigError(f"--init-from {path}: its {name} differs from this run's: "
                                  f"{what}{hint}.")
    return ([(here[k], there[k].numpy()) for k in here], [layer.name for layer in fq_target],
            None if sq_target is None else sq_target.name)


_RNG_STATE = "seed_generator_state"   # keras.random.SeedGenerator's variable: not a weight


def _variable_key(network, variable):
    """A variable's path without its network's name (converted networks have other names)."""
    return variable.path.removeprefix(network.name + "/")
