"""Inception Score (Salimans et al. 2016), as OpenAI's `improved-gan/inception_score/model.py`.

    IS = exp(E_x KL(p(y|x) || p(y))), per split of the predictions, p(y) = the split's mean;
    reported as mean and std over 10 consecutive splits.

p(y|x) = softmax(logits) of the Inception graph (see `metrics.inception`: logits without the
output bias, as OpenAI's code). log p(y|x) is taken as log_softmax(logits) in float64 so that
confident predictions (probabilities that underflow to 0) stay finite.
"""

import numpy as np


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def inception_score(logits, splits=10):
    """Inception Score from classifier logits.

    Args:
      logits: (N, classes) logits; N >= splits.
      splits: number of consecutive splits (reference: 10), split i = rows
        [i N // splits, (i + 1) N // splits).

    Returns:
      dict: inception_score (mean over splits), inception_score_std (np.std over splits).
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[0] < splits or splits < 1:
        raise ValueError(f"inception_score: need (N >= splits, classes) logits and splits >= 1, "
                         f"got shape {logits.shape} and splits={splits}.")
    log_probs = _log_softmax(logits)
    probs = np.exp(log_probs)
    n = logits.shape[0]
    scores = []
    for i in range(splits):
        part = slice(i * n // splits, (i + 1) * n // splits)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_marginal = np.log(np.mean(probs[part], axis=0, keepdims=True))
            terms = probs[part] * (log_probs[part] - log_marginal)
        # p log p -> 0 as p -> 0: a class whose probability underflowed contributes nothing.
        kl = np.sum(np.where(probs[part] > 0.0, terms, 0.0), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return {"inception_score": float(np.mean(scores)), "inception_score_std": float(np.std(scores))}
