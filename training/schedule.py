"""Progressive-growing schedule of ProGAN / StyleGAN (NVlabs `training_schedule`).

Time is measured in kimg (thousands of real images shown to D). Training alternates phases of
`stabilize_kimg` at a fixed level of detail and `transition_kimg` fading in the next resolution:

    phase_idx  = floor(kimg / (stabilize_kimg + transition_kimg))
    phase_kimg = kimg - phase_idx * (stabilize_kimg + transition_kimg)
    lod = log2(R) - log2(initial_resolution) - phase_idx
          - max(phase_kimg - stabilize_kimg, 0) / transition_kimg,     clamped to >= 0

The training resolution is 2^(log2(R) - floor(lod)): the higher one during a fade. Minibatch size
and learning rate come from per-resolution dictionaries. Adam state is reset whenever floor(lod)
or ceil(lod) changes, i.e. at the start and at the end of every fade.

A fixed-resolution model (StyleGAN2's default) is the schedule with initial_resolution = R.

The trainer splits training into *segments* between such changes: within a segment the
resolution, minibatch and learning rate are constant (one traced step function) and lod is a
tensor computed from the image counter inside the step (`lod_tensor`), so no Python runs per step.
"""

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Segment:
    """A stretch of training with constant resolution, minibatch and learning rate."""
    start_kimg: float        # Inclusive.
    end_kimg: float          # Exclusive; math.inf for the last (stable, full-resolution) segment.
    resolution: int          # Resolution the networks run at (the higher one during a fade).
    minibatch: int           # Global minibatch size.
    learning_rate: float
    fading: bool             # True while lod decreases from resolution's lod + 1 to its lod.


@dataclasses.dataclass(frozen=True)
class ProgressiveSchedule:
    resolution: int                      # Final (dataset) resolution R, a power of two.
    initial_resolution: int = 8          # First resolution trained; = resolution disables growing.
    stabilize_kimg: float = 600.0        # Images per stabilisation phase (ProGAN paper: 800).
    transition_kimg: float = 600.0       # Images per fade-in phase.
    minibatch_base: int = 32             # Minibatch where minibatch_dict has no entry.
    minibatch_dict: tuple = ()           # ((resolution, minibatch), ...).
    learning_rate_base: float = 0.001    # Learning rate where learning_rate_dict has no entry.
    learning_rate_dict: tuple = ()       # ((resolution, learning rate), ...).

    def __post_init__(self):
        for name in ("resolution", "initial_resolution"):
            value = getattr(self, name)
            if value < 4 or value & (value - 1):
                raise ValueError(f"ProgressiveSchedule: {name} must be a power of two >= 4, got {value}.")
        if self.initial_resolution > self.resolution:
            raise ValueError(
                f"ProgressiveSchedule: initial_resolution {self.initial_resolution} is above the "
                f"final resolution {self.resolution}.")
        if self.stabilize_kimg < 0 or self.transition_kimg <= 0:
            raise ValueError("ProgressiveSchedule: stabilize_kimg must be >= 0 and transition_kimg > 0.")

    @property
    def resolution_log2(self):
        return int(math.log2(self.resolution))

    @property
    def max_lod(self):
        """lod at kimg 0."""
        return float(self.resolution_log2 - int(math.log2(self.initial_resolution)))

    @property
    def phase_kimg(self):
        return self.stabilize_kimg + self.transition_kimg

    def lod(self, kimg):
        """lod at `kimg` (Python float), exactly as NVlabs' training_schedule."""
        phase_idx = math.floor(kimg / self.phase_kimg)
        phase_kimg = kimg - phase_idx * self.phase_kimg
        lod = self.max_lod - phase_idx - max(phase_kimg - self.stabilize_kimg, 0.0) / self.transition_kimg
        return max(lod, 0.0)

    def lod_tensor(self, kimg):
        """The same formula on a float32/float64 tensor, for use inside a compiled step."""
        kimg = tf.convert_to_tensor(kimg)
        phase_idx = tf.floor(kimg / self.phase_kimg)
        phase_kimg = kimg - phase_idx * self.phase_kimg
        lod = (self.max_lod - phase_idx
               - tf.maximum(phase_kimg - self.stabilize_kimg, 0.0) / self.transition_kimg)
        return tf.maximum(lod, 0.0)

    def resolution_at(self, lod):
        return 2 ** (self.resolution_log2 - int(math.floor(lod)))

    def minibatch_at(self, resolution):
        return dict(self.minibatch_dict).get(resolution, self.minibatch_base)

    def learning_rate_at(self, resolution):
        return dict(self.learning_rate_dict).get(resolution, self.learning_rate_base)

    def segment_at(self, kimg):
        """The segment containing `kimg`: a stabilisation phase, a fade, or the final stretch.

        A fade segment [start, end) has lod in (l - 1, l]; it trains at the higher resolution
        from its first step (at `start` lod = l exactly, where the faded output equals the
        lower-resolution network's).
        """
        phase_idx = math.floor(kimg / self.phase_kimg)
        if phase_idx >= self.max_lod:
            # Final resolution, stable: from the end of the last fade on.
            return self._segment(self.max_lod * self.phase_kimg, math.inf, 0.0)
        phase_start = phase_idx * self.phase_kimg
        fade_start = phase_start + self.stabilize_kimg
        if kimg < fade_start:
            return self._segment(phase_start, fade_start, self.max_lod - phase_idx)
        return self._segment(fade_start, phase_start + self.phase_kimg, self.max_lod - phase_idx - 0.5)

    def _segment(self, start, end, lod):
        resolution = self.resolution_at(lod)
        return Segment(start_kimg=start, end_kimg=end, resolution=resolution,
                       minibatch=self.minibatch_at(resolution),
                       learning_rate=self.learning_rate_at(resolution),
                       fading=lod != math.floor(lod))
