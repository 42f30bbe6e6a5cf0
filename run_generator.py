r"""Generate images with a trained generator: images for seeds, style mixing, truncation sweeps.

    python run_generator.py generate-images --network runs/00000-stylegan2-shapes \
        --seeds 0-99 --trunc 0.7 --class 3 --outdir out/seeds
    python run_generator.py style-mixing-example --network runs/00000-stylegan2-shapes/export \
        --row-seeds 85,100,75,458,1500 --col-seeds 55,821,1789,293 --col-styles 0-6 --class 0 \
        --outdir out/mix
    python run_generator.py truncation-sweep --network runs/00000-stylegan2-shapes \
        --seeds 0-5 --psis 1,0.7,0.5,0,-0.5,-1 --class 4 --outdir out/truncation
    python run_generator.py generate-images --network runs/00001-biggan-shapes \
        --seeds 0-9 --classes 0-4 --grid --outdir out/classes

--network is a run folder (the latest checkpoint's Gs, at the stage the run reached), a checkpoint
(<run>/checkpoints/ckpt-N), converted official weights (networks.json, from run_convert.py) or an
exported SavedModel (run_export.py, or the <run>/export a finished run writes). A run or
checkpoint is turned in memory into the very functions its export holds, so a checkpoint and its
SavedModel give identical PNGs.

As NVlabs' tools: z = np.random.RandomState(seed).randn(z_dim); noise is the generator's stored
(const) noise; truncation psi (--trunc, default 1 = none) uses the generator's dlatent_avg with the
model's own cutoff (StyleGAN 8 layers, StyleGAN2 all); BigGAN has no W space and scales z instead
(psi * z, BigGAN-PyTorch's truncation curves; see export/biggan.py). Every image is computed by its
own call (batch 1), so it depends on its seed only: on oneDNN CPUs a batched call can differ in the
last float bits with the batch size, which flips a pixel sitting on a rounding boundary.

Outputs (--outdir is created; existing files are never replaced unless --overwrite, and that is
checked before anything is computed or written):
  generate-images       seed0000.png per seed (seed%04d as NVlabs); with --grid also
                        generate-images.png, all seeds in one grid. With --classes:
                        seed0000-class3.png per seed and class (the seed's z in every class)
                        and a grid whose rows are seeds and columns classes.
  style-mixing-example  NVlabs' figure: style-mixing-example.png, whose first row holds the column
                        seeds' images and first column the row seeds' images; the cell of row seed
                        r and column seed c is r's w with the layers --col-styles (default 0-6:
                        coarse and middle) taken from c. Plus <r>-<c>.png for every cell and
                        <s>-<s>.png for every seed's own image.
  truncation-sweep      seed0000-psi0.7.png per seed and psi, and truncation-sweep.png (rows
                        seeds, columns psis; default psis as the StyleGAN paper's figure 8).
The per-image PNGs have the generator's resolution; the three figures show images smaller than
128 pixels at least 128 pixels wide, by an integer nearest-neighbour factor (every pixel
repeated, as in the training loop's sample grids).
Class-conditional models (conditional StyleGAN family, BigGAN) need --class N (every image of
class N) or, for generate-images, --classes (a list and/or ranges: 0,3,5 or 0-9). The same for
every family: the class index becomes its one-hot label row, the `labels` input of the model's
serving_default, so a run folder and its SavedModel give the same PNGs. Unconditional models take
neither; an index outside the model's classes is a usage error.
"""

import math
import os
import re
import sys

import numpy as np
from absl import app, flags

import cli_common

COMMANDS = ("generate-images", "style-mixing-example", "truncation-sweep")
# Flags each command reads; any other command-specific flag given is a usage error.
COMMAND_FLAGS = {
    "generate-images": ("seeds", "trunc", "grid", "classes"),
    "style-mixing-example": ("row-seeds", "col-seeds", "col-styles", "trunc"),
    "truncation-sweep": ("seeds", "psis"),
}
REQUIRED_FLAGS = {
    "generate-images": ("seeds",),
    "style-mixing-example": ("row-seeds", "col-seeds"),
    "truncation-sweep": ("seeds",),
}
MAX_SEED = 2 ** 32 - 1  # np.random.RandomState seeds
MAX_IMAGES = 100000     # per list of seeds: a typo like 0-4000000000 fails at once


def define_flags(flag_values=flags.FLAGS):
    """Defines the flags in `flag_values` (only when run as a script, or on tests' own
    FlagValues, so importing this module never clashes with another CLI's flags).

    Numbers are read as strings and parsed here, so a typo gets one clear line instead of
    absl's flag-parsing report."""
    d = dict(flag_values=flag_values)
    flags.DEFINE_string("network", None, "Run folder, checkpoint (<run>/checkpoints/ckpt-N), "
                        "converted networks (networks.json) or exported SavedModel.", **d)
    flags.DEFINE_string("outdir", None, "Output folder (created if missing).", **d)
    flags.DEFINE_string("seeds", None, "Seeds: a list and/or ranges, e.g. 0-99 or 1,5,10-12 "
                        "(generate-images, truncation-sweep).", **d)
    flags.DEFINE_string("trunc", "1", "Truncation psi (1 = none; StyleGAN paper figures use "
                        "0.7, StyleGAN2's 0.5).", **d)
    flags.DEFINE_string("class", None, "Class index for conditional models (every image of "
                        "this class), e.g. --class 3.", **d)
    flags.DEFINE_string("classes", None, "generate-images: class indices and/or ranges, e.g. "
                        "0,3,5 or 0-9: one image per seed and class (the seed's z in every "
                        "class).", **d)
    flags.DEFINE_boolean("grid", False, "generate-images: also write all images as one grid.",
                         **d)
    flags.DEFINE_string("row-seeds", None, "style-mixing-example: seeds of the rows (they give "
                        "the styles not in --col-styles).", **d)
    flags.DEFINE_string("col-seeds", None, "style-mixing-example: seeds of the columns (they "
                        "give the styles in --col-styles).", **d)
    flags.DEFINE_string("col-styles", "0-6", "style-mixing-example: dlatent layers taken from "
                        "the column seed (NVlabs default 0-6: coarse and middle styles).", **d)
    flags.DEFINE_string("psis", "1,0.7,0.5,0,-0.5,-1", "truncation-sweep: psi values, the "
                        "columns of the grid.", **d)
    flags.DEFINE_boolean("overwrite", False, "Replace existing output files.", **d)

#----------------------------------------------------------------------------
# Parsing (no TensorFlow).


def parse_int_list(text, flag, maximum=MAX_SEED, max_count=MAX_IMAGES):
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]; app.UsageError on anything else (bad syntax, a
    range going down, a value above `maximum`, a value listed twice, more than max_count)."""
    values, seen = [], set()
    for part in (text or "").split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise app.UsageError(f"--{flag} {text!r}: expected non-negative integers and ranges "
                                 "like 0-99 or 1,5,10-12.")
        start = int(match.group(1))
        end = start if match.group(2) is None else int(match.group(2))
        if end < start:
            raise app.UsageError(f"--{flag} {part}: the range ends below its start; write "
                                 f"{end}-{start}.")
        if end > maximum:
            raise app.UsageError(f"--{flag} {part}: values must be at most {maximum}.")
        if len(values) + end - start + 1 > max_count:
            raise app.UsageError(f"--{flag} {text!r}: more than {max_count} values.")
        for value in range(start, end + 1):
            if value in seen:
                raise app.UsageError(f"--{flag} {text!r}: {value} is listed twice.")
            seen.add(value)
            values.append(value)
    return values


def parse_class(text):
    """--class: one non-negative integer (checked against the model's classes once loaded)."""
    text = (text or "").strip()
    if not re.fullmatch(r"\d+", text):
        raise app.UsageError(f"--class {text!r}: a class index is a non-negative integer, e.g. "
                             "--class 3 (several classes: --classes 0,3,5).")
    return int(text)


def parse_float(text, flag):
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise app.UsageError(f"--{flag} {text!r} is not a number; give e.g. --{flag} 0.7.")
    return value


def parse_floats(text, flag):
    values = [parse_float(part.strip(), flag) for part in (text or "").split(",")]
    if len(set(values)) != len(values):
        raise app.UsageError(f"--{flag} {text!r}: a value is listed twice.")
    return values


def psi_name(psi):
    return f"{psi:g}"


def class_file(seed, class_index):
    return f"seed{seed:04d}-class{class_index}.png"


def output_files(command, options):
    """The files a command will write (checked for existence before anything runs)."""
    if command == "generate-images":
        if options["classes"]:
            files = [class_file(s, c) for s in options["seeds"] for c in options["classes"]]
        else:
            files = [f"seed{s:04d}.png" for s in options["seeds"]]
        return files + (["generate-images.png"] if options["grid"] else [])
    if command == "truncation-sweep":
        return [f"seed{s:04d}-psi{psi_name(p)}.png" for s in options["seeds"]
                for p in options["psis"]] + ["truncation-sweep.png"]
    seeds = list(dict.fromkeys(options["row_seeds"] + options["col_seeds"]))
    files = [f"{s}-{s}.png" for s in seeds]
    files += [f"{r}-{c}.png" for r in options["row_seeds"] for c in options["col_seeds"]
              if r != c]
    return files + ["style-mixing-example.png"]


def parse_command_line(argv, fv):
    """(command, options) from argv and flags; app.UsageError for every user error."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = f" {argv[1]!r}" if len(argv) > 1 else ""
        raise app.UsageError(f"give a command{given and ' (not' + given + ')'}: "
                             f"{', '.join(COMMANDS)}.")
    if len(argv) > 2:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[2:])}")
    command = argv[1]
    for other in sorted({f for fs in COMMAND_FLAGS.values() for f in fs}
                        - set(COMMAND_FLAGS[command])):
        if fv[other].present:
            users = [c for c, fs in COMMAND_FLAGS.items() if other in fs]
            raise app.UsageError(f"--{other} is for {' and '.join(users)}, not {command}.")
    for name in ("network", "outdir") + REQUIRED_FLAGS[command]:
        if not fv[name].value:
            raise app.UsageError(f"{command} needs --{name}.")
    options = {"network": fv.network, "outdir": fv.outdir, "overwrite": fv.overwrite,
               "trunc": parse_float(fv.trunc, "trunc"), "grid": fv.grid, "class": None,
               "classes": None}
    if fv["class"].value is not None and fv["classes"].value is not None:
        raise app.UsageError("give --class (every image of one class) or --classes (every seed "
                             "in each class), not both.")
    if fv["class"].value is not None:
        options["class"] = parse_class(fv["class"].value)
    if fv["classes"].value is not None:
        options["classes"] = parse_int_list(fv["classes"].value, "classes")
    if command == "style-mixing-example":
        options["row_seeds"] = parse_int_list(fv["row-seeds"].value, "row-seeds")
        options["col_seeds"] = parse_int_list(fv["col-seeds"].value, "col-seeds")
        options["col_styles"] = parse_int_list(fv["col-styles"].value, "col-styles", 10000)
    else:
        options["seeds"] = parse_int_list(fv.seeds, "seeds")
    if command == "truncation-sweep":
        options["psis"] = parse_floats(fv.psis, "psis")
    return command, options

#----------------------------------------------------------------------------
# Generation (a `export.Generator`: SavedModel or in-memory, same signatures).


def latents(seed, z_dim):
    """NVlabs: z = RandomState(seed).randn(z_dim), as float32 (1, z_dim)."""
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)


def _labels(generator, class_index):
    if not generator.c_dim:
        return {}
    return {"labels": np.eye(generator.c_dim, dtype=np.float32)[[class_index]]}


def generate_images(generator, seeds, psi, class_index=None):
    """{seed: uint8 (H, W, 3)}, one serving_default call per seed."""
    labels = _labels(generator, class_index)
    return {seed: generator("serving_default", z=latents(seed, generator.z_dim),
                            truncation_psi=psi, **labels)["images"][0] for seed in seeds}


def generate_class_images(generator, seeds, classes, psi):
    """{(seed, class): uint8 (H, W, 3)}: each seed's z in each class, one call per image."""
    return {(seed, c): generate_images(generator, [seed], psi, c)[seed]
            for seed in seeds for c in classes}


def truncation_sweep(generator, seeds, psis, class_index=None):
    """{(seed, psi): uint8 (H, W, 3)}."""
    labels = _labels(generator, class_index)
    return {(seed, psi): generator("serving_default", z=latents(seed, generator.z_dim),
                                   truncation_psi=psi, **labels)["images"][0]
            for seed in seeds for psi in psis}


def style_mixing(generator, row_seeds, col_seeds, psi, col_styles, class_index=None):
    """NVlabs' style mixing: w of the row seed with the layers col_styles from the column seed.

    Returns:
      (ws {seed: (num_ws, w_dim)}, mixed {(row, col): (num_ws, w_dim)}, images {(row, col):
      uint8 (H, W, 3)}) where images[(s, s)] is seed s's own image (w = ws[s]).
    """
    labels = _labels(generator, class_index)
    seeds = list(dict.fromkeys(row_seeds + col_seeds))
    ws = {s: generator("mapping", z=latents(s, generator.z_dim), truncation_psi=psi,
                       **labels)["w"][0] for s in seeds}
    mixed = {(s, s): ws[s] for s in seeds}
    for row in row_seeds:
        for col in col_seeds:
            w = ws[row].copy()
            w[col_styles] = ws[col][col_styles]
            mixed[(row, col)] = w
    images = {key: generator("synthesis", w=w[np.newaxis])["images"][0]
              for key, w in mixed.items()}
    return ws, mixed, images


def style_mixing_grid(images, row_seeds, col_seeds):
    """NVlabs' figure as a list of cells, row-major, (len(rows) + 1) x (len(cols) + 1): a black
    corner, the column seeds' images, then per row seed its image and its mixes."""
    blank = np.zeros_like(next(iter(images.values())))
    cells = [blank] + [images[(c, c)] for c in col_seeds]
    for r in row_seeds:
        cells += [images[(r, r)]] + [images[(r, c)] for c in col_seeds]
    return cells

#----------------------------------------------------------------------------


def _check_model(command, options, generator):
    """Checks that need the loaded generator (labels, truncation, styles)."""
    c_dim = generator.c_dim
    flag = "--classes" if options["classes"] is not None else "--class"
    requested = options["classes"] if options["classes"] is not None else (
        [] if options["class"] is None else [options["class"]])
    if c_dim and not requested:
        raise app.UsageError(f"the model is conditional ({c_dim} classes): give --class "
                             f"0..{c_dim - 1}" + (" or --classes (e.g. --classes 0-"
                                                  f"{c_dim - 1})" if command == "generate-images"
                                                  else "") + ".")
    if not c_dim and requested:
        raise app.UsageError(f"{flag} given, but the model is unconditional; drop {flag}.")
    wrong = [c for c in requested if c >= c_dim]
    if wrong:
        raise app.UsageError(f"{flag} {wrong[0]}: the model has classes 0..{c_dim - 1}.")
    if not generator.has_truncation:
        family = generator.metadata.get("family", "this model")
        if command == "truncation-sweep":
            raise app.UsageError(f"truncation-sweep needs a mapping network; {family} has none, "
                                 "hence no truncation.")
        if options["trunc"] != 1.0:
            raise app.UsageError(f"--trunc {options['trunc']:g}: {family} has no mapping "
                                 "network, hence no truncation; use --trunc 1.")
    if command == "style-mixing-example":
        if not (generator.has("mapping") and generator.has("synthesis")):
            raise app.UsageError("style mixing needs the mapping and synthesis signatures; "
                                 f"{generator.description} has only "
                                 f"{', '.join(generator.names)} (ProGAN and BigGAN have no "
                                 "styles).")
        used = generator.metadata.get("num_ws_used") or int(
            generator.input_spec("synthesis", "w").shape[1])
        wrong = [s for s in options["col_styles"] if s >= used]
        if wrong:
            raise app.UsageError(f"--col-styles: layer {wrong[0]} does not exist; this "
                                 f"generator uses dlatent layers 0-{used - 1}.")


def _write_png(path, image):
    from PIL import Image
    tmp = f"{path}.tmp"
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)


def main(argv, fv=flags.FLAGS):
    command, options = parse_command_line(argv, fv)
    outdir = options["outdir"]
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise app.UsageError(f"--outdir {outdir} is a file; give a folder.")
    files = output_files(command, options)
    existing = [f for f in files if os.path.exists(os.path.join(outdir, f))]
    if existing and not options["overwrite"]:
        raise app.UsageError(f"{os.path.join(outdir, existing[0])} already exists"
                             + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else "")
                             + "; choose another --outdir or add --overwrite.")
    from export.paths import ExportError, path_kind
    try:
        path_kind(options["network"])
    except ExportError as error:
        raise app.UsageError(f"--network: {error}") from None

    cli_common.import_tensorflow_quietly()
    import export
    from training.logs import grid_upscale, image_grid
    try:
        generator = export.load_generator(options["network"])
        z_dim = generator.z_dim
    except ExportError as error:
        raise app.UsageError(f"--network: {error}") from None
    _check_model(command, options, generator)
    print(f"Generator {generator.description}: z_dim {z_dim}"
          + (f", {generator.c_dim} classes" if generator.c_dim else ""))

    def figure(images, columns=None):
        """The figure PNG of these (N, H, W, 3) images: small ones shown at least 128 wide."""
        return image_grid(images, columns, upscale=grid_upscale(images.shape[2]))

    outputs = {}
    if "seeds" in options:   # one progress line over the seeds (each is one or more images)
        shown = cli_common.progress(options["seeds"], len(options["seeds"]), "Generating",
                                    unit="seeds")
    if command == "generate-images" and options["classes"]:
        seeds, classes = options["seeds"], options["classes"]
        images = generate_class_images(generator, shown, classes, options["trunc"])
        outputs = {class_file(s, c): images[(s, c)] for s in seeds for c in classes}
        if options["grid"]:
            outputs["generate-images.png"] = figure(
                np.stack([images[(s, c)] for s in seeds for c in classes]), columns=len(classes))
    elif command == "generate-images":
        images = generate_images(generator, shown, options["trunc"], options["class"])
        outputs = {f"seed{s:04d}.png": image for s, image in images.items()}
        if options["grid"]:
            outputs["generate-images.png"] = figure(np.stack(list(images.values())))
    elif command == "truncation-sweep":
        seeds, psis = options["seeds"], options["psis"]
        images = truncation_sweep(generator, shown, psis, options["class"])
        outputs = {f"seed{s:04d}-psi{psi_name(p)}.png": images[(s, p)]
                   for s in seeds for p in psis}
        outputs["truncation-sweep.png"] = figure(
            np.stack([images[(s, p)] for s in seeds for p in psis]), columns=len(psis))
    else:
        rows, cols = options["row_seeds"], options["col_seeds"]
        _, _, images = style_mixing(generator, rows, cols, options["trunc"],
                                    options["col_styles"], options["class"])
        outputs = {f"{r}-{c}.png": image for (r, c), image in images.items()}
        outputs["style-mixing-example.png"] = figure(
            np.stack(style_mixing_grid(images, rows, cols)), columns=len(cols) + 1)
    if sorted(outputs) != sorted(files):
        raise RuntimeError("run_generator: output_files() and the outputs disagree.")
    os.makedirs(outdir, exist_ok=True)
    for name, image in outputs.items():
        _write_png(os.path.join(outdir, name), image)
    print(f"Wrote {len(outputs)} PNG files to {outdir}")
    return 0


def run(argv, fv=flags.FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_generator.py", main, argv, fv)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    define_flags()
    cli_common.start("run_generator.py", run)
