"""SWD throughput (images/s) at 32x32 and 128x128, against a plain numpy transcription.

    python bench/bench_metrics.py [--images 1024] [--images-128 256] [--repeats 3]

For each resolution, two sets of N images go through the whole ProGAN SWD (pyramid, 128
descriptors per image per level, normalisation, 4 x 128 sorted projections per level). Reported:
images/s = 2N / wall time of one full SWD (descriptors of both sets + distance), the split between
descriptor extraction and the distance, and the same for the straightforward numpy transcription
used by the tests (tests/test_metrics_swd.py), measured side by side in this run (median of
`--repeats`; the numpy reference runs once per repeat on at most 128 images per set, then scaled).
MS-SSIM pairs/s at both resolutions is printed as well.
"""

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
import cli_common  # noqa: E402

cli_common.import_tensorflow_quietly()   # TensorFlow's defaults, without its start-up noise

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from metrics import SlicedWassersteinDistance, ms_ssim  # noqa: E402
from test_metrics_swd import blob_images, ref_swd  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("images", 1024, "Images per set at 32x32.")
flags.DEFINE_integer("images-128", 256, "Images per set at 128x128.")
flags.DEFINE_integer("repeats", 3, "Timed repeats (median reported).")
flags.DEFINE_integer("minibatch", 64, "Images per TensorFlow call.")


def time_swd(reals, fakes, minibatch):
    swd = SlicedWassersteinDistance(reals.shape[1], seed=0, minibatch_size=minibatch)
    start = time.perf_counter()
    real, fake = swd.descriptors(reals), swd.descriptors(fakes)
    middle = time.perf_counter()
    swd.distance(real, fake)
    end = time.perf_counter()
    return middle - start, end - middle


def bench_resolution(resolution, count, repeats, minibatch):
    reals, fakes = blob_images(count, resolution, 1), blob_images(count, resolution, 2)
    time_swd(reals[:minibatch], fakes[:minibatch], minibatch)  # trace the TF functions
    ours = [time_swd(reals, fakes, minibatch) for _ in range(repeats)]
    desc, dist = np.median([t[0] for t in ours]), np.median([t[1] for t in ours])
    ref_count = min(count, 128)
    ref_times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ref_swd(reals[:ref_count], fakes[:ref_count], seed=0, minibatch_size=minibatch)
        ref_times.append(time.perf_counter() - start)
    ref_rate = 2 * ref_count / np.median(ref_times)
    rate = 2 * count / (desc + dist)
    print(f"SWD {resolution:>3}x{resolution:<3} {count:>5} images/set: {rate:8.1f} images/s "
          f"(descriptors {desc:6.2f} s, distance {dist:6.2f} s); numpy transcription "
          f"{ref_rate:7.1f} images/s ({ref_count}/set); ratio {rate / ref_rate:5.1f}x")
    pairs = reals[:min(count, 256)]
    ms_ssim(pairs[:8])  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ms_ssim(pairs)
        times.append(time.perf_counter() - start)
    print(f"MS-SSIM {resolution:>3}x{resolution:<3}: {len(pairs) // 2 / np.median(times):8.1f} "
          f"pairs/s")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if min(FLAGS.images, FLAGS['images-128'].value, FLAGS.repeats, FLAGS.minibatch) < 1:
        raise app.UsageError("--images, --images-128, --repeats and --minibatch must be >= 1.")
    bench_resolution(32, FLAGS.images, FLAGS.repeats, FLAGS.minibatch)
    bench_resolution(128, FLAGS['images-128'].value, FLAGS.repeats, FLAGS.minibatch)


if __name__ == "__main__":
    app.run(main)
