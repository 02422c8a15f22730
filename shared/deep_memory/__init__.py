"""Deep memory: a small adapter on the query embedding, trained on questions, gated on held-out data."""

from .adapter import AdapterConfig, LinearAdapter, QueryAdapter
from .versions import AdapterError, AdapterRegistry

__all__ = ["AdapterConfig", "LinearAdapter", "QueryAdapter", "AdapterRegistry", "AdapterError"]
