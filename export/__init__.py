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

Signatures of each family: `export.stylegan` (ProGAN, StyleGAN, StyleGAN2). The machinery and how
to add a family (one `Exporter` subclass and one line in `FAMILIES`): `export.core`.
"""

from export.core import (FAMILIES, ExportError, Exporter, ExportModule, Generator, build_module,
                         default_export_dir, export_generator, export_run, exporter_for,
                         family_of, float32_copy, image_outputs, load_generator, load_network,
                         path_kind, save_module)

__all__ = [
    "FAMILIES", "ExportError", "ExportModule", "Exporter", "Generator", "build_module",
    "default_export_dir", "export_generator", "export_run", "exporter_for", "family_of",
    "float32_copy", "image_outputs", "load_generator", "load_network", "path_kind",
    "save_module",
]
