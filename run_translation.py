"""Translate a folder of images with a trained U-GAT-IT, A->B or B->A (the official test phase).

    python run_translation.py --network runs/00000-ugatit-selfie2anime --input selfies \\
        --outdir anime
    python run_translation.py --network runs/00000-ugatit-selfie2anime --direction B2A \\
        --input anime --outdir selfies --strips
    python run_translation.py --network runs/00000-ugatit-selfie2anime/export --input selfies \\
        --outdir anime
    python run_translation.py --network converted/selfie2anime --input selfies --outdir anime

--network is a run folder of `run_training.py --model ugatit` (the latest checkpoint, or
--checkpoint runs/.../checkpoints/ckpt-N), an exported SavedModel (<run>/export, written at the
end of training, or run_export.py's output) or a folder written by `run_convert.py --source
ugatit-pytorch` (official PyTorch weights). All of them translate through the same functions
(export/ugatit.py), so a run folder and its export write identical PNGs. Every image under
--input (walked recursively) is resized to the network's size (bilinear, as the official test
transform) and translated; the result is written as --outdir/<relative path>.png. --strips also
writes the official 7-panel column per image (real, identity heatmap, identity, translation
heatmap, translation, cycle heatmap, cycle) to --outdir/strips/<relative path>.png. --outdir
must be new or empty; it appears only once every image is done.
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

import cli_common  # noqa: E402

FLAGS = flags.FLAGS
DIRECTIONS = ("A2B", "B2A")


# Old spellings, kept for one release (cli_common).
RENAMED = {"output": "outdir", "size": "resolution"}


def define_flags(fv=FLAGS):
    """All flags of run_translation.py (defined only when run as a script, or on `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("network", None, "Run folder of run_training.py --model ugatit, its "
                        "exported SavedModel (<run>/export, run_export.py), or a folder of "
                        "converted official weights (run_convert.py --source ugatit-pytorch).",
                        **d)
    flags.DEFINE_string("checkpoint", None, "Checkpoint of the run to use (default: the latest "
                        "in <network>/checkpoints).", **d)
    flags.DEFINE_string("input", None, "Folder of source-domain images (walked recursively).",
                        **d)
    flags.DEFINE_string("outdir", None, "New (or empty) folder for the translations.", **d)
    flags.DEFINE_enum("direction", "A2B", list(DIRECTIONS), "A2B uses genA2B, B2A genB2A.", **d)
    flags.DEFINE_boolean("strips", False, "Also write the 7-panel strips with CAM heatmaps.",
                         **d)
    flags.DEFINE_integer("resolution", 0, "Light-mode networks: translate at this size "
                         "(divisible by 4); 0 = the size the network was trained at (a "
                         "SavedModel: the size it was exported at).", **d)
    flags.DEFINE_integer("batch", 8, "Images per forward pass.", **d)
    cli_common.define_renamed(fv, RENAMED)


SIGNATURES = ("a2b", "b2a", "a2b_float", "b2a_float")


def load_translator(network, checkpoint=None, size=0):
    """The U-GAT-IT translation functions (export/ugatit.py's signatures) of a model.

    Args:
      network: an exported SavedModel (run_export.py, or <run>/export written at the end of
        training), a run folder of run_training.py --model ugatit, or converted official
        weights (run_convert.py --source ugatit-pytorch).
      checkpoint: run folders only: the checkpoint to use (default: the latest).
      size: light-mode networks: translate at this size (0 = the size they were trained at).
        A SavedModel translates at the size it was exported at.
    Returns:
      export.Generator with the SIGNATURES. Run folders and converted weights are traced in
      memory through export.build_module, the functions their SavedModel holds, so a folder
      translates to the same PNGs from a run and from its export.
    Raises:
      FileNotFoundError / ValueError with one line naming what is wrong and where it looked.
    """
    import export
    from export.paths import is_savedmodel
    from export.ugatit import EXPORTER
    if is_savedmodel(network):
        if checkpoint:
            raise ValueError(f"--checkpoint applies to run folders; {network} is an exported "
                             "SavedModel.")
        translator = export.Generator.from_savedmodel(network)
        missing = [name for name in SIGNATURES if not translator.has(name)]
        if missing:
            family = translator.metadata.get("family", "foreign")
            raise ValueError(f"{network} is a {family} SavedModel without the U-GAT-IT "
                             f"signatures ({', '.join(missing)}); export a U-GAT-IT run with "
                             "run_export.py.")
        exported = translator_size(translator)
        if size and size != exported:
            raise ValueError(f"--resolution {size}: the SavedModel {network} translates "
                             f"{exported}x{exported} images (set at export); drop --resolution or "
                             "translate from the run folder.")
        return translator
    if os.path.isfile(os.path.join(network, "training_options.json")):
        pair, settings, metadata = EXPORTER.load_run(network, checkpoint)
    elif os.path.isfile(os.path.join(network, "networks.json")):
        if checkpoint:
            raise ValueError(f"--checkpoint applies to run folders; {network} holds converted "
                             "networks (networks.json).")
        from networks import convert
        pair = EXPORTER.converted_network(convert.load_networks(network), network)
        settings, metadata = {}, {"source": os.path.abspath(network)}
    else:
        raise FileNotFoundError(f"{network}: neither a U-GAT-IT run folder (looked for "
                                "training_options.json), an exported SavedModel "
                                "(saved_model.pb) nor converted networks (networks.json).")
    if size:
        settings["size"] = size
    module = export.build_module(pair, "ugatit", **settings)
    module.update_metadata(metadata)
    return export.Generator.from_module(module, network)


def translator_size(translator):
    """The image side S the translator's *_float signatures take."""
    return int(translator.input_spec("a2b_float", "images_float").shape[1])


def translate_folder(translator, input_dir, output_dir, direction="A2B", strips=False,
                     batch=8, log=print):
    """Translates every image under input_dir; see the module docstring. Returns the count.

    translator: `load_translator(...)`. Each image is resized as the test pipeline does
    (datasets/unpaired.py) and goes through a2b_float / b2a_float; the strips' cycle panel
    translates the float translation back (not its uint8 rounding), as the training strips.
    """
    import numpy as np

    from datasets.images import list_image_files, load_image
    from datasets.unpaired import inference_transform, verify_images
    from training.logs import save_image_grid
    from training.ugatit_trainer import strip, to_uint8

    forward, backward = (("a2b_float", "b2a_float") if direction == "A2B"
                         else ("b2a_float", "a2b_float"))
    size = translator_size(translator)
    paths, _ = list_image_files(input_dir)       # absolute, sorted by relative path
    files = [os.path.relpath(p, os.path.abspath(input_dir)) for p in paths]
    targets = [os.path.splitext(f)[0] + ".png" for f in files]
    if strips and any(t.split(os.sep)[0] == "strips" for t in targets):
        raise ValueError(f"{input_dir} has a 'strips' subfolder, where --strips writes; rename "
                         "it or drop --strips.")
    if len(set(targets)) != len(targets):
        twins = sorted({t for t in targets if targets.count(t) > 1})
        raise ValueError(f"{input_dir}: several images would be written as {twins[0]} (same "
                         "name, different extensions); rename one.")
    bad = verify_images(paths)
    if bad:
        raise ValueError(f"{bad[0][1]}" + (f" ({len(bad)} bad files)" if len(bad) > 1 else ""))
    if os.path.exists(output_dir) and os.listdir(output_dir):
        raise ValueError(f"--outdir {output_dir} exists and is not empty; choose a new folder.")

    def prepare(path):
        return inference_transform(load_image(path), size).numpy()

    staging = f"{os.path.normpath(output_dir)}.partial-{os.getpid()}"
    try:
        for start in range(0, len(files), batch):
            images = np.stack([prepare(p) for p in paths[start:start + batch]]).astype(np.float32)
            fake = translator(forward, images_float=images)
            if strips:
                identity = translator(backward, images_float=images)
                cycle = translator(backward, images_float=fake["images_float"])
                # The official 7 panels (training.ugatit_trainer.translation_panels).
                panels = np.stack([to_uint8(images), identity["heatmap"], identity["images"],
                                   fake["heatmap"], fake["images"], cycle["heatmap"],
                                   cycle["images"]], axis=1)
            for i, target in enumerate(targets[start:start + batch]):
                out = os.path.join(staging, target)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                save_image_grid(out, fake["images"][i:i + 1], columns=1)
                if strips:
                    out = os.path.join(staging, "strips", target)
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    save_image_grid(out, strip(panels[i:i + 1])[np.newaxis], columns=1)
            log(f"{min(start + batch, len(files))}/{len(files)} images")
        if os.path.isdir(output_dir):
            os.rmdir(output_dir)  # empty (checked above)
        os.replace(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return len(files)


def main(argv, fv=FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli_common.warn_renamed("run_translation.py", fv, RENAMED)
    for name in ("network", "input", "outdir"):
        if not fv[name].value:
            raise app.UsageError(f"--{name} is required.")
    if fv.batch < 1:
        raise app.UsageError("--batch must be at least 1.")
    if fv.resolution and (fv.resolution % 4 or fv.resolution < 8):
        raise app.UsageError(f"--resolution {fv.resolution}: must be divisible by 4 and at "
                             "least 8.")
    if not os.path.isdir(fv.input):
        raise app.UsageError(f"--input {fv.input}: no such folder.")
    if os.path.exists(fv.outdir) and (not os.path.isdir(fv.outdir) or os.listdir(fv.outdir)):
        raise app.UsageError(f"--outdir {fv.outdir} exists and is not empty; choose a new "
                             "folder.")
    cli_common.import_tensorflow_quietly()
    try:
        translator = load_translator(fv.network, fv.checkpoint, fv.resolution)
    except (FileNotFoundError, ValueError) as e:   # ExportError is a ValueError
        raise app.UsageError(str(e)) from None
    size = translator_size(translator)
    from datasets import DatasetError
    try:
        count = translate_folder(translator, fv.input, fv.outdir, fv.direction, fv.strips,
                                 fv.batch)
    except (ValueError, DatasetError) as e:
        raise app.UsageError(str(e)) from None
    print(f"Translated {count} images {fv.direction} at {size}x{size} into {fv.outdir}"
          + (f" (strips in {os.path.join(fv.outdir, 'strips')})" if fv.strips else "") + ".")
    return 0


def run(argv, fv=FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_translation.py", main, argv, fv)


if __name__ == "__main__":
    define_flags()
    cli_common.start("run_translation.py", run)
