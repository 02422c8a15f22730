"""What a training run learns from: synthetic questions, and real ones weighted so that they count.

Real questions (history, feedback, imports, the docs' own) are few next to the thousands of
synthetic ones: 28 among 25,664 is 0.1% of the training signal, and as they were weighed
before, they changed nothing. Here the real questions of the training side make up
``real_share`` of what the adapter sees: each is repeated (at most ``max_repeat`` times) and
keeps its own weight within the real share (a strong label, several users agreeing). A page
stays one target: any chunk of it answers (the loss maximises the probability of the set).
"""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import Dataset, Example
from .real_questions import RealQuestion

__all__ = ["RealMix", "add_real"]


@dataclass(frozen=True)
class RealMix:
    real_share: float = 0.3  # share of training examples that are real questions (when there are any)
    max_repeat: int = 200  # copies of one real question at most

    def to_dict(self) -> dict:
        return {"real_share": self.real_share, "max_repeat": self.max_repeat}


def add_real(data: Dataset, real: list[RealQuestion], mix: RealMix = RealMix()) -> dict:
    """Append the real training questions to ``data.train``, repeated to make ``real_share`` of it.
    Returns counts for the run's record."""
    usable = [q for q in real if q.positives]
    if not usable:
        return {"real_train": 0, "real_repeat": 0}
    synthetic = len(data.train)
    if synthetic:
        repeat = round(mix.real_share / (1 - mix.real_share) * synthetic / len(usable))
    else:
        repeat = mix.max_repeat
    repeat = max(1, min(mix.max_repeat, repeat))
    for q in usable:
        example = Example(text=q.text, positives=q.positives, source=f"real:{q.origin}", weight=max(q.weight, 0.1),
                          negatives=tuple(sorted(q.avoid)))
        data.train.extend([example] * repeat)
    return {"real_train": len(usable), "real_repeat": repeat}
