r"""Measure a generator against a real dataset: SWD, MS-SSIM, FID, KID, IS.

    python run_metrics.py --network=runs/00003/export --dataset=datasets/ffhq \
        --inception=/data/classify_image_graph_def.pb [--metrics=fid,kid,is,swd,ms_ssim]
    python run_metrics.py --network=runs/00003 --snapshots=all --dataset=datasets/ffhq \
        --metrics=swd                                        # every kept snapshot of a run

Generator (--network): an exported SavedModel with the project's signature
`serving_default(z float32 [N, z_dim], truncation_psi float32 scalar)` -> `images` uint8
[N, H, W, 3], converted networks, a checkpoint, or a run folder, whose kept snapshots
(checkpoints) `--snapshots` picks: `last`, `all` or numbers K,K of their names ckpt-K. For runs
and checkpoints each snapshot's results are appended to `<run>/metric-<name>.jsonl` (one JSON
line per snapshot and metric: results, snapshot, kimg, images, time), and the table marks the
best snapshot of each metric (lowest FID, KID, SWD; highest IS; MS-SSIM closest to the
reals'). Latents are N(0, 1) from `--seed`; truncation (`--trunc`) defaults to 1 (none), as the papers
measured. Real images: a dataset folder (NVlabs multi-LOD TFRecords, from
`python -m datasets.prepare` or NVlabs' dataset_tool.py) or a built-in synthetic kind, read at the
generator's resolution. FID, KID and IS need the original `classify_image_graph_def.pb`
(inception-2015-12-05) given with `--inception`; nothing is downloaded. Inception features of the
reals are cached in `--cache-dir`, keyed by dataset, image count and network.

Counts follow the papers: FID/KID/IS on 50k generated images (reals: 50k or the whole dataset if
smaller), SWD on 16384 images (reals and fakes, at most the dataset size), MS-SSIM on 10000
generated images (5000 pairs; the reals' MS-SSIM is reported alongside). The results are printed
as a table; those of a SavedModel or converted networks are written as JSON to `--out` (never
overwriting an existing file).
"""

import os
import re
import time

from absl import app, flags

import cli_common

# Flags are checked before TensorFlow is imported: a usage error costs no start-up time.
METRICS = ("fid", "kid", "is", "swd", "ms_ssim")
INCEPTION_METRICS = ("fid", "kid", "is")


# Old spellings, kept for one release (cli_common).
RENAMED = {"generator": "network", "data": "dataset", "num_images": "num-images",
           "swd_images": "swd-images", "ms_ssim_images": "ms-ssim-images",
           "truncation_psi": "trunc", "batch_size": "batch", "cache_dir": "cache-dir",
           "output": "out"}


def define_flags(fv=flags.FLAGS):
    """Defines the command-line flags in `fv`.

    Called only when run as a script (and by tests with their own `flags.FlagValues`), so
    importing this module never adds flags that could clash with another CLI's.
    """
    d = dict(flag_values=fv)
    flags.DEFINE_string("network", None, "The generator: an exported SavedModel "
                        "(serving_default(z, truncation_psi) -> images uint8), converted "
                        "networks, a checkpoint (<run>/checkpoints/ckpt-K) or a run folder "
                        "(see --snapshots).", **d)
    flags.DEFINE_string("snapshots", "last", "Snapshots of a run folder to measure: last, all "
                        "(every kept checkpoint) or K,K (the numbers of their names ckpt-K: "
                        "images for StyleGAN runs, iterations for BigGAN and U-GAT-IT).", **d)
    flags.DEFINE_string("dataset", None, "Real images: a dataset folder (multi-LOD TFRecords) "
                        "or a built-in synthetic kind (e.g. 'shapes').", **d)
    flags.DEFINE_list("metrics", list(METRICS),
                      f"Metrics to compute, any of {', '.join(METRICS)}.", **d)
    flags.DEFINE_string("inception", None, "Path of classify_image_graph_def.pb (from "
                        "inception-2015-12-05.tgz); required for fid, kid and is.", **d)
    flags.DEFINE_integer("num-images", 50000, "Generated images for FID, KID and IS (reals: "
                         "as many, or the whole dataset if smaller).", **d)
    flags.DEFINE_integer("swd-images", 16384, "Images per set for SWD (at most the dataset "
                         "size).", **d)
    flags.DEFINE_integer("ms-ssim-images", 10000, "Generated images for MS-SSIM (even).", **d)
    flags.DEFINE_float("trunc", 1.0, "Truncation psi of the generator (1 = none).", **d)
    flags.DEFINE_integer("seed", 0, "Seed of the latents and of the SWD / KID random draws.",
                         **d)
    flags.DEFINE_integer("batch", 32, "Images per generator / Inception call.", **d)
    flags.DEFINE_string("cache-dir", os.path.join("~", ".cache", "fq-gan-metrics"),
                        "Folder of cached real-image Inception features ('' = no cache).", **d)
    flags.DEFINE_string("out", None, "JSON file for the results of a SavedModel or converted "
                        "networks (default: metrics-<time>.json in the current folder; never "
                        "overwritten). Runs and checkpoints: <run>/metric-<name>.jsonl.", **d)
    cli_common.define_renamed(fv, RENAMED)


def _validated_flags(fv):
    """All user errors found before anything runs, as one UsageError line each.
    Returns (metric names, JSON output or None, (network kind, path))."""
    from export.paths import ExportError, path_kind
    if not fv.network:
        raise app.UsageError("--network is required (an exported generator SavedModel, "
                             "converted networks, a checkpoint or a run folder).")
    try:
        network = path_kind(fv.network)
    except ExportError as error:
        raise app.UsageError(f"--network: {error}") from None
    snapshots = fv.snapshots.strip().lower()
    if network[0] != "run" and fv["snapshots"].present:
        raise app.UsageError(f"--snapshots picks snapshots of a run folder, and --network "
                             f"{fv.network} is a {network[0]}.")
    if snapshots not in ("last", "all") and not re.fullmatch(r"\d+(,\d+)*", snapshots):
        raise app.UsageError(f"--snapshots must be last, all or checkpoint numbers like 4000,8000, "
                             f"got {fv.snapshots!r}.")
    if not fv.dataset:
        raise app.UsageError("--dataset is required (a dataset folder or a built-in kind).")
    names = [name.strip().lower() for name in fv.metrics if name.strip()]
    unknown = sorted(set(names) - set(METRICS))
    if unknown or not names:
        raise app.UsageError(f"--metrics: unknown {unknown or 'empty list'}; choose from "
                             f"{', '.join(METRICS)}.")
    for flag in ("num-images", "swd-images", "ms-ssim-images", "batch"):
        if fv[flag].value < 1:
            raise app.UsageError(f"--{flag} must be >= 1, got {fv[flag].value}.")
    if "ms_ssim" in names and fv["ms-ssim-images"].value % 2:
        raise app.UsageError(f"--ms-ssim-images must be even (pairs), got "
                             f"{fv['ms-ssim-images'].value}.")
    if "is" in names and fv["num-images"].value < 10:
        raise app.UsageError("--num-images must be >= 10 for the Inception Score's 10 splits.")
    needing = [name for name in names if name in INCEPTION_METRICS]
    if needing and (not fv.inception or not os.path.isfile(fv.inception)):
        others = [name for name in names if name not in INCEPTION_METRICS]
        raise app.UsageError(
            f"{', '.join(needing)} {'needs' if len(needing) == 1 else 'need'} the Inception "
            f"graph{f' ({fv.inception} not found)' if fv.inception else ''}: pass "
            f"--inception=/path/to/classify_image_graph_def.pb (from inception-2015-12-05.tgz; "
            f"nothing is downloaded)"
            f"{f', or leave them out with --metrics={chr(44).join(others)}' if others else ''}.")
    if network[0] in ("run", "checkpoint"):
        if fv.out:
            raise app.UsageError(f"--out: the results of a {network[0]} go to its run folder "
                                 "(metric-<name>.jsonl); drop --out.")
        return names, None, network
    output = fv.out or f"metrics-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if os.path.exists(output):
        raise app.UsageError(f"--out: {output} already exists; choose another file.")
    return names, output, network


def main(argv, fv=flags.FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use --flags.")
    cli_common.warn_renamed("run_metrics.py", fv, RENAMED)
    names, output, (kind, path) = _validated_flags(fv)
    cli_common.import_tensorflow_quietly()
    from metrics import InceptionV3, evaluate
    num_images, swd_images = fv["num-images"].value, fv["swd-images"].value
    ms_ssim_images, trunc, batch = fv["ms-ssim-images"].value, fv.trunc, fv.batch
    snapshots = _snapshots(kind, path, fv.snapshots.strip().lower())
    try:
        generator = evaluate.Generator(snapshots[0][2])
        probe = next(generator.batches(1, fv.seed, 1, trunc))
    except ValueError as error:
        raise app.UsageError(f"--network: {error}")
    try:
        reals = evaluate.RealImages(fv.dataset, probe.shape[1])
    except ValueError as error:  # datasets.DatasetError is a ValueError
        raise app.UsageError(f"--dataset: {error}")
    try:
        inception = (InceptionV3(fv.inception, batch)
                     if any(name in names for name in INCEPTION_METRICS) else None)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error))
    print(f"generator {fv.network}: {probe.shape[1]}x{probe.shape[2]}, z_dim "
          f"{generator.z_dim}; reals {fv.dataset}: {reals.num_images} images")
    cache_dir = os.path.expanduser(fv["cache-dir"].value) if fv["cache-dir"].value else None
    if output is None:
        return _measure_snapshots(snapshots, generator, reals, names, inception, fv, cache_dir)
    results, seconds = evaluate.compute_metrics(
        generator, reals, names, inception, num_images, swd_images, ms_ssim_images, trunc,
        fv.seed, batch, cache_dir, progress=cli_common.progress)
    print(evaluate.format_table(results))
    evaluate.write_json_atomically(output, {
        "generator": os.path.abspath(fv.network), "data": fv.dataset,
        "metrics": results, "seconds": seconds,
        "settings": {"num_images": num_images, "swd_images": swd_images,
                     "ms_ssim_images": ms_ssim_images, "truncation_psi": trunc,
                     "seed": fv.seed,
                     "inception_sha1": inception.fingerprint if inception else None},
    })
    print(f"wrote {output}")
    return 0


def _snapshots(kind, path, which):
    """[(snapshot, kimg, path)] to measure: the generator itself, a checkpoint, or the kept
    snapshots of a run folder picked by --snapshots (app.UsageError for one it does not keep).
    kimg is None outside runs."""
    if kind not in ("run", "checkpoint"):
        return [(os.path.basename(os.path.normpath(path)), None, path)]
    from export.paths import run_dir_of, run_family
    from training.checkpoints import run_checkpoints
    from training.run_options import family_module
    run_dir = path if kind == "run" else run_dir_of(path)
    if kind == "checkpoint":
        number = int(path.rsplit("-", 1)[-1])
        kept, picked = {number: path}, [number]
    elif not (kept := run_checkpoints(run_dir)):
        raise app.UsageError(f"--network: {run_dir} has no checkpoint yet.")
    elif which in ("last", "all"):
        picked = sorted(kept)[-1:] if which == "last" else sorted(kept)
    else:
        picked = [int(k) for k in which.split(",")]
        missing = [k for k in picked if k not in kept]
        if missing:
            raise app.UsageError(f"--snapshots: {run_dir} keeps no ckpt-{missing[0]}; its "
                                 f"snapshots are {','.join(map(str, sorted(kept)))}.")
    options = family_module(run_family(run_dir)).Options.load(run_dir)
    return [(f"ckpt-{k}", options.images_at(k) / 1000, kept[k]) for k in picked]


def _measure_snapshots(snapshots, generator, reals, names, inception, fv, cache_dir):
    """Measures each snapshot (the first one's generator is loaded), appends its records to
    the run folder's metric-<name>.jsonl and prints the table with the best marked."""
    from export.paths import run_dir_of
    from metrics import evaluate
    run_dir = run_dir_of(snapshots[0][2])
    num_images = {"fid": fv["num-images"].value, "kid": fv["num-images"].value,
                  "is": fv["num-images"].value, "ms_ssim": fv["ms-ssim-images"].value,
                  "swd": min(fv["swd-images"].value, reals.num_images)}
    rows, reals_memo = [], {}
    for snapshot, kimg, path in snapshots:
        generator = generator or evaluate.Generator(path)
        results, seconds = evaluate.compute_metrics(
            generator, reals, names, inception, fv["num-images"].value,
            fv["swd-images"].value, fv["ms-ssim-images"].value, fv.trunc, fv.seed, fv.batch,
            cache_dir, progress=cli_common.progress, reals_memo=reals_memo)
        files = evaluate.append_metric_records(
            run_dir, names, results, seconds, num_images, snapshot=snapshot, kimg=kimg,
            checkpoint=os.path.abspath(path), dataset=fv.dataset, truncation_psi=fv.trunc,
            seed=fv.seed)
        rows.append((snapshot, kimg, results))
        generator = None
    print(evaluate.format_snapshot_table(rows, names))
    print(f"appended {len(rows)} record(s) to " + ", ".join(files))
    return 0


def run(argv, fv=flags.FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_metrics.py", main, argv, fv)


if __name__ == "__main__":
    define_flags()
    cli_common.start("run_metrics.py", run)
