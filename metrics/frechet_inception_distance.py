"""Fréchet Inception Distance (Heusel et al. 2017), as TTUR's `fid.py` computes it.

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

with mu, S the mean and covariance (np.cov, N - 1) of Inception pool_3 features (2048-D) of 50k
generated images (no truncation) and of the real dataset.

The reference takes the real part of scipy.linalg.sqrtm(S1 S2). Only its trace is needed, and
Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2) = sum_i sqrt(lambda_i), with lambda_i the
eigenvalues of the symmetric positive semi-definite S1^(1/2) S2 S1^(1/2). We compute exactly that
with two symmetric eigendecompositions (numpy.linalg.eigh), which needs no scipy and stays real
and finite when S1 or S2 is singular (fewer images than 2048 features), where sqrtm returns
complex or non-finite values. Tiny negative eigenvalues from rounding are clipped to 0.

With fewer images than features (quick evaluations: both sets have N <= D images), the features
themselves give the trace exactly, without any D x D decomposition: with A = (X - mean) /
sqrt(N - 1) (N x D), S = A^T A, the non-zero eigenvalues of S1 S2 are those of
(A1 A2^T)(A1 A2^T)^T, so Tr (S1 S2)^(1/2) = sum of the singular values of A1 A2^T (N1 x N2), and
Tr S = sum(A^2). That is O(N1 N2 D) instead of O(D^3), and free of the D - N eigenvalues that
are zero in exact arithmetic, whose rounding the D x D route adds as sqrt(|rounding|) each.
"""

import numpy as np

from metrics.inception import feature_statistics


def _symmetric_sqrt(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))) @ eigenvectors.T


def trace_sqrt_product(sigma1, sigma2):
    """Tr((S1 S2)^(1/2)) for symmetric positive semi-definite S1, S2, float64."""
    sqrt1 = _symmetric_sqrt(sigma1)
    middle = sqrt1 @ sigma2 @ sqrt1
    middle = (middle + middle.T) * 0.5  # symmetric up to rounding; eigh reads one triangle
    return float(np.sum(np.sqrt(np.maximum(np.linalg.eigvalsh(middle), 0.0))))


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
      mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances.

    Returns:
      Python float.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, "
                         f"sigma {sigma1.shape} / {sigma2.shape}.")
    mean_term = float(np.sum(np.square(mu1 - mu2)))
    return mean_term + float(np.trace(sigma1) + np.trace(sigma2)) - 2.0 * trace_sqrt_product(
        sigma1, sigma2)


def low_rank_applies(num_real, num_fake, dim):
    """Whether FID of these set sizes is computed from the features (both N <= D)."""
    return max(num_real, num_fake) <= dim


def _frechet_distance_low_rank(features1, features2):
    """Frechet distance of the two sets' Gaussians (N1, D), (N2, D), N <= D: module docstring."""
    means, centred = [], []
    for features in (features1, features2):
        x = np.asarray(features, np.float64)
        means.append(x.mean(axis=0))
        centred.append((x - means[-1]) / np.sqrt(x.shape[0] - 1.0))
    a1, a2 = centred
    mean_term = float(np.sum(np.square(means[0] - means[1])))
    trace_sqrt = float(np.sum(np.linalg.svd(a1 @ a2.T, compute_uv=False)))
    return mean_term + float(np.sum(a1 * a1) + np.sum(a2 * a2)) - 2.0 * trace_sqrt


def frechet_inception_distance(real_features, fake_features):
    """FID from two feature sets (N, 2048) each (or precomputed (mu, sigma) tuples).

    Two feature sets of at most D images each take the exact low-rank route (module
    docstring); otherwise the statistics are compared as `frechet_distance` does.
    """
    if not isinstance(real_features, tuple) and not isinstance(fake_features, tuple):
        real, fake = np.asarray(real_features), np.asarray(fake_features)
        if (real.ndim == fake.ndim == 2 and real.shape[1] == fake.shape[1]
                and min(len(real), len(fake)) >= 2
                and low_rank_applies(len(real), len(fake), real.shape[1])):
            return _frechet_distance_low_rank(real, fake)
    real = real_features if isinstance(real_features, tuple) else feature_statistics(real_features)
    fake = fake_features if isinstance(fake_features, tuple) else feature_statistics(fake_features)
    return frechet_distance(real[0], real[1], fake[0], fake[1])
