r"""Export a trained generator as a TensorFlow SavedModel that loads without this project.

    python run_export.py --network runs/00000-stylegan2-shapes            # -> <run>/export
    python run_export.py --network runs/00000-stylegan2-shapes/checkpoints/ckpt-300000 \
        --outdir exports/ffhq-300k
    python run_export.py --network converted/ffhq --outdir exports/ffhq    # run_convert.py output

--network: a run folder (its latest checkpoint), one checkpoint of a run, or converted official
weights (networks.json). The generator is Gs (the EMA generator), in float32, at the stage a
progressive run reached; for U-GAT-IT, both generators (genA2B, genB2A) at the training size.
Training runs export themselves at the end into <run>/export.

The SavedModel (StyleGAN family; see export/stylegan.py):
    serving_default(z float32 [N, z_dim], truncation_psi float32 [] [, labels float32 [N, c_dim]])
        -> images uint8 [N, H, W, 3], images_float float32 [N, H, W, C] in [-1, 1]
    mapping(z, truncation_psi [, labels]) -> w;  synthesis(w) -> images, images_float
Load it with plain TensorFlow:
    G = tf.saved_model.load(path)
    images = G.signatures["serving_default"](z=z, truncation_psi=tf.constant(0.7))["images"]
U-GAT-IT (export/ugatit.py): a2b(images uint8 [N, H, W, 3]) and b2a(...) -> images uint8,
images_float, heatmap uint8 (CAM, JET colours), cam_logit; serving_default = a2b.
"""

import os
import sys

from absl import app, flags, logging

import cli_common


# Old spellings, kept for one release (cli_common).
RENAMED = {"out": "outdir"}


def define_flags(flag_values=flags.FLAGS):
    """Defines the flags in `flag_values` (only when run as a script, or on tests' own
    FlagValues, so importing this module never clashes with another CLI's flags)."""
    d = dict(flag_values=flag_values)
    flags.DEFINE_string("network", None, "Run folder, checkpoint (<run>/checkpoints/ckpt-N) or "
                        "converted networks folder (networks.json).", **d)
    flags.DEFINE_string("outdir", None, "SavedModel folder to create (default: <run>/export, "
                        "<run>/export-ckpt-N for a checkpoint, <dir>/export for converted "
                        "networks).", **d)
    flags.DEFINE_enum("noise-mode", "const", ["const", "none"], "Noise inputs (StyleGAN, "
                      "StyleGAN2): const = the stored noise maps (deterministic, as the official "
                      "generation scripts); none = no noise.", **d)
    flags.DEFINE_string("truncation-cutoff", "auto", "Dlatent layers the truncation applies to: "
                        "auto = the model's official convention (StyleGAN 8, StyleGAN2 all), "
                        "all, or a number of layers.", **d)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing export at --outdir.", **d)
    cli_common.define_renamed(flag_values, RENAMED)


def _cutoff(text):
    text = (text or "").strip().lower()
    if text == "auto":
        return "auto"
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise app.UsageError(f"--truncation-cutoff {text!r}: use auto, all or a positive number "
                             "of layers.")
    return value


def main(argv, fv=flags.FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli_common.warn_renamed("run_export.py", fv, RENAMED)
    if not fv.network:
        raise app.UsageError("--network is required (a run folder, checkpoint or converted "
                             "networks).")
    cutoff = _cutoff(fv["truncation-cutoff"].value)
    from export.paths import ExportError, default_export_dir, path_kind
    try:
        kind, _ = path_kind(fv.network)
        if kind == "savedmodel":
            raise ExportError(f"{fv.network} is already an exported SavedModel.")
        out = fv.outdir or default_export_dir(fv.network)
    except ExportError as error:
        raise app.UsageError(f"--network: {error}") from None
    if os.path.lexists(out) and not fv.overwrite:
        raise app.UsageError(f"--outdir {out} already exists; choose another folder or add "
                             "--overwrite.")
    cli_common.import_tensorflow_quietly()
    logging.set_verbosity(logging.WARNING)  # tf.saved_model.save logs every traced function
    import export
    # Only settings given on the command line: the defaults are the exporter's (and ProGAN
    # refuses both, having neither noise nor truncation).
    settings = {}
    if fv["noise-mode"].present:
        settings["noise_mode"] = fv["noise-mode"].value
    if fv["truncation-cutoff"].present:
        settings["truncation_cutoff"] = cutoff
    try:
        network, family, run_settings, metadata = export.load_network(fv.network)
        path = export.export_generator(network, out, family=family, overwrite=fv.overwrite,
                                       metadata=metadata, **run_settings, **settings)
    except ExportError as error:
        raise app.UsageError(str(error)) from None
    generator = export.Generator.from_savedmodel(path)
    meta = generator.metadata
    inputs = generator.inputs["serving_default"]
    if "z" not in inputs:   # image-to-image families (U-GAT-IT): images in, images out
        print(f"Exported {meta.get('family')} model ({meta.get('resolution')}x"
              f"{meta.get('resolution')} images) to {path}")
        print(f"  signatures: {', '.join(generator.names)}")
        print("  load with: tf.saved_model.load(path).signatures['serving_default']("
              + ", ".join(f"{name}=..." for name in inputs) + ")")
        return 0
    print(f"Exported {meta.get('family')} generator ({meta.get('resolution')}x"
          f"{meta.get('resolution')}, z_dim {generator.z_dim}"
          + (f", {generator.c_dim} label dims" if generator.c_dim else "") + f") to {path}")
    print(f"  signatures: {', '.join(generator.names)}")
    print("  load with: tf.saved_model.load(path).signatures['serving_default']"
          "(z=..., truncation_psi=...)")
    return 0


def run(argv, fv=flags.FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_export.py", main, argv, fv)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    define_flags()
    cli_common.start("run_export.py", run)
