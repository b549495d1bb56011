"""Claimed against reproduced: like with like only.

A reproduction is set beside a published number when they agree on the method (the rislib
model that implements it, :data:`~rislib.tables.results.MODEL_TO_METHOD`), the data set, the
REFER partition, the split, the training data (single / combined / zero-shot) and the metric,
by its exact name: an rislib ``mIoU`` is never compared with a published ``oIoU``, nor with
CRIS's ``mIoU*``. Ablation runs are not compared with the papers' full models. The scoring
protocol (network vs original resolution) is recorded on both sides; when they differ the
comparison is still made but flagged, since the two protocols give different numbers
(``docs/data.md#pitfalls``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .published import LAVT_RUN_SPREAD, PublishedResult
from .results import ReproducedResult

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    """One published number beside one reproduced number of the same cell."""

    published: PublishedResult
    reproduced: ReproducedResult

    @property
    def metric(self) -> str:
        return self.published.metric

    @property
    def claimed(self) -> float:
        assert self.published.value is not None
        return self.published.value

    @property
    def value(self) -> float:
        v = self.reproduced.value(self.metric)
        assert v is not None
        return v

    @property
    def delta(self) -> float:
        """Reproduced minus claimed, in points."""
        return self.value - self.claimed

    @property
    def protocol_matches(self) -> bool | None:
        """``None`` when either side does not record its protocol."""
        a, b = self.published.protocol, self.reproduced.protocol
        return None if a is None or b is None else a == b

    @property
    def within_run_spread(self) -> bool:
        """``|delta| <= 0.5``: inside the run-to-run spread LAVT reports for RefCOCO val oIoU."""
        return abs(self.delta) <= LAVT_RUN_SPREAD


def _matches(p: PublishedResult, r: ReproducedResult) -> bool:
    return (
        p.value is not None
        and r.method == p.method
        and not r.ablation
        and p.dataset == r.dataset
        and p.split_by == r.split_by
        and p.split == r.split
        and p.training == r.training
        and r.value(p.metric) is not None
    )


def compare(published: Iterable[PublishedResult], reproduced: Iterable[ReproducedResult]) -> list[Comparison]:
    """Every (published, reproduced) pair of the same cell and metric, in published order."""
    reproduced = list(reproduced)
    return [Comparison(p, r) for p in published for r in reproduced if _matches(p, r)]
