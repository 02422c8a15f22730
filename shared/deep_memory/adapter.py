"""The deep-memory adapter: a small map applied to the query embedding only.

score(question, chunk) = <normalize(q W + b), d>. The corpus vectors d never change, so
plain nearest-neighbour search over the unchanged store finds the chunks. W starts as the
exact identity and b as zero: an untrained adapter is a no-op, and training moves it only as
far as the data pulls it (a penalty on ||W - I||^2 holds it back where the data is thin).

Two halves, so that answering a question needs no torch:
- ``QueryAdapter`` (torch) for training;
- ``LinearAdapter`` (numpy) for search: one 384x384 product, a few microseconds.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["AdapterConfig", "LinearAdapter", "QueryAdapter", "FORMAT"]

FORMAT = "deepmem-adapter v1"


@dataclass(frozen=True)
class AdapterConfig:
    dim: int
    kind: str = "linear"  # q -> normalize(q W + b)

    def to_dict(self) -> dict:
        return asdict(self)


class LinearAdapter:
    """Inference: numpy only."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        if weight.ndim != 2 or weight.shape[0] != weight.shape[1] or bias.shape != (weight.shape[0],):
            raise ValueError(f"bad adapter shapes: weight {weight.shape}, bias {bias.shape}")
        if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
            raise ValueError("adapter weights are not finite")
        self.weight = weight
        self.bias = bias

    @classmethod
    def identity(cls, dim: int) -> "LinearAdapter":
        return cls(np.eye(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32))

    @property
    def dim(self) -> int:
        return self.weight.shape[0]

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """(dim,) or (n, dim) unit vectors in, the same shape of unit vectors out."""
        v = np.asarray(vectors, dtype=np.float32)
        out = v @ self.weight + self.bias
        norms = np.linalg.norm(out, axis=-1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def distance_from_identity(self) -> float:
        return float(np.linalg.norm(self.weight - np.eye(self.dim, dtype=np.float32)) + np.linalg.norm(self.bias))

    def save(self, directory: Path, meta: dict) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "weights.npz", weight=self.weight, bias=self.bias)
        (directory / "meta.json").write_text(json.dumps({"format": FORMAT, **meta}, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, directory: Path) -> tuple["LinearAdapter", dict]:
        meta = json.loads((directory / "meta.json").read_text())
        return cls.from_saved((directory / "weights.npz").read_bytes(), meta, str(directory))

    def weights_bytes(self) -> bytes:
        """weights.npz's content (what ``save`` writes), for a registry that keeps it in a database."""
        buffer = io.BytesIO()
        np.savez(buffer, weight=self.weight, bias=self.bias)
        return buffer.getvalue()

    @classmethod
    def from_saved(cls, weights: bytes, meta: dict, where: str) -> tuple["LinearAdapter", dict]:
        """An adapter from weights.npz's bytes and its meta, checked as ``load`` checks files."""
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else None
            raise ValueError(f"{where}: not a {FORMAT} adapter (format {found!r})")
        with np.load(io.BytesIO(weights)) as data:
            adapter = cls(data["weight"], data["bias"])
        if meta.get("config", {}).get("dim") not in (None, adapter.dim):
            raise ValueError(f"{where}: weights do not match the recorded dimension")
        return adapter, meta


def QueryAdapter(config: AdapterConfig):
    """The trainable torch module (imported lazily: searching never loads torch)."""
    import torch
    from torch import nn

    class _QueryAdapter(nn.Module):
        def __init__(self, cfg: AdapterConfig):
            super().__init__()
            self.config = cfg
            self.weight = nn.Parameter(torch.eye(cfg.dim))
            self.bias = nn.Parameter(torch.zeros(cfg.dim))

        def forward(self, q):  # (B, dim) -> (B, dim), unit length
            return nn.functional.normalize(q @ self.weight + self.bias, dim=-1)

        def drift(self):
            """||W - I||^2 + ||b||^2: how far from the identity."""
            eye = torch.eye(self.config.dim, device=self.weight.device)
            return ((self.weight - eye) ** 2).sum() + (self.bias ** 2).sum()

        def to_numpy(self) -> LinearAdapter:
            return LinearAdapter(self.weight.detach().cpu().numpy(), self.bias.detach().cpu().numpy())

    return _QueryAdapter(config)
