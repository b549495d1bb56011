"""Which expressions an image admits, and which references it keeps.

Given a :class:`~rislib.data.refshapes_language.Scene`, this module lists for every object
the expressions of each type that single it out (``docs/refshapes.md#reference-types``), the
multi-target and no-target expressions of the generalized variant, and chooses at most
``max_refs`` references per image, balanced across the types it admits.

A *candidate* is a tuple of expression trees that mean the same thing and differ only in
template (``the NP on the left`` / ``the leftmost NP``; ``all NPs`` / ``the two NPs``);
a reference's 1-3 sentences are distinct strings drawn from its candidate's templates and
size synonyms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .language import (
    DIRECTIONS,
    NP,
    RELATIONS,
    Attr,
    Expr,
    Loc,
    Multi,
    Ord,
    Rel,
    Scene,
    bits,
    evaluate,
    popcount,
    realise,
)

__all__ = [
    "Candidate",
    "single_candidates",
    "multi_candidates",
    "none_candidates",
    "select_references",
    "sample_sentences",
]

Candidate = tuple[Expr, ...]


def _subsets(scene: Scene, i: int) -> list[NP]:
    o = scene.objects[i]
    out = []
    for size in (o.size, None):
        for colour in (o.colour, None):
            for shape in (o.shape, None):
                if size is not None or colour is not None or shape is not None:
                    out.append(NP(size, colour, shape))
    return out


def single_candidates(
    scene: Scene, types: Iterable[str], referents: int, rng: np.random.Generator
) -> dict[str, dict[int, list[Candidate]]]:
    """For each type, ``{object index: [candidates]}`` of the expressions that pick out exactly it.

    Args:
        scene: the image's objects.
        types: which single-target types to list.
        referents: bit mask of the objects that may be referents (testC: held-out pairs only).
        rng: draws the inner relation of each chain (one per outer NP, relation and anchor).

    Length: one function on purpose: the loops over types, objects and anchors draw from
    ``rng`` in a fixed order that the data set's byte-identity (spec v1) depends on.
    """
    types = set(types)
    out: dict[str, dict[int, list[Candidate]]] = {t: {} for t in types}
    nps = scene.noun_phrases()
    n = len(scene.objects)

    def add(t: str, r: int, cand: Candidate) -> None:
        if referents >> r & 1:
            out[t].setdefault(r, []).append(cand)

    if "attribute" in types:
        for r in range(n):
            unique = [np_ for np_ in _subsets(scene, r) if scene.match(np_) == 1 << r]
            if unique:
                fewest = min(p.n_attributes for p in unique)
                for p in unique:
                    if p.n_attributes == fewest:
                        add("attribute", r, (Attr(p),))
    if "location" in types:
        for p in nps:
            if popcount(scene.match(p)) < 2:
                continue
            for d in DIRECTIONS:
                hit = evaluate(Loc(p, d), scene)
                if hit is not None:
                    add("location", bits(hit)[0], (Loc(p, d, False), Loc(p, d, True)))
    if "ordinal" in types:
        for p in nps:
            if popcount(scene.match(p)) < 3:
                continue
            for d in DIRECTIONS:
                for k in (2, 3):
                    hit = evaluate(Ord(p, k, d), scene)
                    if hit is not None:
                        add("ordinal", bits(hit)[0], (Ord(p, k, d),))
    if "relation" in types or "chain" in types:
        # relation: anchor = an NP matching exactly one object; NP1 matches >= 2 others.
        match = {p: scene.match(p) for p in nps}
        relations: dict[int, list[tuple[Rel, int]]] = {}  # referent -> [(expr, anchor index)]
        anchors = [(bits(m)[0], p) for p, m in match.items() if m.bit_count() == 1]
        for a, p2 in anchors:
            abit = 1 << a
            for p1, m1 in match.items():
                if (m1 & ~abit).bit_count() < 2:
                    continue
                for rel in RELATIONS:
                    hit = m1 & scene.rel_mask[rel][a]
                    if hit.bit_count() == 1:
                        relations.setdefault(hit.bit_length() - 1, []).append((Rel(p1, rel, Attr(p2)), a))
        if "relation" in types:
            for r, lst in relations.items():
                for expr, _ in lst:
                    add("relation", r, (expr,))
        if "chain" in types:
            # the NP1 REL1 [a relation expression naming a2]: NP1 matches >= 2 objects besides a2,
            # exactly one of them is REL1 a2, and it is neither a2 nor a2's anchor. One inner
            # expression is drawn per (NP1, REL1, a2), which keeps the list short.
            for a2 in sorted(relations):
                inner = relations[a2]
                bit2 = 1 << a2
                for p1, m1 in match.items():
                    if (m1 & ~bit2).bit_count() < 2:
                        continue
                    for rel in RELATIONS:
                        hit = m1 & scene.rel_mask[rel][a2]
                        if hit.bit_count() != 1:
                            continue
                        r = hit.bit_length() - 1
                        valid = [expr for expr, a3 in inner if a3 != r]
                        if valid and referents >> r & 1:
                            add("chain", r, (Rel(p1, rel, valid[int(rng.integers(len(valid)))]),))
    return out


def multi_candidates(scene: Scene, allowed_targets: int) -> dict[int, list[Candidate]]:
    """``{target bit mask: [candidates]}`` for ``all NPs`` / ``the two|three NPs`` (2+ targets).

    Args:
        allowed_targets: bit mask of objects a target set may contain (testC: held-out pairs).
    """
    out: dict[int, list[Candidate]] = {}
    for p in scene.noun_phrases():
        s = scene.match(p)
        n = popcount(s)
        if n < 2 or s & ~allowed_targets:
            continue
        cand: Candidate = (Multi(p),) + ((Multi(p, n),) if n in (2, 3) else ())
        out.setdefault(s, []).append(cand)
    return out


def none_candidates(scene: Scene, pairs: Sequence[tuple[str, str]]) -> tuple[list[Candidate], list[Candidate]]:
    """``the NP`` for (colour, shape) pairs that match no object.

    Returns:
        ``(near_misses, others)``: near misses use a colour and a shape that are both in the
        image (just not together), the hard negatives; others are the remaining absent pairs.
    """
    colours = {o.colour for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    near, other = [], []
    for colour, shape in pairs:
        p = NP(None, colour, shape)
        if scene.match(p):
            continue
        (near if colour in colours and shape in shapes else other).append((Attr(p),))
    return near, other


def select_references(
    rng: np.random.Generator,
    candidates: dict[str, dict[int, list[Candidate]]],
    types: Sequence[str],
    max_refs: int,
    forced: int | None = None,
) -> list[tuple[int, str]] | None:
    """Choose up to ``max_refs`` distinct referents, balancing the types the image admits.

    Types are visited round-robin (least used first, ties in a random order); each visit
    takes a random not-yet-chosen object that admits the type.

    Args:
        forced: an object that must be among the referents (the salient-distractor case).

    Returns:
        ``[(object index, type), ...]``, or ``None`` when ``forced`` admits no allowed type.
    """
    order = [types[i] for i in rng.permutation(len(types))]
    admits = {t: sorted(candidates.get(t, {})) for t in order}
    chosen: dict[int, str] = {}
    used = {t: 0 for t in order}
    if forced is not None:
        options = [t for t in order if forced in admits[t]]
        if not options:
            return None
        t = options[int(rng.integers(len(options)))]
        chosen[forced] = t
        used[t] += 1
    while len(chosen) < max_refs:
        progress = False
        for t in sorted(order, key=lambda t: used[t]):  # stable: ties keep the random order
            free = [r for r in admits[t] if r not in chosen]
            if not free:
                continue
            chosen[free[int(rng.integers(len(free)))]] = t
            used[t] += 1
            progress = True
            break
        if not progress:
            break
    return list(chosen.items())


def sample_sentences(rng: np.random.Generator, candidate: Candidate, max_sentences: int = 3) -> list[str]:
    """1 to ``max_sentences`` distinct strings of one candidate (templates x size synonyms)."""
    variants = list(dict.fromkeys(s for e in candidate for s in realise(e)))
    k = min(int(rng.integers(1, max_sentences + 1)), len(variants))
    return [variants[i] for i in rng.choice(len(variants), size=k, replace=False)]
