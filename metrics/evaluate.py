"""Measure a generator against real images: the engine behind `run_metrics.py`.

Usable from training code as well: `compute_metrics` takes any object with the methods of
`Generator` and `RealImages` below (duck typing), so a trainer can pass its own generator
wrapper and a dataset view.
"""

import json
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

import datasets
from metrics.frechet_inception_distance import frechet_inception_distance, low_rank_applies
from metrics.inception import cached_real_features
from metrics.inception_score import inception_score
from metrics.kernel_inception_distance import kernel_inception_distance
from metrics.images import to_uint8_images
from metrics.ms_ssim import ms_ssim_pairs
from metrics.sliced_wasserstein import SlicedWassersteinDistance

METRICS = ("fid", "kid", "is", "swd", "ms_ssim")
INCEPTION_METRICS = ("fid", "kid", "is")


class Generator:
    """A generator to measure: z ~ N(0, 1) minibatches -> uint8 NHWC images.

    `path`: an exported SavedModel, a run folder (its latest checkpoint), a checkpoint or
    converted networks (`export.load_generator`: the same signatures as the export).
    Class-conditional generators (a `labels` input, one-hot [N, c_dim]) get classes drawn
    uniformly at random from the same RandomState, as BigGAN-PyTorch samples for its metrics.
    """

    def __init__(self, path):
        from export import ExportError, load_generator
        try:
            self._generator = load_generator(path)
        except ExportError as error:
            raise ValueError(str(error)) from None
        inputs = self._generator.inputs.get("serving_default", {})
        if not {"z", "truncation_psi"} <= set(inputs) <= {"z", "truncation_psi", "labels"}:
            raise ValueError(
                f"{path} lacks the signature serving_default(z, truncation_psi[, labels]) -> "
                f"images; export the generator with the project's exporter.")
        self.z_dim = int(inputs["z"].shape[-1])
        self.c_dim = int(inputs["labels"].shape[-1]) if "labels" in inputs else 0

    def batches(self, num_images, seed, batch_size, truncation_psi):
        """Yields uint8 (n, H, W, 3) batches, num_images in all, latents from RandomState(seed)."""
        rng = np.random.RandomState(seed)
        for begin in range(0, num_images, batch_size):
            count = min(batch_size, num_images - begin)
            inputs = dict(z=rng.randn(count, self.z_dim).astype(np.float32),
                          truncation_psi=np.float32(truncation_psi))
            if self.c_dim:
                classes = rng.randint(self.c_dim, size=count)
                inputs["labels"] = np.eye(self.c_dim, dtype=np.float32)[classes]
            outputs = self._generator("serving_default", **inputs)
            if "images" not in outputs:
                raise ValueError(f"{self._generator.description}: serving_default returns no "
                                 "images; export the generator with the project's exporter.")
            yield outputs["images"]


class RealImages:
    """The real dataset at one resolution, read in record order as uint8 RGB batches."""

    def __init__(self, source, resolution):
        """source: a dataset folder, a built-in synthetic kind, or an opened ImageDataset."""
        if hasattr(source, "pipeline") and hasattr(source, "info"):
            self.dataset = source
            if resolution not in source.info.resolutions:
                raise ValueError(f"{source.info.source}: no {resolution}x{resolution} level; "
                                 f"available: {list(source.info.resolutions)}")
        else:
            self.dataset = datasets.open_dataset(source, resolution=resolution)
        self.level = int(resolution)
        info = self.dataset.info
        self.num_images = info.num_images
        self.resolution = self.level
        # Identity for the feature cache: source, level, size, and the files' sizes and times.
        files = []
        if os.path.isdir(info.source):
            for name in sorted(os.listdir(info.source)):
                stat = os.stat(os.path.join(info.source, name))
                files.append([name, stat.st_size, int(stat.st_mtime)])
        self.identity = json.dumps({"source": info.source, "resolution": self.level,
                                    "num_images": info.num_images, "files": files})

    def batches(self, num_images, batch_size):
        """Yields uint8 (n, R, R, 3) batches of the first num_images images."""
        pipeline = self.dataset.pipeline(batch_size, self.level, dtype=tf.uint8, shuffle=False,
                                         repeat=False, drop_remainder=False)
        remaining = num_images
        for images, _ in pipeline:
            if remaining <= 0:
                break
            images = images.numpy()[:remaining]
            if images.shape[-1] == 1:
                images = np.repeat(images, 3, axis=-1)  # grayscale -> RGB, as ProGAN
            remaining -= images.shape[0]
            yield images


def streamed_ms_ssim(batches):
    """ProGAN's MS-SSIM (pairs [0::2] vs [1::2] of the whole sequence) over minibatches.

    Equals `metrics.ms_ssim` of all images concatenated, without holding them: an odd image at
    the end of a minibatch is paired with the first of the next one.
    """
    scores, pending = [], None
    for batch in batches:
        batch = to_uint8_images(batch)
        if pending is not None:
            batch = np.concatenate([pending, batch])
        even = batch.shape[0] // 2 * 2
        pending = batch[even:] if even < batch.shape[0] else None
        if even:
            scores.append(ms_ssim_pairs(batch[0:even:2], batch[1:even:2]))
    if not scores or pending is not None:
        raise ValueError("MS-SSIM needs an even number (>= 2) of images.")
    return float(np.mean(np.concatenate(scores)))


def compute_metrics(generator, reals, names, inception=None, num_images=50000, swd_images=16384,
                    ms_ssim_images=10000, truncation_psi=1.0, seed=0, batch_size=32,
                    cache_dir=None, log=print, progress=None, reals_memo=None):
    """Computes the requested metrics; returns {metric: value} (floats) and timings.

    Args:
      generator: object with batches(num_images, seed, batch_size, truncation_psi) -> uint8.
      reals: object with num_images, identity and batches(num_images, batch_size) -> uint8.
      names: subset of METRICS.
      inception: metrics.InceptionV3, needed for fid, kid and is.
      progress: None, or `cli_common.progress` (batches, total, what, count=len) -> batches,
        which shows a progress line for every image set read.
      reals_memo: None, or a dict kept across calls with the same reals and settings (the
        snapshots of one run): the real images' SWD descriptors and MS-SSIM are computed once.
    """
    def shown(batches, total, what):
        return batches if progress is None else progress(batches, total, what, count=len)

    results, seconds = {}, {}
    memo = {} if reals_memo is None else reals_memo
    # Each metric draws its own latents (seed + offset), so adding a metric changes no other.
    if any(name in names for name in INCEPTION_METRICS):
        start = time.time()
        real_count = min(num_images, reals.num_images)
        real = cached_real_features(
            inception, lambda: shown(reals.batches(real_count, batch_size), real_count,
                                     "Inception features, reals"),
            reals.identity, real_count, cache_dir)
        log(f"  reals: {real_count} images, Inception features "
            f"{'read from cache' if real['cached'] else 'computed'}")
        fake = inception.run(shown(generator.batches(num_images, seed, batch_size,
                                                     truncation_psi),
                                   num_images, "Inception features, generated"))
        if "fid" in names:
            # The cached statistics where the covariance route applies; small sets take the
            # exact, cheaper route from the features (frechet_inception_distance).
            small = low_rank_applies(len(real["features"]), len(fake["features"]),
                                     real["features"].shape[1])
            results["fid"] = frechet_inception_distance(
                real["features"] if small else (real["mu"], real["sigma"]), fake["features"])
        if "kid" in names:
            kid = kernel_inception_distance(real["features"], fake["features"], seed=seed)
            results.update(kid=kid["kid"], kid_std=kid["kid_std"])
        if "is" in names:
            score = inception_score(fake["logits"])
            real_score = inception_score(real["logits"])
            results.update(**{"is": score["inception_score"],
                              "is_std": score["inception_score_std"],
                              "is_reals": real_score["inception_score"]})
        seconds["inception"] = time.time() - start
    if "swd" in names:
        start = time.time()
        count = min(swd_images, reals.num_images)
        swd = SlicedWassersteinDistance(reals.resolution, seed=seed,
                                                minibatch_size=batch_size)
        key = ("swd", count, batch_size, seed)
        if key not in memo:
            real_desc = swd.descriptors(shown(reals.batches(count, batch_size), count,
                                              "SWD, reals"))
            # With the RNG state after the reals' patches: the fakes' patches and the
            # directions continue from it, as when the reals are read again.
            memo[key] = (real_desc, swd.rng.get_state())
        real_desc, state = memo[key]
        swd.rng.set_state(state)
        fake_desc = swd.descriptors(shown(
            generator.batches(count, seed + 1, batch_size, truncation_psi), count,
            "SWD, generated"))
        results.update(swd.distance(real_desc, fake_desc))
        seconds["swd"] = time.time() - start
    if "ms_ssim" in names:
        start = time.time()
        results["ms_ssim"] = streamed_ms_ssim(shown(
            generator.batches(ms_ssim_images, seed + 2, batch_size, truncation_psi),
            ms_ssim_images, "MS-SSIM, generated"))
        real_count = min(ms_ssim_images, reals.num_images) // 2 * 2
        key = ("ms_ssim", real_count, batch_size)
        if key not in memo:
            memo[key] = streamed_ms_ssim(shown(reals.batches(real_count, batch_size),
                                               real_count, "MS-SSIM, reals"))
        results["ms_ssim_reals"] = memo[key]
        seconds["ms_ssim"] = time.time() - start
    return results, seconds


# What ranks snapshots for each metric: the result and "lowest", "highest" or "closest to" the
# named result (MS-SSIM: a generator's diversity is judged against the training set's).
BEST_BY = {"fid": ("fid", "lowest"), "kid": ("kid", "lowest"), "is": ("is", "highest"),
           "swd": ("SWDx1e3_avg", "lowest"), "ms_ssim": ("ms_ssim", "closest to ms_ssim_reals")}


def metric_results(results, name):
    """The values of one metric among compute_metrics' results (swd -> its SWDx1e3_*)."""
    return {k: v for k, v in results.items()
            if (k.startswith("SWD") if name == "swd" else k == name or k.startswith(name + "_"))}


def best_snapshots(rows, names):
    """{metric: index of the best row} of rows [(snapshot, kimg, results)] (BEST_BY)."""
    def badness(name, results):
        key, rule = BEST_BY[name]
        if rule == "highest":
            return -results[key]
        if rule.startswith("closest to "):
            return abs(results[key] - results[rule[len("closest to "):]])
        return results[key]
    return {name: min(range(len(rows)), key=lambda i: badness(name, rows[i][2]))
            for name in names}


def format_snapshot_table(rows, names):
    """One line per snapshot (rows [(snapshot, kimg, results)]), the best value of each
    metric marked with *, and a line per metric naming its best snapshot."""
    keys = list(rows[0][2])
    best = best_snapshots(rows, names)
    marked = {(best[name], BEST_BY[name][0]) for name in names}
    width = max(len("snapshot"), *(len(row[0]) for row in rows))
    columns = [max(len(k), 12) for k in keys]
    lines = [f"{'snapshot':<{width}}  {'kimg':>9}  " + "  ".join(
        f"{k:>{c}} " for k, c in zip(keys, columns)).rstrip()]
    for i, (snapshot, kimg, results) in enumerate(rows):
        cells = [f"{results[k]:.6g}{'*' if (i, k) in marked else ' '}" for k in keys]
        lines.append(f"{snapshot:<{width}}  {kimg:>9.3f}  " + "  ".join(
            f"{cell:>{c + 1}}" for cell, c in zip(cells, columns)))
    for name in names:
        key, rule = BEST_BY[name]
        lines.append(f"* best {name}: {rows[best[name]][0]} ({rule} {key})")
    return "\n".join(lines)


def append_metric_records(run_dir, names, results, seconds, num_images, **identity):
    """Appends one JSON line per metric to <run_dir>/metric-<name>.jsonl: {"metric", "results"
    (its values), "num_images" ({metric: generated images}), "seconds", **identity (snapshot,
    kimg, ...), "timestamp"}; returns the files. Lines are only ever added, each whole."""
    paths = []
    for name in names:
        path = os.path.join(run_dir, f"metric-{name}.jsonl")
        record = {"metric": name, "results": metric_results(results, name), **identity,
                  "num_images": num_images[name],
                  "seconds": round(seconds.get(name, seconds.get("inception", 0.0)), 2),
                  "timestamp": round(time.time(), 3)}
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
        paths.append(path)
    return paths


def format_table(results):
    width = max(len(name) for name in results)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------------"]
    lines += [f"{name:<{width}}  {value:.6g}" for name, value in results.items()]
    return "\n".join(lines)


def write_json_atomically(path, payload):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".json.tmp")
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
