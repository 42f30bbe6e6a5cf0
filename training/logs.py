"""What a run shows its user: TensorBoard events, a JSON-lines log, PNG grids, a progress line.

All writers are no-ops on non-chief workers (MultiWorkerMirroredStrategy task index > 0), so
every worker can call them unconditionally.
"""

import json
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from training import TrainingDiverged


def diverged_message(position, what, checkpoint):
    """The one message of every trainer when a loss or a feature becomes non-finite.

    position: where training stopped, e.g. "kimg 1.024" or "iteration 300".
    """
    return (f"Non-finite loss at {position} ({what}). Training stopped; the last good "
            f"checkpoint is {checkpoint} (lower --lr, or try --precision float32, then "
            "--resume).")


# Sample grids of small images are upscaled (nearest neighbour, an integer factor) to at least
# this many pixels per image, so that a 32x32 or 8x8 sample is readable in an image viewer.
GRID_DISPLAY_SIZE = 128


def grid_upscale(resolution):
    """The integer nearest-neighbour factor that shows `resolution`-pixel images at least
    GRID_DISPLAY_SIZE pixels wide (1 for 128 and larger)."""
    return max(1, -(-GRID_DISPLAY_SIZE // int(resolution)))


def image_grid(images, columns=None, upscale=1):
    """Tiles NHWC images into one HWC uint8 image.

    Args:
      images: (N, H, W, C) float in [-1, 1] or uint8; C in {1, 3}.
      columns: grid width; default ceil(sqrt(N)).
      upscale: integer nearest-neighbour factor applied to every image (pixels repeated).

    Returns:
      uint8 (rows*H*upscale, columns*W*upscale, C).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if upscale > 1:
        images = images.repeat(upscale, axis=1).repeat(upscale, axis=2)
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    padded = np.zeros((rows * columns, h, w, c), np.uint8)
    padded[:n] = images
    return padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)


def save_image_grid(path, images, columns=None, upscale=1):
    """Writes `image_grid(images, columns, upscale)` as a PNG (atomically: temp file, then
    rename)."""
    grid = image_grid(images, columns, upscale)
    tmp = f"{path}.tmp"
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def diverged_from(error, position, checkpoint):
    """TrainingDiverged for an FQ layer's finiteness error (NaN features reach the dictionary
    update before the tick's loss check sees them), or None for any other error."""
    if "non-finite" not in error.message:
        return None
    what = next(line.strip() for line in error.message.splitlines() if "non-finite" in line)
    return TrainingDiverged(diverged_message(position, what, checkpoint))


class RunLogger:
    """Scalars to TensorBoard and to `log.jsonl`; images to TensorBoard; a progress line.

    Args:
      run_dir: the run's output folder.
      total_kimg: training length, for the ETA.
      is_chief: only the chief writes anything.
      stream: where the progress line goes (default: sys.stdout at the time of each print, so
        a redirected or captured stdout is honoured).
    """

    def __init__(self, run_dir, total_kimg, is_chief=True, stream=None):
        self.run_dir = run_dir
        self.total_kimg = total_kimg
        self.is_chief = is_chief
        self.stream = stream
        self._writer = None
        self._jsonl = None
        self._last_time = None
        self._last_kimg = None
        if is_chief:
            self._writer = tf.summary.create_file_writer(os.path.join(run_dir, "tensorboard"))
            self._jsonl = open(os.path.join(run_dir, "log.jsonl"), "a")

    def scalars(self, kimg, values):
        """Logs a dict of scalars at `kimg`; TensorBoard step = images shown (int)."""
        if not self.is_chief:
            return
        values = {k: float(v) for k, v in values.items()}
        step = int(round(kimg * 1000))
        with self._writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self.record(kimg, values)

    def record(self, kimg, values):
        """One line of `log.jsonl`: {"kimg", "time", **values} (any JSON-serialisable values;
        the run's start record is one)."""
        if not self.is_chief:
            return
        self._jsonl.write(json.dumps({"kimg": round(kimg, 3), "time": round(time.time(), 3), **values}) + "\n")
        self._jsonl.flush()

    def images(self, kimg, name, images):
        """One image grid (NHWC, [-1,1] or uint8) to TensorBoard."""
        if not self.is_chief:
            return
        with self._writer.as_default(step=int(round(kimg * 1000))):
            tf.summary.image(name, image_grid(images)[np.newaxis], max_outputs=1)
        self._writer.flush()

    def throughput(self, kimg):
        """Images per second since the previous call (None on the first call)."""
        now = time.perf_counter()
        rate = None
        if self._last_time is not None and now > self._last_time:
            rate = (kimg - self._last_kimg) * 1000.0 / (now - self._last_time)
        self._last_time, self._last_kimg = now, kimg
        return rate

    def progress(self, kimg, img_per_sec, extra=""):
        """Prints `kimg  img/s  ETA  extra` as one line."""
        if not self.is_chief:
            return
        eta = "?"
        if img_per_sec:
            seconds = max(self.total_kimg - kimg, 0.0) * 1000.0 / img_per_sec
            eta = time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds < 86400 else f"{seconds / 86400:.1f}d"
        rate = f"{img_per_sec:8.1f}" if img_per_sec else "       -"
        print(f"kimg {kimg:9.3f}/{self.total_kimg:g}  img/s {rate}  ETA {eta:>8}  {extra}",
              file=self.stream or sys.stdout, flush=True)

    def tick(self, kimg, values, shown, prefix="", last_checkpoint=None, position=None):
        """One tick of any trainer: divergence check, img/s, scalars, the progress line.

        Args:
          kimg: thousands of real images shown so far.
          values: the tick's averaged scalars (dict name -> float).
          shown: keys of `values` printed on the progress line (when present).
          prefix: text that starts the progress line's details (e.g. the iteration).
          last_checkpoint: named by the error if a value is not finite.
          position: where training is, for that error (default "kimg <kimg>").

        Raises:
          TrainingDiverged: a value is NaN or infinite (nothing is logged).
        """
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise TrainingDiverged(diverged_message(
                position or f"kimg {kimg:.3f}",
                ", ".join(f"{k}={v}" for k, v in sorted(bad.items())), last_checkpoint))
        rate = self.throughput(kimg)
        values = dict(values, **{"progress/kimg": kimg})
        if rate:
            values["progress/img_per_sec"] = rate
        self.scalars(kimg, values)
        extra = prefix + "  ".join(f"{k} {values[k]:.4f}" for k in shown if k in values)
        perplexities = [v for k, v in values.items()
                        if k.startswith("fq/") and k.endswith("/perplexity")]
        if perplexities:
            extra += "  fq_perplexity " + "/".join(f"{p:.1f}" for p in perplexities)
        if "sq/perplexity" in values:
            extra += f"  sq_perplexity {values['sq/perplexity']:.1f} (dead {values['sq/dead_codes']})"
        self.progress(kimg, rate, extra)
        return values

    def close(self):
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
        if self._jsonl is not None:
            self._jsonl.close()
