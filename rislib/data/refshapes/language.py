"""RefShapes expressions: the grammar, its meaning on a scene, and the candidates an image admits.

Follows ``docs/refshapes.md`` (spec v1), sections "Expressions" and "Reference types". An expression is
held as a small tree (:class:`Attr`, :class:`Loc`, :class:`Rel`, :class:`Ord`, :class:`Multi`)
that :func:`realise` turns into strings and :func:`parse_expression` reads back; its meaning
on a :class:`Scene` is :func:`evaluate`, which the generator applies to every sentence it
writes (parse the string, evaluate, compare with the intended target) before writing it.

Geometry uses object centres (centroids of the visible masks, in pixel index units) and a
margin ``m = 0.05 * S``:

* location: among the objects the NP matches (2 or more), the referent is the extreme one in
  the direction, at least ``2m`` beyond the runner-up;
* relation ``o REL a``: "left of" ``x_o < x_a - m``, "right of" ``x_o > x_a + m``,
  "above" ``y_o < y_a - m``, "below" ``y_o > y_a + m``;
* ordinal: the NP matches 3 or more objects whose sorted centres are more than ``m`` apart
  (every consecutive gap); the referent is the 2nd or 3rd;
* chain: a relation whose anchor is itself a relation expression.

This project's interpretation where the spec leaves room: in a relation, NP1 must match at
least two objects *other than the anchor* (a stronger form of "NP1 matches 2 or more"), and in
a chain the referent may not be one of its anchors (so "the circle right of the square left
of the red circle" cannot name the red circle itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .render import COLOURS, SHAPES

__all__ = [
    "SIZE_WORDS",
    "DIRECTIONS",
    "RELATIONS",
    "SINGLE_TYPES",
    "GENERALIZED_TYPES",
    "NP",
    "Attr",
    "Loc",
    "Rel",
    "Ord",
    "Multi",
    "Expr",
    "SceneObject",
    "Scene",
    "ExpressionSyntaxError",
    "expression_type",
    "realise",
    "parse_expression",
    "evaluate",
    "popcount",
    "bits",
]

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "big": ("big", "large")}
_SIZE_OF_WORD = {w: s for s, ws in SIZE_WORDS.items() for w in ws}
DIRECTIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
_LOCATION_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
_SUPERLATIVE = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "bottommost"}
_DIRECTION_OF_SUPERLATIVE = {v: k for k, v in _SUPERLATIVE.items()}
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
_ORDINAL_WORDS = {2: "second", 3: "third"}
_ORDINAL_OF_WORD = {v: k for k, v in _ORDINAL_WORDS.items()}
_COUNT_WORDS = {2: "two", 3: "three"}
_COUNT_OF_WORD = {v: k for k, v in _COUNT_WORDS.items()}
SINGLE_TYPES: tuple[str, ...] = ("attribute", "location", "relation", "ordinal", "chain")
GENERALIZED_TYPES: tuple[str, ...] = ("multi", "none")


@dataclass(frozen=True)
class NP:
    """A noun phrase ``[size] [colour] shape-noun``; ``None`` for an attribute left out."""

    size: str | None = None
    colour: str | None = None
    shape: str | None = None

    def __post_init__(self) -> None:
        if self.size is None and self.colour is None and self.shape is None:
            raise ValueError("NP: at least one of size, colour, shape is required")

    @property
    def n_attributes(self) -> int:
        return sum(v is not None for v in (self.size, self.colour, self.shape))

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.size is None or obj.size == self.size)
            and (self.colour is None or obj.colour == self.colour)
            and (self.shape is None or obj.shape == self.shape)
        )

    def variants(self, plural: bool = False) -> list[str]:
        """Every surface form (size synonyms), e.g. ``["small red circle", "little red circle"]``."""
        noun = self.shape if self.shape is not None else "shape"
        noun = noun + "s" if plural else noun
        sizes = SIZE_WORDS[self.size] if self.size is not None else (None,)
        return [" ".join(w for w in (s, self.colour, noun) if w) for s in sizes]


@dataclass(frozen=True)
class Attr:
    """``the NP``: a single-target ``attribute`` expression, or a ``none`` one when nothing matches."""

    np: NP


@dataclass(frozen=True)
class Loc:
    """``the NP on the left`` (``superlative=False``) or ``the leftmost NP`` (``True``)."""

    np: NP
    direction: str
    superlative: bool = False


@dataclass(frozen=True)
class Rel:
    """``the NP REL <anchor>``; a ``chain`` when the anchor is itself a :class:`Rel`."""

    np: NP
    relation: str
    anchor: Union[Attr, Rel]  # noqa: UP007 (a forward reference inside a dataclass)


@dataclass(frozen=True)
class Ord:
    """``the second|third NP from the left|right|top|bottom``."""

    np: NP
    k: int
    direction: str


@dataclass(frozen=True)
class Multi:
    """``all NP-plural`` (``count=None``) or ``the two|three NP-plural``."""

    np: NP
    count: int | None = None


Expr = Union[Attr, Loc, Rel, Ord, Multi]  # noqa: UP007


def expression_type(expr: Expr, *, empty: bool = False) -> str:
    """The spec's type name of an expression (``empty``: an :class:`Attr` that matches nothing)."""
    if isinstance(expr, Attr):
        return "none" if empty else "attribute"
    if isinstance(expr, Loc):
        return "location"
    if isinstance(expr, Rel):
        return "chain" if isinstance(expr.anchor, Rel) else "relation"
    if isinstance(expr, Ord):
        return "ordinal"
    if isinstance(expr, Multi):
        return "multi"
    raise TypeError(f"not an expression: {expr!r}")


def realise(expr: Expr) -> list[str]:
    """All distinct strings of one expression (size synonyms only; the template is fixed by the tree)."""
    if isinstance(expr, Attr):
        return [f"the {v}" for v in expr.np.variants()]
    if isinstance(expr, Loc):
        if expr.superlative:
            return [f"the {_SUPERLATIVE[expr.direction]} {v}" for v in expr.np.variants()]
        return [f"the {v} {_LOCATION_PHRASE[expr.direction]}" for v in expr.np.variants()]
    if isinstance(expr, Rel):
        return [f"the {v} {expr.relation} {a}" for v in expr.np.variants() for a in realise(expr.anchor)]
    if isinstance(expr, Ord):
        return [f"the {_ORDINAL_WORDS[expr.k]} {v} from the {expr.direction}" for v in expr.np.variants()]
    if isinstance(expr, Multi):
        head = "all" if expr.count is None else f"the {_COUNT_WORDS[expr.count]}"
        return [f"{head} {v}" for v in expr.np.variants(plural=True)]
    raise TypeError(f"not an expression: {expr!r}")


class ExpressionSyntaxError(ValueError):
    """A string that is not a RefShapes expression."""


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = text.split(" ")
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            want = repr(expected) if expected else "a word"
            raise ExpressionSyntaxError(f"{self.text!r}: expected {want} at word {self.i + 1}, got {tok!r}")
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.tokens)

    def error(self, what: str) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(f"{self.text!r}: {what} at word {self.i + 1} ({self.peek()!r})")


_PLURAL_SHAPES = {s + "s": s for s in SHAPES}


def _parse_np(r: _Reader, plural: bool) -> NP:
    size = colour = shape = None
    if r.peek() in _SIZE_OF_WORD:
        size = _SIZE_OF_WORD[r.take()]
    if r.peek() in COLOURS:
        colour = r.take()
    noun = r.peek()
    generic = "shapes" if plural else "shape"
    if noun == generic:
        if size is None and colour is None:
            raise r.error(f"'{generic}' needs a size or a colour")
        r.take()
    elif plural and noun in _PLURAL_SHAPES:
        shape = _PLURAL_SHAPES[r.take()]
    elif not plural and noun in SHAPES:
        shape = r.take()
    else:
        raise r.error("expected a shape noun" + (" (plural)" if plural else ""))
    return NP(size, colour, shape)


def _parse_definite(r: _Reader) -> Attr | Rel:
    """``the NP [REL the ...]`` (an anchor, or an attribute / relation / chain expression)."""
    r.take("the")
    np = _parse_np(r, plural=False)
    if r.done():
        return Attr(np)
    for rel in RELATIONS:
        words = rel.split(" ")
        if r.tokens[r.i : r.i + len(words)] == words:
            r.i += len(words)
            return Rel(np, rel, _parse_definite(r))
    raise r.error("expected the end or a relation")


def parse_expression(text: str) -> Expr:
    """Read a RefShapes expression back into its tree; raises :class:`ExpressionSyntaxError`."""
    r = _Reader(text)
    if r.peek() == "all":
        r.take()
        expr: Expr = Multi(_parse_np(r, plural=True))
    elif r.peek() == "the" and r.peek(1) in _COUNT_OF_WORD:
        r.take()
        count = _COUNT_OF_WORD[r.take()]
        expr = Multi(_parse_np(r, plural=True), count)
    elif r.peek() == "the" and r.peek(1) in _ORDINAL_OF_WORD:
        r.take()
        k = _ORDINAL_OF_WORD[r.take()]
        np = _parse_np(r, plural=False)
        r.take("from")
        r.take("the")
        direction = r.take()
        if direction not in DIRECTIONS:
            raise ExpressionSyntaxError(f"{text!r}: unknown direction {direction!r}")
        expr = Ord(np, k, direction)
    elif r.peek() == "the" and r.peek(1) in _DIRECTION_OF_SUPERLATIVE:
        r.take()
        direction = _DIRECTION_OF_SUPERLATIVE[r.take()]
        expr = Loc(_parse_np(r, plural=False), direction, superlative=True)
    else:
        start = r.i
        r.take("the")
        np = _parse_np(r, plural=False)
        rest = " ".join(r.tokens[r.i :])
        loc = [d for d, phrase in _LOCATION_PHRASE.items() if phrase == rest]
        if loc:
            r.i = len(r.tokens)
            expr = Loc(np, loc[0], superlative=False)
        else:
            r.i = start
            expr = _parse_definite(r)
    if not r.done():
        raise r.error("unexpected words after the expression")
    return expr


# ----------------------------------------------------------------------------- meaning


@dataclass(frozen=True)
class SceneObject:
    """What the language sees of an object: attributes and the centre of its visible mask."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float


def popcount(x: int) -> int:
    return bin(x).count("1")


def bits(x: int) -> list[int]:
    """Indices of the set bits of ``x``, ascending."""
    out, i = [], 0
    while x:
        if x & 1:
            out.append(i)
        x >>= 1
        i += 1
    return out


class Scene:
    """The objects of one image, with object sets held as bit masks (bit ``i`` = object ``i``).

    Args:
        objects: the image's objects.
        margin: the spec's ``m`` in pixels (``0.05 * S``).
    """

    def __init__(self, objects: list[SceneObject], margin: float) -> None:
        self.objects = list(objects)
        self.margin = float(margin)
        self._match: dict[NP, int] = {}
        n = len(self.objects)
        self.rel_mask = {
            rel: [sum(1 << o for o in range(n) if self.holds(rel, o, a)) for a in range(n)] for rel in RELATIONS
        }

    @property
    def all_mask(self) -> int:
        return (1 << len(self.objects)) - 1

    def match(self, np: NP) -> int:
        m = self._match.get(np)
        if m is None:
            m = sum(1 << i for i, o in enumerate(self.objects) if np.matches(o))
            self._match[np] = m
        return m

    def holds(self, relation: str, o: int, a: int) -> bool:
        """Is object ``o`` REL object ``a`` by more than the margin?"""
        po, pa, m = self.objects[o], self.objects[a], self.margin
        if relation == "left of":
            return po.cx < pa.cx - m
        if relation == "right of":
            return po.cx > pa.cx + m
        if relation == "above":
            return po.cy < pa.cy - m
        if relation == "below":
            return po.cy > pa.cy + m
        raise ValueError(f"unknown relation {relation!r}")

    def key(self, i: int, direction: str) -> float:
        """Sort key along a direction: the smallest key is the extreme ("leftmost" etc.)."""
        o = self.objects[i]
        return {"left": o.cx, "right": -o.cx, "top": o.cy, "bottom": -o.cy}[direction]

    def noun_phrases(self) -> list[NP]:
        """Every NP that matches at least one object, in a fixed order."""
        out: dict[NP, None] = {}
        for o in self.objects:
            for size in (o.size, None):
                for colour in (o.colour, None):
                    for shape in (o.shape, None):
                        if size is None and colour is None and shape is None:
                            continue
                        out[NP(size, colour, shape)] = None
        return sorted(out, key=lambda p: (p.n_attributes, str(p.size), str(p.colour), str(p.shape)))


def _anchors(expr: Attr | Rel, scene: Scene) -> int:
    """Bit mask of every object an expression's anchors denote (for the chain rule)."""
    if isinstance(expr, Attr):
        return 0
    a = evaluate(expr.anchor, scene)
    return (a or 0) | _anchors(expr.anchor, scene)


def evaluate(expr: Expr, scene: Scene) -> int | None:
    """The set of objects an expression denotes, as a bit mask; ``None`` when it is not
    well formed on this scene (an ambiguous anchor, too few NP matches, margins not met...).

    ``Attr`` returns every match (a single target needs exactly one, ``none`` needs zero);
    ``Multi`` returns all matches (2 or more, with the exact count when one is said).
    """
    m = scene.margin
    if isinstance(expr, Attr):
        return scene.match(expr.np)
    if isinstance(expr, Multi):
        s = scene.match(expr.np)
        n = popcount(s)
        if n < 2 or (expr.count is not None and n != expr.count):
            return None
        return s
    if isinstance(expr, Loc):
        members = sorted(bits(scene.match(expr.np)), key=lambda i: scene.key(i, expr.direction))
        if len(members) < 2:
            return None
        k0, k1 = scene.key(members[0], expr.direction), scene.key(members[1], expr.direction)
        return 1 << members[0] if k1 - k0 >= 2 * m else None
    if isinstance(expr, Ord):
        members = sorted(bits(scene.match(expr.np)), key=lambda i: scene.key(i, expr.direction))
        if len(members) < 3 or len(members) < expr.k:
            return None
        keys = [scene.key(i, expr.direction) for i in members]
        if any(b - a <= m for a, b in zip(keys, keys[1:])):
            return None
        return 1 << members[expr.k - 1]
    if isinstance(expr, Rel):
        a = evaluate(expr.anchor, scene)
        if a is None or popcount(a) != 1:
            return None
        ai = bits(a)[0]
        s1 = scene.match(expr.np)
        if popcount(s1 & ~a) < 2:
            return None
        hits = sum(1 << o for o in bits(s1) if scene.holds(expr.relation, o, ai))
        if popcount(hits) != 1 or hits & _anchors(expr, scene):
            return None
        return hits
    raise TypeError(f"not an expression: {expr!r}")
