r"""Measure a generator against a real dataset: SWD, MS-SSIM, FID, KID, IS.

    python run_metrics.py --generator=runs/00003/export --data=datasets/ffhq \
        --inception=/data/classify_image_graph_def.pb [--metrics=fid,kid,is,swd,ms_ssim]

Generator: an exported SavedModel with the project's signature
`serving_default(z float32 [N, z_dim], truncation_psi float32 scalar)` -> `images` uint8
[N, H, W, 3]. Latents are N(0, 1) from `--seed`; truncation defaults to 1 (none), as the papers
measured. Real images: a dataset folder (NVlabs multi-LOD TFRecords, from
`python -m datasets.prepare` or NVlabs' dataset_tool.py) or a built-in synthetic kind, read at the
generator's resolution. FID, KID and IS need the original `classify_image_graph_def.pb`
(inception-2015-12-05) given with `--inception`; nothing is downloaded. Inception features of the
reals are cached in `--cache_dir`, keyed by dataset, image count and network.

Counts follow the papers: FID/KID/IS on 50k generated images (reals: 50k or the whole dataset if
smaller), SWD on 16384 images (reals and fakes, at most the dataset size), MS-SSIM on 10000
generated images (5000 pairs; the reals' MS-SSIM is reported alongside). The results are printed
as a table and written as JSON to `--output` (never overwriting an existing file).
"""

import os
import sys
import time

from absl import app, flags

# Flags are checked before TensorFlow is imported: a usage error costs no start-up time.
METRICS = ("fid", "kid", "is", "swd", "ms_ssim")
INCEPTION_METRICS = ("fid", "kid", "is")


def define_flags(flag_values=flags.FLAGS):
    """Defines the command-line flags in `flag_values`.

    Called only when run as a script (and by tests with their own `flags.FlagValues`), so
    importing this module never adds flags that could clash with another CLI's.
    """
    fv = flag_values
    flags.DEFINE_string("generator", None, "Exported generator SavedModel directory "
                        "(serving_default(z, truncation_psi) -> images uint8).", flag_values=fv)
    flags.DEFINE_string("data", None, "Real images: a dataset folder (multi-LOD TFRecords) or a "
                        "built-in synthetic kind (e.g. 'shapes').", flag_values=fv)
    flags.DEFINE_list("metrics", list(METRICS),
                      f"Metrics to compute, any of {', '.join(METRICS)}.", flag_values=fv)
    flags.DEFINE_string("inception", None, "Path of classify_image_graph_def.pb (from "
                        "inception-2015-12-05.tgz); required for fid, kid and is.",
                        flag_values=fv)
    flags.DEFINE_integer("num_images", 50000, "Generated images for FID, KID and IS (reals: "
                         "as many, or the whole dataset if smaller).", flag_values=fv)
    flags.DEFINE_integer("swd_images", 16384, "Images per set for SWD (at most the dataset "
                         "size).", flag_values=fv)
    flags.DEFINE_integer("ms_ssim_images", 10000, "Generated images for MS-SSIM (even).",
                         flag_values=fv)
    flags.DEFINE_float("truncation_psi", 1.0, "Truncation psi of the generator (1 = none).",
                       flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the latents and of the SWD / KID random draws.",
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", 32, "Images per generator / Inception call.",
                         flag_values=fv)
    flags.DEFINE_string("cache_dir", os.path.join("~", ".cache", "fq-gan-metrics"),
                        "Folder of cached real-image Inception features ('' = no cache).",
                        flag_values=fv)
    flags.DEFINE_string("output", None, "JSON file for the results (default: "
                        "metrics-<time>.json in the current folder). Never overwritten.",
                        flag_values=fv)


def _validated_flags(FLAGS):  # noqa: N803 (absl's name for the parsed flags)
    """All user errors found before anything runs, as one UsageError line each."""
    if not FLAGS.generator:
        raise app.UsageError("--generator is required (an exported generator SavedModel).")
    if not FLAGS.data:
        raise app.UsageError("--data is required (a dataset folder or a built-in kind).")
    names = [name.strip().lower() for name in FLAGS.metrics if name.strip()]
    unknown = sorted(set(names) - set(METRICS))
    if unknown or not names:
        raise app.UsageError(f"--metrics: unknown {unknown or 'empty list'}; choose from "
                             f"{', '.join(METRICS)}.")
    for flag in ("num_images", "swd_images", "ms_ssim_images", "batch_size"):
        if getattr(FLAGS, flag) < 1:
            raise app.UsageError(f"--{flag} must be >= 1, got {getattr(FLAGS, flag)}.")
    if "ms_ssim" in names and FLAGS.ms_ssim_images % 2:
        raise app.UsageError(f"--ms_ssim_images must be even (pairs), got {FLAGS.ms_ssim_images}.")
    if "is" in names and FLAGS.num_images < 10:
        raise app.UsageError("--num_images must be >= 10 for the Inception Score's 10 splits.")
    needing = [name for name in names if name in INCEPTION_METRICS]
    if needing and (not FLAGS.inception or not os.path.isfile(FLAGS.inception)):
        others = [name for name in names if name not in INCEPTION_METRICS]
        raise app.UsageError(
            f"{', '.join(needing)} {'needs' if len(needing) == 1 else 'need'} the Inception "
            f"graph{f' ({FLAGS.inception} not found)' if FLAGS.inception else ''}: pass "
            f"--inception=/path/to/classify_image_graph_def.pb (from inception-2015-12-05.tgz; "
            f"nothing is downloaded)"
            f"{f', or leave them out with --metrics={chr(44).join(others)}' if others else ''}.")
    output = FLAGS.output or f"metrics-{time.strftime('%Y%m%d-%H%M%S')}.json"
    if os.path.exists(output):
        raise app.UsageError(f"--output: {output} already exists; choose another file.")
    return names, output


def main(argv, FLAGS=flags.FLAGS):  # noqa: N803
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; use --flags.")
    names, output = _validated_flags(FLAGS)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from metrics import InceptionV3, evaluate
    try:
        generator = evaluate.Generator(FLAGS.generator)
        probe = next(generator.batches(1, FLAGS.seed, 1, FLAGS.truncation_psi))
    except ValueError as error:
        raise app.UsageError(f"--generator: {error}")
    try:
        reals = evaluate.RealImages(FLAGS.data, probe.shape[1])
    except ValueError as error:  # datasets.DatasetError is a ValueError
        raise app.UsageError(f"--data: {error}")
    try:
        inception = (InceptionV3(FLAGS.inception, FLAGS.batch_size)
                     if any(name in names for name in INCEPTION_METRICS) else None)
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(str(error))
    print(f"generator {FLAGS.generator}: {probe.shape[1]}x{probe.shape[2]}, z_dim "
          f"{generator.z_dim}; reals {FLAGS.data}: {reals.num_images} images")
    cache_dir = os.path.expanduser(FLAGS.cache_dir) if FLAGS.cache_dir else None
    results, seconds = evaluate.compute_metrics(
        generator, reals, names, inception, FLAGS.num_images, FLAGS.swd_images,
        FLAGS.ms_ssim_images, FLAGS.truncation_psi, FLAGS.seed, FLAGS.batch_size, cache_dir)
    print(evaluate.format_table(results))
    evaluate.write_json_atomically(output, {
        "generator": os.path.abspath(FLAGS.generator), "data": FLAGS.data,
        "metrics": results, "seconds": seconds,
        "settings": {"num_images": FLAGS.num_images, "swd_images": FLAGS.swd_images,
                     "ms_ssim_images": FLAGS.ms_ssim_images, "truncation_psi": FLAGS.truncation_psi,
                     "seed": FLAGS.seed,
                     "inception_sha1": inception.fingerprint if inception else None},
    })
    print(f"wrote {output}")


def _cli(argv):
    """main, with usage errors as one `error:` line on stderr and exit status 1."""
    try:
        main(argv)
    except app.UsageError as error:
        print(f"run_metrics.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(_cli)
