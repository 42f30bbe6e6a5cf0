"""Generator export: SavedModels that load with plain TensorFlow, and the generators the
generation tools sample from.

    from export import export_generator, export_run, load_generator
    export_generator(Gs, "runs/00000-stylegan2-shapes/export")     # an in-memory generator
    export_run("runs/00000-stylegan2-shapes")                       # a run folder's latest Gs
    G = load_generator(path)   # SavedModel, run folder, checkpoint or converted networks
    G("serving_default", z=z, truncation_psi=0.7)["images"]         # uint8 (N, H, W, 3)

Loading an export needs TensorFlow only:

    import tensorflow as tf
    G = tf.saved_model.load("runs/00000-stylegan2-shapes/export")
    images = G.signatures["serving_default"](z=tf.random.normal([4, 64]),
                                             truncation_psi=tf.constant(0.7))["images"]

Modules: `export.core` (the machinery; how to add a model family: one `Exporter` subclass and
one line in `FAMILIES`), `export.stylegan` (ProGAN, StyleGAN, StyleGAN2 signatures),
`export.paths` (what a model path is, without TensorFlow). The names below are imported from
`export.core` on first use, so `import export.paths` stays free of TensorFlow.
"""

import importlib

from export.paths import ExportError, default_export_dir, path_kind

_CORE = ("FAMILIES", "ExportModule", "Exporter", "Generator", "build_module", "export_generator",
         "export_run", "exporter_for", "family_of", "float32_copy", "image_outputs",
         "load_generator", "load_network", "save_module")

__all__ = ["ExportError", "default_export_dir", "path_kind", *_CORE]


def __getattr__(name):
    if name in _CORE:
        return getattr(importlib.import_module("export.core"), name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
