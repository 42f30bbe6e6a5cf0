"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

Unbiased estimate of the squared MMD between Inception features with the polynomial kernel
k(x, y) = (x.y / D + 1)^3, D = 2048, averaged over random subsets, as the authors' code and
stylegan2-ada-pytorch's `kernel_inception_distance.py` compute it:

    m = min(N_real, N_fake, max_subset_size)
    per subset (m fakes x, m reals y drawn without replacement):
      MMD^2_u = [sum_{i != j} k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1))
                - 2 sum_{i,j} k(x_i, y_j) / m^2
    KID = mean over subsets; KID_std = their standard deviation.
"""

import numpy as np


def kernel_inception_distance(real_features, fake_features, num_subsets=100,
                              max_subset_size=1000, seed=0):
    """KID between two feature sets.

    Args:
      real_features, fake_features: (N, D) float features.
      num_subsets: number of random subsets (reference: 100).
      max_subset_size: subset size cap (reference: 1000).
      seed: seed of the np.random.RandomState that draws the subsets (fake indices, then real
        indices, per subset).

    Returns:
      dict: kid (mean of the subset estimates), kid_std (their standard deviation), both floats.
    """
    real = np.asarray(real_features, np.float64)
    fake = np.asarray(fake_features, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"KID: features must be (N, D) with equal D, got {real.shape} and "
                         f"{fake.shape}.")
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 real and 2 fake samples, got {real.shape[0]} and "
                         f"{fake.shape[0]}.")
    if num_subsets < 1:
        raise ValueError(f"KID: num_subsets must be >= 1, got {num_subsets}.")
    dim = real.shape[1]
    rng = np.random.RandomState(seed)
    estimates = np.empty(num_subsets)
    for s in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        k_xx = (x @ x.T / dim + 1.0) ** 3
        k_yy = (y @ y.T / dim + 1.0) ** 3
        k_xy = (x @ y.T / dim + 1.0) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates[s] = within - 2.0 * k_xy.sum() / (m * m)
    return {"kid": float(estimates.mean()), "kid_std": float(estimates.std())}
