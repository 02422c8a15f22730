"""Training the query adapter, top to bottom.

1. config (every default below is what the benchmark in bench/deep_memory.py uses);
2. the adapter starts as the exact identity;
3. each step: a batch of questions, adapted; a softmax over candidate chunks (the whole
   corpus when it fits in ``max_candidates``, otherwise the batch's positives, hard negatives
   mined from the store with the base embedding, and a random sample); loss = contrastive
   loss + drift_penalty * ||W - I||^2;
4. after each epoch, MRR@10 on the validation split; the best epoch is kept, and training
   stops after ``patience`` epochs without improvement, at ``max_epochs`` or when the time
   budget is spent.
Nothing is written here: the caller decides what to do with the result.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import DeepmemError
from ..metrics import metrics
from ..vector_index import top_k
from .adapter import AdapterConfig, LinearAdapter, QueryAdapter
from .dataset import Example
from .losses import multi_positive_contrastive_loss

__all__ = ["TrainConfig", "TrainResult", "train_adapter", "NotEnoughData", "MIN_TRAIN_EXAMPLES"]

MIN_TRAIN_EXAMPLES = 100
MIN_VAL_EXAMPLES = 20


class NotEnoughData(DeepmemError):
    """Too few questions to train or to validate."""


@dataclass
class TrainConfig:
    temperature: float = 0.03       # softmax temperature of the contrastive loss
    drift_penalty: float = 0.03     # weight of ||W - I||^2 + ||b||^2: holds the adapter near identity
    lr: float = 3e-4                # Adam learning rate
    batch_size: int = 128
    max_epochs: int = 40
    patience: int = 5               # epochs without a better validation MRR@10 before stopping
    max_candidates: int = 200_000   # full softmax over the corpus up to this many chunks
    sampled_negatives: int = 16_384 # random negatives per batch beyond that
    hard_negatives: int = 32        # mined per question with the base embedding (sampled path)
    seed: int = 0
    time_budget_s: float | None = None
    threads: int | None = None      # torch threads (None: torch's default)
    negative_emphasis: float = 10.0 # a chunk labeled not relevant counts as this many negatives

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    adapter: LinearAdapter
    best_epoch: int
    epochs_run: int
    stopped_by: str
    seconds: float
    val_history: list[float] = field(default_factory=list)
    base_val_mrr: float = 0.0


def _val_mrr(adapted: np.ndarray, matrix: np.ndarray, col_positives: list[np.ndarray]) -> float:
    idx, _ = top_k(adapted @ matrix.T, 10)
    ranks = [list(map(int, row)) for row in idx]
    return metrics(ranks, [[frozenset(p.tolist())] for p in col_positives], ks=(10,))["mrr@10"]


def train_adapter(cfg: TrainConfig, corpus_rowids: np.ndarray, corpus: np.ndarray,
                  train_vectors: np.ndarray, train: list[Example], val_vectors: np.ndarray, val: list[Example],
                  progress=None) -> TrainResult:
    import torch

    if len(train) < MIN_TRAIN_EXAMPLES:
        raise NotEnoughData(f"{len(train)} training questions; at least {MIN_TRAIN_EXAMPLES} are needed "
                            f"(a store of a few dozen sections, or more questions with --queries)")
    if len(val) < MIN_VAL_EXAMPLES:
        raise NotEnoughData(f"{len(val)} validation questions; at least {MIN_VAL_EXAMPLES} are needed")
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    # -- data ---------------------------------------------------------------------------
    column = {int(r): i for i, r in enumerate(corpus_rowids)}
    n, dim = corpus.shape
    train_cols = [np.array([column[p] for p in e.positives if p in column], dtype=np.int64) for e in train]
    val_cols = [np.array([column[p] for p in e.positives if p in column], dtype=np.int64) for e in val]
    keep = [i for i, c in enumerate(train_cols) if len(c)]
    train_cols = [train_cols[i] for i in keep]
    neg_cols = [np.array([column[p] for p in train[i].negatives if p in column], dtype=np.int64) for i in keep]
    weights = torch.tensor([train[i].weight for i in keep], dtype=torch.float32)
    log_emphasis = float(np.log(max(1.0, cfg.negative_emphasis)))
    Q = torch.from_numpy(np.ascontiguousarray(train_vectors[keep], dtype=np.float32))  # (T, d)
    M = torch.from_numpy(np.ascontiguousarray(corpus, dtype=np.float32))  # (N, d)
    full = n <= cfg.max_candidates
    hard: list[np.ndarray] = []
    if not full:  # mine hard negatives once, with the base embedding
        idx, _ = top_k(train_vectors[keep] @ corpus.T, cfg.hard_negatives * 2)
        for row, pos in zip(idx, train_cols):
            hard.append(np.array([j for j in row if j not in set(pos.tolist())][: cfg.hard_negatives]))

    # -- model ----------------------------------------------------------------------------
    model = QueryAdapter(AdapterConfig(dim=dim))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    base_mrr = _val_mrr(val_vectors, corpus, val_cols)
    best = (base_mrr, model.to_numpy(), -1)  # the identity is the adapter to beat
    history: list[float] = []
    stopped_by, bad, epoch = "max_epochs", 0, -1

    # -- loop -----------------------------------------------------------------------------
    for epoch in range(cfg.max_epochs):
        model.train()
        order = rng.permutation(len(train_cols))
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            q = model(Q[batch])  # (B, d)
            if full:
                candidates = M  # (N, d)
                where = None
                positive = torch.zeros((len(batch), n), dtype=torch.bool)
                for row, i in enumerate(batch):
                    positive[row, train_cols[i]] = True
            else:
                pos_cols = np.concatenate([train_cols[i] for i in batch] + [neg_cols[i] for i in batch])
                sampled = np.concatenate([hard[i] for i in batch] + [rng.integers(0, n, cfg.sampled_negatives)])
                cols = np.unique(np.concatenate([pos_cols, sampled]))
                where = {c: k for k, c in enumerate(cols.tolist())}
                candidates = M[torch.from_numpy(cols)]
                positive = torch.zeros((len(batch), len(cols)), dtype=torch.bool)
                for row, i in enumerate(batch):
                    positive[row, [where[c] for c in train_cols[i].tolist()]] = True
            emphasis = None
            if any(len(neg_cols[i]) for i in batch):
                emphasis = torch.zeros(positive.shape)
                for row, i in enumerate(batch):
                    cols_i = neg_cols[i] if where is None else [where[c] for c in neg_cols[i].tolist()]
                    emphasis[row, cols_i] = log_emphasis
            loss = multi_positive_contrastive_loss(q, candidates, positive, cfg.temperature,
                                                   weights=weights[torch.from_numpy(batch)], emphasis=emphasis) \
                + cfg.drift_penalty * model.drift()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cfg.time_budget_s and time.perf_counter() - started > cfg.time_budget_s:
                stopped_by = "time_budget"
                break
        adapter = model.to_numpy()
        mrr = _val_mrr(adapter(val_vectors), corpus, val_cols)
        history.append(mrr)
        if progress is not None:
            progress(epoch, loss.item(), mrr)
        if mrr > best[0] + 1e-9:
            best, bad = (mrr, adapter, epoch), 0
        else:
            bad += 1
        if stopped_by == "time_budget":
            break
        if bad >= cfg.patience:
            stopped_by = "patience"
            break
    return TrainResult(adapter=best[1], best_epoch=best[2], epochs_run=epoch + 1, stopped_by=stopped_by,
                       seconds=time.perf_counter() - started, val_history=history, base_val_mrr=base_mrr)
