"""Family-independent export machinery: the exporter interface and registry, float32 export
copies, atomic SavedModel writing, and `Generator`, the handle the generation tools call.

A SavedModel written here holds one `tf.Module` (`ExportModule`) with
  - the variables the signature functions read (the tf.Variables behind the Keras variables;
    nothing else: no optimizer, no RNG state),
  - one `tf.function` per signature, each with a full `input_signature` (dynamic batch),
    saved both as a signature (`loaded.signatures[name]`, keyword arguments, dict outputs) and
    as an attribute (`loaded.<name>(...)`),
  - `metadata`: a scalar string variable holding JSON (family, sizes, settings, provenance),
    readable with plain TensorFlow as `json.loads(loaded.metadata.numpy())`,
  - named variables a family chooses to expose (StyleGAN: `dlatent_avg`).
Nothing Keras- or project-specific is needed to load it.

Adding a model family: write `export/<family>.py` with a subclass of `Exporter` (`build`, and
`load_run` if its runs can be exported) and a module-level `EXPORTER = <YourExporter>()`, then
add `"<family>": "export.<family>"` to `FAMILIES` below. The family of a network is the last
component of its class's module (`networks.ugatit.Generator` -> "ugatit"); the family of a run
folder is the "model" entry of its `training_options.json` (run_training.py's --model).
"""

import abc
import contextlib
import importlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.saved_model import save_context  # private, stable since TF 2.4

from export.paths import (ExportError, default_export_dir, is_savedmodel, path_kind,
                          run_dir_of, run_family)

FORMAT = "fq-gan-generator"
FORMAT_VERSION = 1

# Family -> module defining EXPORTER (imported on first use).
FAMILIES = {
    "biggan": "export.biggan",
    "progan": "export.stylegan",
    "stylegan": "export.stylegan",
    "stylegan2": "export.stylegan",
    "ugatit": "export.ugatit",
}

#----------------------------------------------------------------------------
# The exporter interface.


class Exporter(abc.ABC):
    """How one model family becomes a SavedModel.

    `build` returns the signature functions (`tf.function`s with a full `input_signature` whose
    TensorSpec names equal the Python argument names; outputs are dicts of tensors, images
    through `image_outputs`; one is named "serving_default"), the metadata (JSON-serialisable
    dict) and extra named variables to expose. It receives `copy(network)`: the float32 copy of
    a Keras network (`float32_copy`); a family whose network is something else (e.g. U-GAT-IT's
    two generators) overrides `copy`. The SavedModel stores the variables the functions read.
    """

    def copy_overrides(self, network):
        """Constructor arguments to change in the export copy (exact reparametrisations only,
        e.g. StyleGAN2's fused modulated conv, served unfused)."""
        return {}

    def copy(self, network):
        """The network rebuilt in float32 with this family's overrides, weights copied."""
        return float32_copy(network, self.copy_overrides(network))

    @abc.abstractmethod
    def build(self, network, **settings):
        """-> (functions {name: tf.function}, metadata dict, attributes {name: variable})."""

    def converted_network(self, networks, path):
        """The network to export from converted networks {name: network} (run_convert.py
        output at `path`): by default the generator, Gs or G."""
        return converted_generator(networks, path)

    def load_run(self, run_dir, checkpoint=None):
        """-> (network, settings, metadata) from a run folder of this family.

        Raises ExportError when the family's runs cannot be exported."""
        raise ExportError(f"{run_dir}: exporting {type(self).__name__} runs is not supported.")


def rebuild_run(run_dir, checkpoint, load_networks, counters):
    """A run's networks and counters at a checkpoint: the common part of `Exporter.load_run`.

    Args:
      run_dir: a run folder.
      checkpoint: one of its checkpoints (run_dir/checkpoints/ckpt-N); None = the latest.
      load_networks: the family's `load_networks(run_dir, checkpoint)` -> (options, networks),
        which finds the checkpoint by `training.checkpoints.checkpoint_to_load`.
      counters: names of int64 counters in the run's checkpoint state (`checkpoint_state`),
        e.g. ("nimg",) or ("iteration",).

    Returns:
      (checkpoint, options, networks, {counter: int}).

    Raises:
      ExportError: the run is not of the family, has no checkpoint yet (or not the one named),
        or its networks cannot be rebuilt (the first line of the cause).
    """
    # Imported here: `export` itself (loading SavedModels) never imports the training code.
    from training.checkpoints import Checkpoints, checkpoint_state, latest_checkpoint
    try:
        options, networks = load_networks(run_dir, checkpoint)
    except FileNotFoundError as error:   # no checkpoint: the family's message says where
        raise ExportError(str(error).splitlines()[0]) from None
    except (OSError, ValueError, AssertionError) as error:  # DatasetError is a ValueError
        raise ExportError(f"{run_dir}: cannot rebuild the run's generator "
                          f"({str(error).splitlines()[0]}).") from None
    # load_networks checked it exists (training.checkpoints.checkpoint_to_load): only name it.
    checkpoint = checkpoint or latest_checkpoint(run_dir)
    values = {name: tf.Variable(0, dtype=tf.int64) for name in counters}
    Checkpoints(checkpoint_state(**values), run_dir).checkpoint.read(checkpoint).expect_partial()
    return checkpoint, options, networks, {name: int(v.numpy()) for name, v in values.items()}


def family_of(network):
    """'stylegan2' for networks.stylegan2.Generator, etc."""
    return type(network).__module__.rsplit(".", 1)[-1]


def exporter_for(family):
    """The registered Exporter of a family (ExportError if none)."""
    if family not in FAMILIES:
        raise ExportError(f"no exporter for model family {family!r}; exportable families: "
                          f"{', '.join(sorted(FAMILIES))}.")
    return importlib.import_module(FAMILIES[family]).EXPORTER

#----------------------------------------------------------------------------
# Building the module.


@contextlib.contextmanager
def _float32_policy():
    """Builds layers in float32 even if training set the global mixed_float16 policy."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


def float32_copy(network, overrides=None):
    """A fresh float32 copy of a Keras network (same class and config), weights copied.

    Exports always run in float32, whatever policy trained the network; called outside any
    `strategy.scope()` (as at the end of training), the copy holds plain variables even when
    the network's are mirrored. Networks that create their variables in build() (BigGAN,
    U-GAT-IT; `from_config` does not build) are built from the source's build config.
    """
    config = {**network.get_config(), **(overrides or {}), "dtype": "float32"}
    with _float32_policy():
        copy = type(network).from_config(config)
        if network.built and not copy.built:
            copy.build_from_config(network.get_build_config())
    source, target = network.variables, copy.variables
    if len(source) != len(target):
        raise RuntimeError(f"float32_copy: {type(network).__name__} rebuilt from its config has "
                           f"{len(target)} variables, the original {len(source)}.")
    for dst, src in zip(target, source):
        if dst.path.split("/", 1)[-1] != src.path.split("/", 1)[-1] or dst.shape != src.shape:
            raise RuntimeError(f"float32_copy: variable {src.path} {src.shape} does not match "
                               f"{dst.path} {dst.shape} of the rebuilt network.")
        dst.assign(tf.cast(tf.convert_to_tensor(src), dst.dtype))
    return copy


def image_outputs(x):
    """The image outputs of every signature from float NHWC images nominally in [-1, 1].

    Returns:
      {"images": uint8 (N, H, W, 3) = saturate_cast(rint((x + 1) * 127.5)) (grayscale
       repeated to RGB), "images_float": float32 (N, H, W, C) = clip(x, -1, 1)}, so that
      images == rint((images_float + 1) * 127.5) for RGB models.
    """
    x = tf.cast(x, tf.float32)
    images = tf.saturate_cast(tf.math.rint((x + 1.0) * 127.5), tf.uint8)
    if images.shape[-1] == 1:
        images = tf.tile(images, [1, 1, 1, 3])
    return {"images": images, "images_float": tf.clip_by_value(x, -1.0, 1.0)}


class ExportModule(tf.Module):
    """What an export SavedModel holds (see the module docstring); also used in memory.

    Args:
      functions: {signature name: tf.function with input_signature}; must contain
        "serving_default". Tracing them here finds the variables they read, which the module
        tracks (and a SavedModel stores): exactly those, whatever object holds them.
      metadata: JSON-serialisable dict, saved as the string variable `metadata`.
      attributes: {name: variable} exposed by name (e.g. dlatent_avg).
    """

    def __init__(self, functions, metadata, attributes=None):
        super().__init__(name="generator")
        if "serving_default" not in functions:
            raise ValueError("ExportModule: the functions must include serving_default.")
        captured = {}
        # Traced as tf.saved_model.save traces (a save context with the default options is
        # part of tf.function's cache key), so saving this module reuses these traces instead
        # of tracing every function a second time.
        with save_context.save_context(tf.saved_model.SaveOptions()):
            for function in functions.values():
                for variable in function.get_concrete_function().variables:
                    captured.setdefault(id(variable), variable)
        self.network_variables = list(captured.values())
        self._metadata_json = json.dumps(metadata, sort_keys=True)
        self.metadata = tf.Variable(self._metadata_json, trainable=False, name="metadata")
        for name, variable in (attributes or {}).items():
            setattr(self, name, _tf_variable(variable))
        self.signature_names = tuple(functions)
        for name, function in functions.items():
            setattr(self, name, function)

    @property
    def metadata_dict(self):
        return json.loads(self._metadata_json)

    def update_metadata(self, entries):
        self._metadata_json = json.dumps({**self.metadata_dict, **entries}, sort_keys=True)
        self.metadata.assign(self._metadata_json)

    def signatures(self):
        """{signature name: tf.function}, as tf.saved_model.save takes them."""
        return {name: getattr(self, name) for name in self.signature_names}


def build_module(network, family=None, **settings):
    """ExportModule of a network (its float32 copy): what `export_generator` saves."""
    family = family or family_of(network)
    exporter = exporter_for(family)
    copy = exporter.copy(network)
    functions, metadata, attributes = exporter.build(copy, **settings)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": family,
                "class": f"{type(network).__module__}.{type(network).__name__}", **metadata}
    return ExportModule(functions, metadata, attributes)

#----------------------------------------------------------------------------
# Writing SavedModels.


def save_module(module, export_dir, overwrite=False):
    """Writes `module` as a SavedModel at export_dir, atomically; returns export_dir.

    The SavedModel is written into a temporary folder beside export_dir and renamed into place,
    so export_dir is either absent, the previous export, or the complete new one. An existing
    export_dir is replaced only with overwrite=True, and only if it is a SavedModel (or empty).
    """
    export_dir = os.path.normpath(export_dir)
    if os.path.lexists(export_dir):
        if not overwrite:
            raise ExportError(f"{export_dir} already exists; choose another folder or allow "
                              "replacing it (--overwrite).")
        if not os.path.isdir(export_dir) or (os.listdir(export_dir)
                                             and not is_savedmodel(export_dir)):
            raise ExportError(f"{export_dir} exists and is not a SavedModel; refusing to "
                              "replace it. Choose another folder.")
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.tmp-", dir=parent)
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        if os.path.lexists(export_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(export_dir)}.old-", dir=parent)
            os.rename(export_dir, os.path.join(old, "previous"))
            os.rename(tmp, export_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, export_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return export_dir


def export_generator(network, export_dir, *, family=None, overwrite=False, metadata=None,
                     **settings):
    """Exports an in-memory generator as a SavedModel; returns export_dir.

    Args:
      network: the generator (e.g. the trainer's Gs); any policy or strategy (a float32 copy
        is exported).
      export_dir: the SavedModel folder to create (replaced only with overwrite=True).
      family: model family; default from the network's class module.
      overwrite: replace an existing export at export_dir (atomically).
      metadata: extra JSON-serialisable entries for the SavedModel's `metadata`.
      **settings: family settings (StyleGAN family: resolution, lod, noise_mode,
        truncation_cutoff; see `export.stylegan.StyleGANExporter.build`).
    """
    module = build_module(network, family, **settings)
    if metadata:
        module.update_metadata(metadata)
    return save_module(module, export_dir, overwrite)

#----------------------------------------------------------------------------
# Sources: run folders, checkpoints, converted networks, SavedModels.


def converted_generator(networks, path):
    """Gs (or G) of converted networks; ExportError if they hold neither."""
    name = "Gs" if "Gs" in networks else "G"
    if name not in networks:
        raise ExportError(f"{path}: converted networks without a generator "
                          f"(has {', '.join(networks)}).")
    return networks[name]


def load_network(path):
    """(network, family, settings, metadata) from a run folder, checkpoint or converted
    networks; the generator to sample from (Gs for runs, G for converted networks)."""
    kind, path = path_kind(path)
    if kind == "savedmodel":
        raise ExportError(f"{path} is already an exported SavedModel.")
    if kind == "converted":
        from networks import convert
        try:
            networks = convert.load_networks(path)
        except (OSError, ValueError, KeyError) as error:
            raise ExportError(f"{path}: cannot load converted networks ({error}).") from None
        families = {family_of(n) for n in networks.values()}
        family = families.pop() if len(families) == 1 else None
        network = (exporter_for(family).converted_network(networks, path)
                   if family in FAMILIES else converted_generator(networks, path))
        return network, family_of(network), {}, {"source": os.path.abspath(path)}
    run_dir, checkpoint = (path, None) if kind == "run" else (run_dir_of(path), path)
    family = run_family(run_dir)
    network, settings, metadata = exporter_for(family).load_run(run_dir, checkpoint)
    return network, family, settings, metadata


def export_run(path, export_dir=None, *, overwrite=False, **settings):
    """Exports the generator of a run folder, checkpoint or converted networks; returns the
    SavedModel path (default `default_export_dir(path)`). Settings override those of the run
    (e.g. noise_mode)."""
    network, family, run_settings, metadata = load_network(path)
    export_dir = export_dir or default_export_dir(path)
    return export_generator(network, export_dir, family=family, overwrite=overwrite,
                            metadata=metadata, **{**run_settings, **settings})

#----------------------------------------------------------------------------
# Generator: one interface over exported and in-memory generators.


class Generator:
    """A generator to sample from, from a SavedModel or built in memory from a run.

    Both kinds expose the same signatures (`self.names`), called with keyword tensors and
    returning dicts of numpy arrays, so images from a checkpoint and from its export are
    computed by the same functions.

    Attributes:
      metadata: the export metadata (inferred from the signatures for foreign SavedModels).
      description: where the generator came from.
      inputs: {signature: {input name: tf.TensorSpec}}.
    """

    def __init__(self, functions, inputs, metadata, description, keepalive=None):
        self._functions = functions
        self.inputs = inputs
        self.metadata = metadata
        self.description = description
        self._keepalive = keepalive  # the loaded SavedModel owns the variables

    @classmethod
    def from_module(cls, module, description):
        functions = module.signatures()
        inputs = {name: {spec.name: spec for spec in fn.input_signature}
                  for name, fn in functions.items()}
        return cls(functions, inputs, module.metadata_dict, description, module)

    @classmethod
    def from_savedmodel(cls, path):
        try:
            loaded = tf.saved_model.load(path)
        except Exception as error:  # SavedModel loading raises many error types
            raise ExportError(f"{path}: cannot load the SavedModel "
                              f"({str(error).splitlines()[0]}).") from None
        functions = dict(getattr(loaded, "signatures", {}) or {})
        if "serving_default" not in functions:
            raise ExportError(f"{path}: the SavedModel has no serving_default signature; "
                              "export the generator with run_export.py.")
        inputs = {name: dict(fn.structured_input_signature[1]) for name, fn in functions.items()}
        metadata = {}
        if isinstance(getattr(loaded, "metadata", None), tf.Variable):
            try:
                metadata = json.loads(loaded.metadata.numpy().decode())
            except ValueError:
                metadata = {}
        return cls(functions, inputs, metadata, path, loaded)

    @property
    def names(self):
        return tuple(self._functions)

    def has(self, name):
        return name in self._functions

    def input_spec(self, name, input_name):
        return self.inputs.get(name, {}).get(input_name)

    @property
    def z_dim(self):
        spec = self.input_spec("serving_default", "z")
        if spec is None or spec.shape.rank != 2 or spec.shape[-1] is None:
            tool = self.metadata.get("tool")   # families without z name their tool
            raise ExportError(f"{self.description}: serving_default has no z input of shape "
                              "[N, z_dim]; " + (
                                  f"a {self.metadata.get('family')} model: use {tool}." if tool
                                  else "not a generator of this project's format."))
        return int(spec.shape[-1])

    @property
    def c_dim(self):
        spec = self.input_spec("serving_default", "labels")
        return 0 if spec is None else int(spec.shape[-1])

    @property
    def has_truncation(self):
        """False for generators without a W space (ProGAN): truncation_psi must be 1."""
        return self.metadata.get("truncation", True)

    def __call__(self, name, **inputs):
        """Runs signature `name` on numpy / Python inputs; returns {output: numpy array}."""
        specs = self.inputs[name]
        missing = sorted(set(specs) - set(inputs))
        unknown = sorted(set(inputs) - set(specs))
        if missing or unknown:
            raise ValueError(f"{name}: inputs {sorted(specs)} expected; missing {missing}, "
                             f"unknown {unknown}.")
        tensors = {k: tf.convert_to_tensor(np.asarray(v), specs[k].dtype)
                   for k, v in inputs.items()}
        outputs = self._functions[name](**tensors)
        return {k: v.numpy() for k, v in outputs.items()}


def load_generator(path):
    """Generator from a SavedModel, run folder, checkpoint or converted networks."""
    kind, path = path_kind(path)
    if kind == "savedmodel":
        return Generator.from_savedmodel(path)
    network, family, settings, metadata = load_network(path)
    module = build_module(network, family, **settings)
    module.update_metadata(metadata)
    return Generator.from_module(module, f"{path} ({kind})")
