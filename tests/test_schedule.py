"""Progressive schedule against a direct transcription of NVlabs' training_schedule."""

import math

import numpy as np
import pytest
import tensorflow as tf

from training.schedule import ProgressiveSchedule


def nvlabs_lod(kimg, resolution_log2, initial_resolution, training_kimg, transition_kimg):
    phase_dur = training_kimg + transition_kimg
    phase_idx = int(np.floor(kimg / phase_dur)) if phase_dur > 0 else 0
    phase_kimg = kimg - phase_idx * phase_dur
    lod = resolution_log2 - np.floor(np.log2(initial_resolution)) - phase_idx
    if transition_kimg > 0:
        lod -= max(phase_kimg - training_kimg, 0.0) / transition_kimg
    return max(lod, 0.0)


SCHEDULE = ProgressiveSchedule(
    resolution=32, initial_resolution=8, stabilize_kimg=600, transition_kimg=600,
    minibatch_base=16, minibatch_dict=((8, 64), (16, 32)),
    learning_rate_base=0.001, learning_rate_dict=((32, 0.0015),))


@pytest.mark.parametrize("kimg", [0, 1, 599.9, 600, 750, 1199.99, 1200, 1800, 2100, 2400, 2401, 9000])
def test_lod_matches_nvlabs(kimg):
    expected = nvlabs_lod(kimg, 5, 8, 600, 600)
    # Float64 both sides (also the tensor form), lod <= 2 from kimg <= 9000 over 600: ~1e-14.
    assert SCHEDULE.lod(kimg) == pytest.approx(expected, abs=1e-12)
    assert float(SCHEDULE.lod_tensor(tf.constant(kimg, tf.float64))) == pytest.approx(expected, abs=1e-9)


def test_resolution_minibatch_and_lr_follow_floor_lod():
    assert SCHEDULE.segment_at(0).resolution == 8
    assert SCHEDULE.segment_at(0).minibatch == 64
    fade = SCHEDULE.segment_at(900)  # lod 1.5: trains at 16 (the higher resolution)
    assert (fade.resolution, fade.minibatch, fade.fading) == (16, 32, True)
    final = SCHEDULE.segment_at(5000)
    assert (final.resolution, final.minibatch, final.learning_rate) == (32, 16, 0.0015)


def test_segments_tile_time_and_change_exactly_where_floor_or_ceil_lod_change():
    boundaries, kimg = [], 0.0
    while True:
        segment = SCHEDULE.segment_at(kimg)
        assert segment.start_kimg <= kimg < segment.end_kimg
        boundaries.append((segment.start_kimg, segment.end_kimg, segment.resolution, segment.fading))
        if math.isinf(segment.end_kimg):
            break
        kimg = segment.end_kimg
    assert boundaries == [(0, 600, 8, False), (600, 1200, 16, True), (1200, 1800, 16, False),
                          (1800, 2400, 32, True), (2400, math.inf, 32, False)]
    # Inside each segment (open interval) floor(lod) and ceil(lod) are constant: Adam is reset
    # only at segment starts.
    for start, end, _, _ in boundaries:
        end = min(end, 5000)
        lods = [SCHEDULE.lod(k) for k in np.linspace(start + 1e-6, end - 1e-6, 50)]
        assert len({math.floor(l) for l in lods}) == 1 and len({math.ceil(l) for l in lods}) == 1


def test_fixed_resolution_is_one_segment():
    schedule = ProgressiveSchedule(resolution=32, initial_resolution=32)
    segment = schedule.segment_at(0)
    assert (segment.start_kimg, segment.end_kimg, segment.resolution) == (0, math.inf, 32)
    assert schedule.lod(1e6) == 0.0


@pytest.mark.parametrize("kwargs", [dict(resolution=24), dict(resolution=32, initial_resolution=64),
                                    dict(resolution=32, transition_kimg=0)])
def test_bad_schedules(kwargs):
    with pytest.raises(ValueError):
        ProgressiveSchedule(**kwargs)
