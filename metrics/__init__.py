"""Metrics of the papers, computed offline and callable during training.

All image inputs are NHWC RGB, either uint8 in [0, 255] or float in [-1, 1] (see
`metrics.images.to_uint8_images`).

- SWD (ProGAN): `sliced_wasserstein_distance`, `SlicedWassersteinDistance`.
- MS-SSIM (ProGAN): `ms_ssim`, `ms_ssim_pairs`.
- FID / KID / IS from the user's local `classify_image_graph_def.pb`: `InceptionV3`,
  `frechet_inception_distance`, `frechet_distance`, `kernel_inception_distance`,
  `inception_score`, `cached_real_features`.
- FQ dictionaries: `codebook_usage`, `CodebookStatistics`, `save_codebook_figure`.
- A generator against a dataset (the engine of `run_metrics.py`): `metrics.evaluate`.
"""

from metrics.codebook import (CodebookStatistics, codebook_figure, codebook_usage,
                              dictionary_order, save_codebook_figure)
from metrics.frechet_inception_distance import frechet_distance, frechet_inception_distance
from metrics.images import to_uint8_images
from metrics.inception import InceptionV3, cached_real_features, feature_statistics
from metrics.inception_score import inception_score
from metrics.kernel_inception_distance import kernel_inception_distance
from metrics.ms_ssim import ms_ssim, ms_ssim_pairs
from metrics.sliced_wasserstein import SlicedWassersteinDistance, sliced_wasserstein_distance

__all__ = [
    "CodebookStatistics", "InceptionV3", "SlicedWassersteinDistance", "cached_real_features",
    "codebook_figure", "codebook_usage", "dictionary_order", "feature_statistics",
    "frechet_distance", "frechet_inception_distance", "inception_score",
    "kernel_inception_distance", "ms_ssim", "ms_ssim_pairs", "save_codebook_figure",
    "sliced_wasserstein_distance", "to_uint8_images",
]
