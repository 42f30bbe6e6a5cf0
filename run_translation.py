"""Translate a folder of images with a trained U-GAT-IT, A->B or B->A (the official test phase).

    python run_translation.py --network runs/00000-ugatit-selfie2anime --input selfies \\
        --output anime
    python run_translation.py --network runs/00000-ugatit-selfie2anime --direction B2A \\
        --input anime --output selfies --strips
    python run_translation.py --network converted/selfie2anime --input selfies --output anime

--network is a run folder of `run_training.py --model ugatit` (the latest checkpoint, or
--checkpoint runs/.../checkpoints/ckpt-N) or a folder written by `run_convert.py --source
ugatit` (official PyTorch weights). Every image under --input (walked recursively) is resized to
the network's size (bilinear, as the official test transform) and translated; the result is
written as --output/<relative path>.png. --strips also writes the official 7-panel column per
image (real, identity heatmap, identity, translation heatmap, translation, cycle heatmap, cycle)
to --output/strips/<relative path>.png. --output must be new or empty; it appears only once
every image is done.
"""

import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
DIRECTIONS = ("A2B", "B2A")


def define_flags(fv=FLAGS):
    """All flags of run_translation.py (defined only when run as a script, or on `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("network", None, "Run folder of run_training.py --model ugatit, or a "
                        "folder of converted official weights (run_convert.py --source ugatit).",
                        **d)
    flags.DEFINE_string("checkpoint", None, "Checkpoint of the run to use (default: the latest "
                        "in <network>/checkpoints).", **d)
    flags.DEFINE_string("input", None, "Folder of source-domain images (walked recursively).",
                        **d)
    flags.DEFINE_string("output", None, "New (or empty) folder for the translations.", **d)
    flags.DEFINE_enum("direction", "A2B", list(DIRECTIONS), "A2B uses genA2B, B2A genB2A.", **d)
    flags.DEFINE_boolean("strips", False, "Also write the 7-panel strips with CAM heatmaps.",
                         **d)
    flags.DEFINE_integer("size", 0, "Light-mode networks: translate at this size (divisible by "
                         "4); 0 = the size the network was trained at.", **d)
    flags.DEFINE_integer("batch", 8, "Images per forward pass.", **d)


def load_generators(network, checkpoint=None):
    """({"genA2B": G, "genB2A": G}, size) from a run folder or converted weights.

    Raises:
      FileNotFoundError / ValueError with one line naming what is missing and where it looked.
    """
    if os.path.isfile(os.path.join(network, "training_options.json")):
        from training import ugatit_loop
        options, nets = ugatit_loop.load_networks(network, checkpoint)
        return nets, options.size
    if os.path.isfile(os.path.join(network, "networks.json")):
        if checkpoint:
            raise ValueError(f"--checkpoint applies to run folders; {network} holds converted "
                             "networks (networks.json).")
        from networks import convert
        nets = convert.load_networks(network)
        missing = [n for n in ("genA2B", "genB2A") if n not in nets]
        if missing:
            raise ValueError(f"{network} has no {' or '.join(missing)}; convert both generators "
                             "(run_convert.py --source ugatit).")
        return {n: nets[n] for n in ("genA2B", "genB2A")}, nets["genA2B"].img_size
    raise FileNotFoundError(f"{network}: neither a U-GAT-IT run folder (looked for "
                            "training_options.json) nor converted networks (networks.json).")


def translate_folder(nets, size, input_dir, output_dir, direction="A2B", strips=False,
                     batch=8, log=print):
    """Translates every image under input_dir; see the module docstring. Returns the count."""
    import numpy as np
    import tensorflow as tf

    from datasets.images import list_image_files, load_image
    from datasets.unpaired import verify_images
    from training.logs import save_image_grid
    from training.ugatit_trainer import strip, to_uint8, translation_panels

    forward, backward = ((nets["genA2B"], nets["genB2A"]) if direction == "A2B"
                         else (nets["genB2A"], nets["genA2B"]))
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
        raise ValueError(f"--output {output_dir} exists and is not empty; choose a new folder.")

    def prepare(path):
        image = tf.image.resize(load_image(path), [size, size], "bilinear", antialias=True)
        return image.numpy() * (2.0 / 255.0) - 1.0

    translate = tf.function(lambda x: forward(x, training=False)[0])
    staging = f"{os.path.normpath(output_dir)}.partial-{os.getpid()}"
    try:
        for start in range(0, len(files), batch):
            images = np.stack([prepare(p) for p in paths[start:start + batch]]).astype(np.float32)
            fakes = to_uint8(translate(tf.constant(images)).numpy())
            panels = translation_panels(forward, backward, images) if strips else None
            for i, target in enumerate(targets[start:start + batch]):
                out = os.path.join(staging, target)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                save_image_grid(out, fakes[i:i + 1], columns=1)
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
    for name in ("network", "input", "output"):
        if not fv[name].value:
            raise app.UsageError(f"--{name} is required.")
    if fv.batch < 1:
        raise app.UsageError("--batch must be at least 1.")
    if fv.size and (fv.size % 4 or fv.size < 8):
        raise app.UsageError(f"--size {fv.size}: must be divisible by 4 and at least 8.")
    if not os.path.isdir(fv.input):
        raise app.UsageError(f"--input {fv.input}: no such folder.")
    if os.path.exists(fv.output) and (not os.path.isdir(fv.output) or os.listdir(fv.output)):
        raise app.UsageError(f"--output {fv.output} exists and is not empty; choose a new folder.")
    try:
        nets, size = load_generators(fv.network, fv.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise app.UsageError(str(e)) from None
    if fv.size and fv.size != size:
        if not nets["genA2B"].light:
            raise app.UsageError(f"--size {fv.size}: this full-mode network only translates "
                                 f"{size}x{size} images (its MLP sees the flattened features).")
        size = fv.size
    from datasets import DatasetError
    try:
        count = translate_folder(nets, size, fv.input, fv.output, fv.direction, fv.strips,
                                 fv.batch)
    except (ValueError, DatasetError) as e:
        raise app.UsageError(str(e)) from None
    print(f"Translated {count} images {fv.direction} at {size}x{size} into {fv.output}"
          + (f" (strips in {os.path.join(fv.output, 'strips')})" if fv.strips else "") + ".")
    return 0


def run(argv, fv=FLAGS):
    """main() with usage errors as one line on stderr (absl would print the whole help)."""
    try:
        return main(argv, fv)
    except app.UsageError as e:
        print(f"run_translation.py: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    define_flags()
    app.run(run)
