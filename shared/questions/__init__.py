"""Synthetic questions for training deep memory: offline from structure, or from an LLM."""

from __future__ import annotations

from ..settings import Settings
from ..store import Store
from .cache import QuestionCache
from .offline import OFFLINE_VERSION, GeneratedQuestion, generate_offline, offline_cache_key
from .style import StyleExamples, choose_examples

__all__ = ["GeneratedQuestion", "synthetic_questions", "resolve_generator", "StyleExamples", "choose_examples"]


def resolve_generator(name: str, settings: Settings) -> str:
    if name == "auto":
        return "llm" if settings.llm_configured else "offline"
    if name not in ("offline", "llm", "none"):
        raise ValueError(f"unknown generator {name!r} (auto, offline, llm or none)")
    return name


def synthetic_questions(store: Store, settings: Settings, generator: str, progress: bool = True,
                        style: StyleExamples | None = None) -> tuple[list[GeneratedQuestion], dict]:
    """Questions from the cache, generating only what is missing. Returns (questions, info). ``style``:
    real training questions the LLM generator shows as examples of how people ask (the offline one ignores it)."""
    if generator == "none":
        return [], {"generator": "none"}
    if generator == "llm":
        from .llm import generate_llm

        questions, stats = generate_llm(store, settings, progress=progress, style=style)
        return questions, {"generator": f"llm:{settings.question_model}", **stats.__dict__}
    cache = QuestionCache(store)
    key = offline_cache_key(store)
    hit = cache.get_many([key]).get(key)
    if hit is not None:
        questions = [GeneratedQuestion(q["text"], tuple(q["positives"]), q["style"], q["origin"]) for q in hit]
        return questions, {"generator": OFFLINE_VERSION, "cached": True, "questions": len(questions)}
    questions = generate_offline(store)
    cache.replace(OFFLINE_VERSION, key, [q.to_dict() for q in questions])
    return questions, {"generator": OFFLINE_VERSION, "cached": False, "questions": len(questions)}
