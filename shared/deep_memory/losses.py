"""Contrastive loss for the query adapter.

``MultiPositiveContrastiveLoss``: for each question, a softmax over candidate chunks, where
the probability mass on *any* of the question's relevant chunks is maximised:

    loss_i = logsumexp_j(s_ij / t) - logsumexp_{j in P_i}(s_ij / t)

Inputs:
    queries      (B, d)  adapted query vectors, unit length
    candidates   (C, d)  chunk vectors (the whole corpus when it fits, else positives,
                         hard negatives mined from the store and a random sample)
    positive     (B, C)  bool, True where candidate j is relevant to question i
    ignore       (B, C)  bool or None, candidates to leave out of the softmax
    weights      (B,)    float or None, how much each question counts (feedback weights)
    emphasis     (B, C)  float or None, added to the logits: log(m) counts a labeled-irrelevant
                         chunk as if it appeared m times among the negatives
Relations: with one positive per question and the candidates being the batch's positives,
this is the in-batch negatives loss (MultipleNegativesRankingLoss).
"""

from __future__ import annotations

__all__ = ["multi_positive_contrastive_loss"]


def multi_positive_contrastive_loss(queries, candidates, positive, temperature: float = 0.03, ignore=None,
                                    weights=None, emphasis=None):
    import torch

    logits = queries @ candidates.T / temperature  # (B, C)
    if emphasis is not None:
        logits = logits + emphasis
    if ignore is not None:
        logits = logits.masked_fill(ignore & ~positive, float("-inf"))
    all_ = torch.logsumexp(logits, dim=1)  # (B,)
    pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)  # (B,)
    valid = positive.any(dim=1)
    if not bool(valid.any()):
        return logits.sum() * 0.0
    per_question = (all_ - pos)[valid]
    if weights is None:
        return per_question.mean()
    w = weights[valid]
    return (per_question * w).sum() / w.sum().clamp_min(1e-9)
