"""Prepare datasets: image folders, CIFAR and built-in data -> NVlabs multi-LOD TFRecords.

Usage: python -m datasets.prepare <command> [flags] ARGS...    (<command> --help for details)

Commands:
  create_from_images OUT_DIR IMAGE_DIR   image folder (walked recursively) -> TFRecords
  create_cifar10 OUT_DIR CIFAR_DIR       cifar-10-batches-py pickles -> TFRecords + labels
  create_cifar100 OUT_DIR CIFAR_DIR      cifar-100-python pickles -> TFRecords + fine labels
  create_synthetic OUT_DIR               a built-in procedural dataset (--kind)
  info DIR                               what a dataset or U-GAT-IT root holds (checks images)
  display DIR [OUT_PNG]                  a PNG grid of the first images

Output folders are written atomically (a temporary folder renamed at the end), never overwrite an
existing folder, and a failed or interrupted run leaves nothing behind. U-GAT-IT datasets need no
preparation: the loader reads ROOT/{trainA,trainB,testA,testB} directly (`info ROOT` checks them).

Each command is also a Python function here (create_from_images(...), ...) raising
`datasets.DatasetError`; the CLI prints such errors as one `error:` line and exits with status 2.
"""

import collections
import itertools
import json
import math
import os
import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from absl import app, flags
from PIL import Image

from cli_common import Progress, import_tensorflow_quietly, usage_error

import_tensorflow_quietly()   # datasets.tfrecords imports TensorFlow

from datasets import synthetic  # noqa: E402
from datasets.errors import BadImageError, DatasetError  # noqa: E402
from datasets.images import fit_image, list_image_files, load_pil_image, probe_image  # noqa: E402
from datasets.tfrecords import (MultiLodWriter, TFRecordDirectory, atomic_directory,  # noqa: E402
                                check_new_output_dir, check_resolution, count_records, one_hot,
                                shuffled_order, write_label_names)

_BATCH = 64      # images per MultiLodWriter.add_images call


#----------------------------------------------------------------------------
# Progress and parallel decoding.

def _progress(total, what, log):
    """cli_common.Progress on stdout for the CLI (log = print), else into `log`."""
    return Progress(total, what, log=None if log is print else log)


def _ordered_map(fn, items, workers):
    """fn over items in threads (Pillow releases the GIL while decoding), results in order,
    at most 4 * workers items in flight."""
    window = 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        iterator = iter(items)
        pending = collections.deque(pool.submit(fn, item)
                                    for item in itertools.islice(iterator, window))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(iterator, 1):
                pending.append(pool.submit(fn, item))
            yield result


def _try(fn, *args):
    try:
        return fn(*args), None
    except BadImageError as error:
        return None, error


def _reject(bad, skip_bad, log):
    """Raises for the first bad file unless skip_bad, else logs each one."""
    if bad and not skip_bad:
        more = f" ({len(bad)} bad files in total)" if len(bad) > 1 else ""
        raise DatasetError(f"{bad[0]}{more}")
    for error in bad:   # the reason without its fix: skipping was the user's choice
        log(f"  skipped {error.path}: {error.reason}")


#----------------------------------------------------------------------------
# Labels file for create_from_images.

def read_labels_file(path):
    """File name -> class from a labels file.

    Formats: a JSON object {"name": class}, or text lines "name,class" (comma, tab or spaces;
    '#' starts a comment; a first line "file,label"/"filename,class" is a header). Names are
    paths relative to IMAGE_DIR (with '/') or bare file names. Classes are integers (used as
    indices) or names (sorted, indexed in that order).

    Returns:
        (mapping name -> class index, class names tuple or None, num_classes)
    """
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: labels file not found; pass --labels=<file>")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if text.lstrip().startswith("{"):
        try:
            raw = {str(k): str(v) for k, v in json.loads(text).items()}
        except (ValueError, AttributeError) as error:
            raise DatasetError(f"{path}: invalid JSON labels ({error}); expected "
                               '{"name.png": class, ...}') from None
    else:
        raw = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.replace("\t", ",").split(",")]
            if len(parts) == 1:
                parts = line.split()
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise DatasetError(f"{path}:{number}: expected 'name,class', got {line!r}")
            if number == 1 and parts[0].lower() in ("file", "filename", "name", "image", "path"):
                continue
            raw[parts[0].replace("\\", "/")] = parts[1]
    if not raw:
        raise DatasetError(f"{path}: no labels found; expected lines 'name,class'")
    values = set(raw.values())
    if all(v.lstrip("-").isdigit() for v in values):
        classes = {k: int(v) for k, v in raw.items()}
        if min(classes.values()) < 0:
            raise DatasetError(f"{path}: negative class index; classes must be >= 0")
        return classes, None, max(classes.values()) + 1
    names = tuple(sorted(values))
    index = {name: i for i, name in enumerate(names)}
    return {k: index[v] for k, v in raw.items()}, names, len(names)


def _label_for(mapping, image_dir, path, labels_file):
    relative = os.path.relpath(path, image_dir).replace(os.sep, "/")
    for key in (relative, os.path.basename(path)):
        if key in mapping:
            return mapping[key]
    raise DatasetError(f"{relative}: no label in {labels_file}; add a line '{relative},<class>' "
                       "or remove the image")


def _check_sizes(paths, resolution, crop, allow_upscale, workers, log):
    """Reads every image header (threads) and finds the size problems.

    Returns:
        (resolution, bad): the output resolution (the first image's size when `resolution` is
        None) and the BadImageErrors in file order.
    """
    sizes, progress = {}, _progress(len(paths), "Checking image headers", log)
    for path, result in zip(paths, _ordered_map(lambda p: _try(probe_image, p), paths, workers)):
        sizes[path] = result
        progress.update()
    progress.close()
    bad = [error for _, error in sizes.values() if error is not None]
    good = [p for p in paths if sizes[p][1] is None]
    if resolution is None and good:
        width, height = sizes[good[0]][0]
        if width != height or width < 4 or width & (width - 1):
            raise DatasetError(f"{good[0]}: image is {width}x{height}, not a square power of two; "
                               "pass --resolution (and --crop for non-square images)")
        resolution = width
        for p in good[1:]:
            if sizes[p][0] != (resolution, resolution):
                w, h = sizes[p][0]
                bad.append(BadImageError(p, f"image is {w}x{h} but {good[0]} is {resolution}x"
                                         f"{resolution}", "pass --resolution to resize all "
                                         "images, or --skip-bad"))
    elif resolution is not None:
        for p in good:
            w, h = sizes[p][0]
            if crop is None and w != h:
                bad.append(BadImageError(p, f"image is {w}x{h}, not square",
                                         "pass --crop=center or --crop=stretch, or --skip-bad"))
            elif min(w, h) < resolution and not allow_upscale:
                bad.append(BadImageError(p, f"image is {w}x{h}, smaller than --resolution "
                                         f"{resolution}", "pass a smaller --resolution, "
                                         "--allow-upscale or --skip-bad"))
    position = {p: i for i, p in enumerate(paths)}
    return resolution, sorted(bad, key=lambda e: position[e.path])


#----------------------------------------------------------------------------
# Commands (library functions).

def create_from_images(out_dir, image_dir, *, resolution=None, crop=None, labels=None,
                       shuffle=True, skip_bad=False, allow_upscale=False, channels=3,
                       workers=None, log=print):
    """Image folder -> NVlabs multi-LOD TFRecords in `out_dir` (see datasets.tfrecords).

    Args:
        out_dir: new folder (must not exist); its base name is the file prefix.
        image_dir: folder of images, walked recursively (sorted by relative path).
        resolution: output size (power of two); None = the images' own size, which must then
            be square, a power of two and the same for all.
        crop: None (images must be square), "center" or "stretch" (see images.fit_image).
        labels: labels file (see read_labels_file) -> one-hot `<name>-rxx.labels`.
        shuffle: NVlabs' order (np.random.RandomState(123)); False keeps sorted order.
        skip_bad: skip unusable images (reported) instead of failing on the first.
        allow_upscale: accept images smaller than `resolution` (upscaled).
        channels: 3 (RGB; grayscale is converted) or 1 (luma).
        workers: decoding threads (default: CPU count).
        log: callable for progress lines.
    Returns:
        dict: num_images, resolution, channels, skipped (list of "path: reason").
    """
    if resolution is not None:
        resolution = check_resolution(resolution, "--resolution")
    if crop not in (None, "center", "stretch"):
        raise DatasetError(f"--crop must be center or stretch, got {crop!r}")
    if channels not in (1, 3):
        raise DatasetError(f"--channels must be 1 or 3, got {channels}")
    check_new_output_dir(out_dir)
    workers = workers or os.cpu_count()
    image_dir = os.path.abspath(image_dir)
    paths, ignored = list_image_files(image_dir)
    log(f"Found {len(paths)} image files in {image_dir}"
        + (f" (ignored {ignored} non-image files)" if ignored else ""))
    label_map = names = None
    if labels is not None:
        label_map, names, num_classes = read_labels_file(labels)
        classes = {p: _label_for(label_map, image_dir, p, labels) for p in paths}

    # Pass 1, headers only: every size problem is found before any decoding.
    resolution, bad = _check_sizes(paths, resolution, crop, allow_upscale, workers, log)
    _reject(bad, skip_bad, log)
    rejected = {e.path for e in bad}
    good = [p for p in paths if p not in rejected]
    if not good:
        raise DatasetError(f"{image_dir}: no usable images ({len(bad)} bad)")

    # Pass 2: decode in NVlabs order, write every level of detail.
    order = shuffled_order(len(good)) if shuffle else np.arange(len(good))
    ordered = [good[i] for i in order]

    def load(path):
        return fit_image(load_pil_image(path, channels), resolution, crop, allow_upscale, path)

    written, skipped = [], [f"{e.path}: {e.reason}" for e in bad]
    progress = _progress(len(ordered), "Writing", log)
    with atomic_directory(out_dir) as tmp:
        with MultiLodWriter(tmp, resolution, channels, os.path.basename(
                os.path.abspath(out_dir))) as writer:
            batch = []
            for path, (image, error) in zip(ordered, _ordered_map(lambda p: _try(load, p),
                                                                  ordered, workers)):
                if error is not None:
                    _reject([error], skip_bad, log)
                    skipped.append(f"{error.path}: {error.reason}")
                    continue
                batch.append(image.transpose(2, 0, 1))  # HWC -> CHW
                written.append(path)
                if len(batch) == _BATCH:
                    writer.add_images(np.stack(batch))
                    progress.update(len(batch))
                    batch = []
            if batch:
                writer.add_images(np.stack(batch))
                progress.update(len(batch))
            progress.close()
            if not written:
                raise DatasetError(f"{image_dir}: no usable images")
            if label_map is not None:
                writer.add_labels(one_hot([classes[p] for p in written], num_classes))
                if names:
                    write_label_names(tmp, names)
    log(f"Wrote {len(written)} images ({resolution}x{resolution}, {channels} channels, "
        f"{resolution.bit_length() - 2} levels) to {os.path.abspath(out_dir)} in "
        f"{time.monotonic() - progress.start:.1f} s ({progress.rate():.1f} img/s)"
        + (f"; skipped {len(skipped)} bad files" if skipped else ""))
    return dict(num_images=len(written), resolution=resolution, channels=channels,
                skipped=skipped)


def _load_pickle(path, hint):
    if not os.path.isfile(path):
        raise DatasetError(f"{path} is missing; {hint}")
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="bytes")
    except Exception as error:  # any unpickling failure means "not a CIFAR pickle"
        raise DatasetError(f"{path}: not a CIFAR python pickle ({type(error).__name__}); "
                           f"{hint}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: not a CIFAR python pickle (no dict); {hint}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in data.items()}


CIFAR = {
    "cifar10": dict(train=[f"data_batch_{i}" for i in range(1, 6)], test=["test_batch"],
                    label_key="labels", num_classes=10, meta=("batches.meta", "label_names"),
                    folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz"),
    "cifar100": dict(train=["train"], test=["test"], label_key="fine_labels", num_classes=100,
                     meta=("meta", "fine_label_names"), folder="cifar-100-python",
                     archive="cifar-100-python.tar.gz"),
}


def read_cifar(cifar_dir, which="cifar10", split="train"):
    """Reads the official CIFAR python pickles (keys b'data' uint8 (N, 3072) CHW-flattened,
    b'labels' / b'fine_labels').

    Returns:
        images uint8 (N, 3, 32, 32) CHW, labels int64 (N,), class names tuple or None.
    """
    spec = CIFAR[which]
    if split not in ("train", "test"):
        raise DatasetError(f"--split must be train or test, got {split!r}")
    hint = (f"CIFAR_DIR must be the extracted {spec['folder']} folder (from {spec['archive']})")
    images, labels = [], []
    for name in spec[split]:
        path = os.path.join(cifar_dir, name)
        data = _load_pickle(path, hint)
        if "data" not in data or spec["label_key"] not in data:
            raise DatasetError(f"{path}: missing key b'data' or b'{spec['label_key']}'; {hint}")
        pixels = np.asarray(data["data"])
        classes = np.asarray(data[spec["label_key"]], dtype=np.int64)
        if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072:
            raise DatasetError(f"{path}: b'data' is {pixels.dtype} {pixels.shape}, expected "
                               f"uint8 (N, 3072); {hint}")
        if classes.shape != (pixels.shape[0],):
            raise DatasetError(f"{path}: {classes.size} labels for {pixels.shape[0]} images; "
                               f"{hint}")
        if classes.size and (classes.min() < 0 or classes.max() >= spec["num_classes"]):
            raise DatasetError(f"{path}: labels outside [0, {spec['num_classes'] - 1}]; {hint}")
        images.append(pixels.reshape(-1, 3, 32, 32))
        labels.append(classes)
    names = None
    meta_path = os.path.join(cifar_dir, spec["meta"][0])
    if os.path.isfile(meta_path):
        meta = _load_pickle(meta_path, hint)
        raw = meta.get(spec["meta"][1])
        if raw is not None and len(raw) == spec["num_classes"]:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)
    return np.concatenate(images), np.concatenate(labels), names


def create_cifar(out_dir, cifar_dir, which="cifar10", *, split="train", shuffle=True, log=print):
    """CIFAR-10/100 pickles -> 32x32 multi-LOD TFRecords with one-hot labels (10 or 100 columns,
    whatever classes occur), in NVlabs' shuffled order, plus classes.json from the meta file."""
    check_new_output_dir(out_dir)
    images, labels, names = read_cifar(cifar_dir, which, split)
    if len(images) == 0:
        raise DatasetError(f"{cifar_dir}: the pickles hold no images")
    log(f"Read {len(images)} {which} {split} images from {os.path.abspath(cifar_dir)}")
    order = shuffled_order(len(images)) if shuffle else np.arange(len(images))
    progress = _progress(len(images), "Writing", log)
    with atomic_directory(out_dir) as tmp:
        with MultiLodWriter(tmp, 32, 3, os.path.basename(os.path.abspath(out_dir))) as writer:
            for start in range(0, len(order), 1024):
                writer.add_images(images[order[start:start + 1024]])
                progress.update(len(order[start:start + 1024]))
            progress.close()
            writer.add_labels(one_hot(labels[order], CIFAR[which]["num_classes"]))
        if names:
            write_label_names(tmp, names)
    log(f"Wrote {len(images)} images with {CIFAR[which]['num_classes']} classes to "
        f"{os.path.abspath(out_dir)} ({progress.rate():.1f} img/s)")
    return dict(num_images=len(images), resolution=32, channels=3, skipped=[])


def create_cifar10(out_dir, cifar_dir, **kwargs):
    return create_cifar(out_dir, cifar_dir, "cifar10", **kwargs)


def create_cifar100(out_dir, cifar_dir, **kwargs):
    return create_cifar(out_dir, cifar_dir, "cifar100", **kwargs)


def create_synthetic(out_dir, kind="shapes", *, resolution=32, num_images=None, num_test=None,
                     seed=0, log=print):
    """Writes a built-in dataset (datasets.synthetic) to disk.

    "shapes": multi-LOD TFRecords with one-hot shape-class labels and classes.json, in
    generation order (record i == synthetic.shapes(num_images, resolution, seed)[i]).
    "shapes2cartoon": a U-GAT-IT root, PNG files in trainA/ trainB/ testA/ testB/.
    Defaults: 4096 images (shapes) or 1024 per domain + 64 test (shapes2cartoon).
    """
    if kind not in synthetic.KINDS:
        raise DatasetError(f"--kind must be one of {', '.join(synthetic.KINDS)}, got {kind!r}")
    resolution = check_resolution(resolution, "--resolution")
    check_new_output_dir(out_dir)
    for value, flag in ((num_images, "--num-images"), (num_test, "--num-test")):
        if value is not None and value < 1:
            raise DatasetError(f"{flag} must be >= 1, got {value}")
    start = time.perf_counter()
    name = os.path.basename(os.path.abspath(out_dir))
    with atomic_directory(out_dir) as tmp:
        if kind == "shapes":
            images, classes = synthetic.shapes(num_images or 4096, resolution, seed)
            with MultiLodWriter(tmp, resolution, 3, name) as writer:
                for s in range(0, len(images), 1024):
                    writer.add_images(images[s:s + 1024].transpose(0, 3, 1, 2))
                writer.add_labels(one_hot(classes, synthetic.NUM_CLASSES))
            write_label_names(tmp, synthetic.SHAPE_CLASSES)
            count = len(images)
        else:
            count = 0
            for split, n in (("train", num_images or 1024), ("test", num_test or 64)):
                pair = synthetic.shapes2cartoon(n, resolution, seed, split)
                for domain, images in zip("AB", pair):
                    os.makedirs(os.path.join(tmp, split + domain))
                    for i, image in enumerate(images):
                        Image.fromarray(image).save(os.path.join(tmp, split + domain,
                                                                 f"{i:06d}.png"))
                    count += len(images)
    seconds = time.perf_counter() - start
    log(f"Wrote {count} {kind} images ({resolution}x{resolution}, seed {seed}) to "
        f"{os.path.abspath(out_dir)} in {seconds:.1f} s ({count / seconds:.1f} img/s)")
    return dict(num_images=count, resolution=resolution, channels=3, skipped=[])


def describe(path, skip_bad=True):
    """Lines describing a TFRecord dataset folder or a U-GAT-IT root (decodes its images)."""
    from datasets.unpaired import FOLDERS, open_unpaired

    path = os.path.abspath(path)
    if os.path.isdir(path) and any(os.path.isdir(os.path.join(path, f)) for f in FOLDERS):
        pair = open_unpaired(path, skip_bad=skip_bad)
        lines = [f"U-GAT-IT root {path}"]
        lines += [f"  {folder}: {count} images" for folder, count in pair.info.counts.items()]
        lines += [f"  bad (skipped by the loader with skip_bad=True): {s}"
                  for s in pair.info.skipped]
        return lines
    folder = TFRecordDirectory(path)
    lines = [f"Dataset {folder.name} in {path}",
             f"  images: {folder.num_images}", f"  resolution: {folder.resolution}x"
             f"{folder.resolution}", f"  channels: {folder.channels}",
             "  levels of detail:"]
    for resolution in sorted(folder.files, reverse=True):
        file = folder.files[resolution]
        count = count_records(file)
        warning = "" if count == folder.num_images else "  <- record count differs!"
        lines.append(f"    {resolution:>5}x{resolution:<5} {os.path.basename(file)}  {count} "
                     f"records  {os.path.getsize(file) / 2 ** 20:.1f} MiB{warning}")
    if folder.labels is None:
        lines.append("  labels: none")
    else:
        from datasets.tfrecords import read_label_names
        names = read_label_names(path)
        lines.append(f"  labels: {os.path.basename(folder.label_file)}, size "
                     f"{folder.label_size}")
        counts = folder.labels.sum(0)
        if np.all(folder.labels.sum(1) == 1):
            per_class = ", ".join(f"{names[i] if names else i}: {int(c)}"
                                  for i, c in enumerate(counts))
            lines.append(f"  images per class: {per_class}")
    return lines


def _grid(images, min_cell=64):
    """uint8 (N, H, W, C) -> one grid image, cells upscaled (nearest) to at least min_cell."""
    n, h, w, c = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    canvas = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = image
    factor = max(1, int(math.ceil(min_cell / h)))
    canvas = canvas.repeat(factor, 0).repeat(factor, 1)
    return canvas[..., 0] if c == 1 else canvas


def display(path, out_png=None, *, num_images=64, resolution=None, seed=0, log=print):
    """Writes a PNG grid of the first `num_images` images of a dataset folder, a built-in
    kind or a U-GAT-IT root (left half trainA, right half trainB); returns the PNG path."""
    from datasets.loader import open_dataset
    from datasets.unpaired import FOLDERS, open_unpaired

    if num_images < 1:
        raise DatasetError(f"--num-images must be >= 1, got {num_images}")
    name = os.path.basename(os.path.abspath(path)) if os.path.isdir(path) else path
    out_png = out_png or f"{name}-grid.png"
    is_pair = path == "shapes2cartoon" or (os.path.isdir(path) and any(
        os.path.isdir(os.path.join(path, f)) for f in FOLDERS))
    if is_pair:
        pair = open_unpaired(path, resolution=resolution, seed=seed, verify=False)
        size = resolution or 128
        halves = []
        for folder in ("trainA", "trainB"):
            n = min(num_images, pair.info.counts[folder])
            if pair.files(folder):
                images = [np.asarray(load_pil_image(p).resize((size, size), Image.BILINEAR))
                          for p in pair.files(folder)[:n]]
            else:
                images = [np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))
                          for a in pair._arrays[folder][:n]]
            halves.append(_grid(np.stack(images)))
        height = max(h.shape[0] for h in halves)
        grid = np.concatenate([np.pad(h, ((0, height - h.shape[0]), (0, 8), (0, 0)))
                               for h in halves], 1)
    else:
        dataset = open_dataset(path, resolution=None if os.path.isdir(path) else resolution,
                               num_images=num_images, seed=seed)
        images = dataset.images(resolution)
        grid = _grid(images)
        if dataset.info.has_labels:
            classes = dataset.labels.argmax(1)
            names = dataset.info.label_names
            cols = int(math.ceil(math.sqrt(len(images))))
            for row in range(0, len(images), cols):
                log("  labels row %d: %s" % (row // cols, " ".join(
                    str(names[c] if names else c) for c in classes[row:row + cols])))
    Image.fromarray(grid).save(out_png)
    log(f"Wrote {out_png}")
    return out_png


#----------------------------------------------------------------------------
# Command line.

def _define(kind, name, default, help_text, fv, enum_values=None):
    if kind == "enum":
        flags.DEFINE_enum(name, default, enum_values, help_text, flag_values=fv)
    else:
        getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)


_FLAG_SPECS = {
    "resolution": ("integer", None, "Output resolution, a power of two; images are resized "
                   "(Lanczos). Default: the images' own size (all square, equal, power of two)."),
    "crop": ("enum", None, "Non-square images: center = largest centred square, stretch = "
             "resize without keeping aspect. Default: non-square images are an error.",
             dict(enum_values=["center", "stretch"])),
    "labels": ("string", None, "Labels file: lines 'name,class' (name relative to IMAGE_DIR or "
               "a bare file name; class an integer or a class name) or a JSON object. Written "
               "as one-hot <name>-rxx.labels (+ classes.json for class names)."),
    "shuffle": ("boolean", True, "Shuffle the image order as NVlabs' dataset_tool "
                "(np.random.RandomState(123)); --noshuffle keeps sorted file order."),
    "skip-bad": ("boolean", False, "Skip unusable images (corrupt, truncated, empty, not an "
                 "image, wrong size) and report them, instead of stopping at the first."),
    "allow-upscale": ("boolean", False, "Accept images smaller than --resolution (upscaled)."),
    "channels": ("integer", 3, "3 = RGB (grayscale images are converted), 1 = grayscale."),
    "workers": ("integer", None, "Decoding threads (default: number of CPUs)."),
    "split": ("enum", "train", "Which pickles to read: train (50000 images) or test (10000).",
              dict(enum_values=["train", "test"])),
    "kind": ("enum", "shapes", "shapes = labelled shapes dataset (TFRecords); shapes2cartoon = "
             "unpaired U-GAT-IT root with PNG files.", dict(enum_values=list(synthetic.KINDS))),
    "num-images": ("integer", None, "Number of images (create_synthetic: default 4096 for "
                   "shapes, 1024 per domain for shapes2cartoon; display: default 64)."),
    "num-test": ("integer", None, "shapes2cartoon test images per domain (default 64)."),
    "seed": ("integer", 0, "Seed of the procedural images."),
}
_SYNTHETIC_RESOLUTION_HELP = "Resolution to render at, a power of two (default 32)."
_DISPLAY_RESOLUTION_HELP = ("Level of detail to show (default: full resolution; for "
                            "built-in kinds, the render size; for U-GAT-IT roots, the cell size, "
                            "default 128).")


def _cmd_create_from_images(args, f):
    create_from_images(args[0], args[1], resolution=f["resolution"].value,
                       crop=f["crop"].value, labels=f["labels"].value,
                       shuffle=f["shuffle"].value, skip_bad=f["skip-bad"].value,
                       allow_upscale=f["allow-upscale"].value, channels=f["channels"].value,
                       workers=f["workers"].value)


def _cmd_create_cifar(which):
    def run(args, f):
        create_cifar(args[0], args[1], which, split=f["split"].value, shuffle=f["shuffle"].value)
    return run


def _cmd_create_synthetic(args, f):
    create_synthetic(args[0], f["kind"].value, resolution=f["resolution"].value or 32,
                     num_images=f["num-images"].value, num_test=f["num-test"].value,
                     seed=f["seed"].value)


def _cmd_info(args, f):
    for line in describe(args[0]):
        print(line)


def _cmd_display(args, f):
    display(args[0], args[1] if len(args) > 1 else None, num_images=f["num-images"].value or 64,
            resolution=f["resolution"].value, seed=f["seed"].value)


# name: (function, required positionals, optional positionals, flags, description)
COMMANDS = {
    "create_from_images": (
        _cmd_create_from_images, ["OUT_DIR", "IMAGE_DIR"], [],
        ["resolution", "crop", "labels", "shuffle", "skip-bad", "allow-upscale", "channels",
         "workers"],
        "Converts a folder of images (walked recursively; .png .jpg .jpeg .bmp .gif .webp "
        ".tif .tiff .ppm) into NVlabs multi-LOD TFRecords in OUT_DIR. Grayscale, palette, "
        "alpha (over white), 16-bit and CMYK images are converted to RGB, EXIF rotation is "
        "applied."),
    "create_cifar10": (
        _cmd_create_cifar("cifar10"), ["OUT_DIR", "CIFAR_DIR"], [], ["split", "shuffle"],
        "Converts the official CIFAR-10 python pickles (CIFAR_DIR = cifar-10-batches-py) into "
        "32x32 multi-LOD TFRecords with one-hot labels (10 classes) and classes.json."),
    "create_cifar100": (
        _cmd_create_cifar("cifar100"), ["OUT_DIR", "CIFAR_DIR"], [], ["split", "shuffle"],
        "Converts the official CIFAR-100 python pickles (CIFAR_DIR = cifar-100-python) into "
        "32x32 multi-LOD TFRecords with one-hot fine labels (100 classes) and classes.json."),
    "create_synthetic": (
        _cmd_create_synthetic, ["OUT_DIR"], [],
        ["kind", "resolution", "num-images", "num-test", "seed"],
        "Writes a built-in procedural dataset (deterministic per --seed)."),
    "info": (
        _cmd_info, ["DIR"], [], [],
        "Prints what a TFRecord dataset folder holds (images, resolution, channels, levels "
        "with record counts, labels), or for a U-GAT-IT root the image count per folder after "
        "decoding every image (bad files are listed)."),
    "display": (
        _cmd_display, ["DIR"], ["OUT_PNG"], ["num-images", "resolution", "seed"],
        "Writes a PNG grid of the first images of a dataset folder, a built-in kind (shapes, "
        "shapes2cartoon) or a U-GAT-IT root (trainA left, trainB right). OUT_PNG defaults to "
        "<name>-grid.png in the current folder."),
}


def _command_flags(command):
    fv = flags.FlagValues()
    for name in COMMANDS[command][3]:
        kind, default, help_text, *extra = _FLAG_SPECS[name]
        if name == "resolution" and command == "create_synthetic":
            help_text = _SYNTHETIC_RESOLUTION_HELP
        elif name == "resolution" and command == "display":
            help_text = _DISPLAY_RESOLUTION_HELP
        _define(kind, name, default, help_text, fv, **(extra[0] if extra else {}))
    return fv


def _command_help(command):
    _, required, optional, _, description = COMMANDS[command]
    usage = " ".join(required + [f"[{a}]" for a in optional])
    fv = _command_flags(command)
    lines = [f"Usage: python -m datasets.prepare {command} [flags] {usage}", "", description]
    if COMMANDS[command][3]:
        lines += ["", "Flags:"]
        for name in COMMANDS[command][3]:
            flag = fv[name]
            default = "" if flag.default is None else f" (default: {flag.default_as_str})"
            lines.append(f"  --{name}: {flag.help}{default}")
    return "\n".join(lines)


TOOL = "datasets.prepare"
_HELP = ("--help", "-help", "-h", "--helpshort", "--helpfull", "-?")


def run(argv):
    """Runs the CLI on argv (argv[0] = program name); returns the exit status.

    Prints every error a user can cause (a bad flag, a bad file, missing data) as one line on
    stderr, `datasets.prepare: error: ...`, with exit status 2, as the other tools do.
    """
    args = argv[1:]
    command = args[0] if args and not args[0].startswith("-") else None
    if command is None or command not in COMMANDS:
        if command is None and any(a in _HELP for a in args) or not args:
            print(__doc__.strip())
            return 0 if args else 2
        return usage_error(TOOL, f"unknown command {command or args[0]!r}; commands: "
                           f"{', '.join(COMMANDS)} (python -m datasets.prepare --help)")
    if any(a in _HELP for a in args[1:]):
        print(_command_help(command))
        return 0
    function, required, optional, _, _ = COMMANDS[command]
    fv = _command_flags(command)
    try:
        positional = fv([argv[0]] + args[1:])[1:]
    except flags.Error as error:
        return usage_error(TOOL, f"{command}: {error} (python -m datasets.prepare {command} "
                                 "--help)")
    if not len(required) <= len(positional) <= len(required) + len(optional):
        return usage_error(TOOL, f"{command} takes "
                                 f"{' '.join(required + [f'[{a}]' for a in optional])}, got "
                                 f"{len(positional)} arguments (python -m datasets.prepare "
                                 f"{command} --help)")
    try:
        function(positional, fv)
    except DatasetError as error:
        return usage_error(TOOL, error)
    except KeyboardInterrupt:
        print(f"{TOOL}: error: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


def _main(argv):
    return run(argv)


if __name__ == "__main__":
    # absl's own flags (logging) are parsed from the program name only; each command parses its
    # own flags in `run`, so `<command> --help` shows exactly that command's flags.
    app.run(_main, flags_parser=lambda argv: (flags.FLAGS(argv[:1]), argv)[1])
