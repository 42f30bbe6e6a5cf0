r"""Measure a generator against a real dataset: SWD, MS-SSIM, FID, KID, IS.

    python run_metrics.py --network=runs/00003/export --dataset=datasets/ffhq \
        --inception=/data/classify_image_graph_def.pb [--metrics=fid,kid,is,swd,ms_ssim]

Generator: an exported SavedModel with the project's signature
`serving_default(z float32 [N, z_dim], truncation_psi float32 scalar)` -> `images` uint8
[N, H, W, 3]. Latents are N(0, 1) from `--seed`; truncation (`--trunc`) defaults to 1 (none), as the papers
measured. Real images: a dataset folder (NVlabs multi-LOD TFRecords, from
`python -m datasets.prepare` or NVlabs' dataset_tool.py) or a built-in synthetic kind, read at the
generator's resolution. FID, KID and IS need the original `classify_image_graph_def.pb`
(inception-2015-12-05) given with `--inception`; nothing is downloaded. Inception features of the
reals are cached in `--cache-dir`, keyed by dataset, image count and network.

Counts follow the papers: FID/KID/IS on 50k generated images (reals: 50k or the whole dataset if
smaller), SWD on 16384 images (reals and fakes, at most the dataset size), MS-SSIM on 10000
generated images (5000 pairs; the reals' MS-SSIM is reported alongside). The results are printed
as a table and written as JSON to `--out` (never overwriting an existing file).
"""

import os
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
    flags.DEFINE_string("network", None, "Exported generator SavedModel directory "
                        "(serving_default(z, truncation_psi) -> images uint8).", **d)
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
    flags.DEFINE_string("out", None, "JSON file for the results (default: "
                        "metrics-<time>.json in the current folder). Never overwritten.", **d)
    cli_common.define_renamed(fv, RENAMED)


def _validated_flags(fv):
    """All user errors found before anything runs, as one UsageError line each."""
    if not fv.network:
        raise app.UsageError("--network is required (an exported generator SavedModel).")
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
    output = fv.out or f"metrics-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if os.path.exists(output):
        raise app.UsageError(f"--out: {output} already exists; choose another file.")
    return names, output


def main(argv, fv=flags.FLAGS):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use --flags.")
    cli_common.warn_renamed("run_metrics.py", fv, RENAMED)
    names, output = _validated_flags(fv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from metrics import InceptionV3, evaluate
    num_images, swd_images = fv["num-images"].value, fv["swd-images"].value
    ms_ssim_images, trunc, batch = fv["ms-ssim-images"].value, fv.trunc, fv.batch
    try:
        generator = evaluate.Generator(fv.network)
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


def run(argv, fv=flags.FLAGS):
    """main() with usage errors as one line on stderr and exit status 2."""
    return cli_common.run("run_metrics.py", main, argv, fv)


if __name__ == "__main__":
    define_flags()
    cli_common.start("run_metrics.py", run)
