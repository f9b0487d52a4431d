"""Dimension symbols and their unification.

Every tensor dimension of the graph is an expression over *atoms* (union-find symbols):

- an atom ``int`` — a dimension whose indices are one coherent axis (e.g. the output channels of a conv);
- ``Prod(f1, …, fn)`` — a row-major product: index = ((i1 · |f2| + i2) · |f3| + i3) …
  (``C = heads × head_dim`` after a ``view``, ``groups × channels_per_group`` in a grouped conv);
- ``Cat(e1, …, en)`` — a concatenation: segment k starts at offset |e1| + … + |e(k-1)|.

Unifying two expressions says "these two dims index the same channels in the same order". Atoms merge;
an atom unified with a composite is *bound* to it; two composites are refined to a common factorisation
(the same algorithm serves ``view``) or, when no common one exists, blocked. Sizes are monomials
(an int times symbols such as ``B``; any other expression export writes, e.g. a height after a strided
conv, is one symbol), so dynamic batch, sequence and spatial dims factorise like static ones.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from ..ir.graph import OpNode

# ------------------------------------------------------------------------------------------------
# sizes: monomials  coef * s1 * s2 * …  (symbols sorted)

Size = tuple[int, tuple[str, ...]]
ONE: Size = (1, ())


def size_of(value: int, sym: str | None) -> Size:
    """A dim's size from the IR's value metadata (``shape[i]`` and ``sym[i]``). The symbolic text is
    split into its top-level product factors: numbers, symbols (``B``, ``S``), powers of them, and any
    other expression (``((S - 1)//8) + 1``, ``CeilToInt(…)``), which counts as one symbol of its own
    (parenthesised, spaces removed), so ``64*B*CeilToInt(…)`` still factors as 64 channels times the
    rest. Expressions equal in value but written differently stay distinct: dims they relate are
    blocked, never wrongly matched."""
    if not sym:
        return (int(value), ())
    coef, syms = 1, []
    pending = [sym.replace(" ", "")]
    while pending:
        part = _unwrapped(pending.pop())
        factors = _top_level_factors(part)
        if len(factors) > 1:
            pending.extend(factors)
        elif part.isdigit():
            coef *= int(part)
        elif re.fullmatch(r"[A-Za-z_]\w*", part):
            syms.append(part)
        elif (power := re.fullmatch(r"(\w+|\(.*\))\*\*(\d+)", part)) and (
                not power.group(1).startswith("(") or _closes_at_end(power.group(1))):
            pending.extend([power.group(1)] * int(power.group(2)))
        else:
            syms.append(f"({part})")
    return (coef, tuple(sorted(syms)))


def _top_level_factors(text: str) -> list[str]:
    """``text`` split at its ``*`` outside parentheses (not at ``**``, a power)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c == "*" and text.startswith("**", i):
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "*" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    return parts + [text[start:]]


def _unwrapped(text: str) -> str:
    """``text`` without parentheses around the whole of it."""
    while text.startswith("(") and _closes_at_end(text):
        text = text[1:-1]
    return text


def _closes_at_end(text: str) -> bool:
    """Whether the parenthesis opening ``text`` closes at its last character."""
    depth = 0
    for i, c in enumerate(text):
        depth += (c == "(") - (c == ")")
        if depth == 0:
            return i == len(text) - 1
    return False


def size_mul(a: Size, b: Size) -> Size:
    return (a[0] * b[0], tuple(sorted(a[1] + b[1])))


def size_div(a: Size, b: Size) -> Size | None:
    """a / b when b divides a exactly, else None."""
    if b[0] == 0 or a[0] % b[0]:
        return None
    rest = list(a[1])
    for s in b[1]:
        if s not in rest:
            return None
        rest.remove(s)
    return (a[0] // b[0], tuple(rest))


def size_text(s: Size) -> str:
    parts = ([str(s[0])] if s[0] != 1 or not s[1] else []) + list(s[1])
    return "*".join(parts)


def is_static(s: Size) -> bool:
    return not s[1]


# ------------------------------------------------------------------------------------------------
# expressions

@dataclass(frozen=True)
class Prod:
    factors: tuple  # of expressions, row-major (first = outermost)


@dataclass(frozen=True)
class Cat:
    parts: tuple  # of expressions, in order


Expr = "int | Prod | Cat"


@dataclass(frozen=True)
class Measured:
    """The value of a ``sym_size`` op: the size of tensor dim ``dim``, read at run time (so a size argument
    that passes it on follows that dim when a subnet shrinks it)."""
    dim: Any


def value_dims(v: Any) -> list:
    """The dim expressions of an analysis value: a tensor's list, every item of a list-valued op
    (``{"list": [[expr], …]}``), the dim a ``Measured`` size reads; none for None."""
    if v is None:
        return []
    if isinstance(v, Measured):
        return [v.dim]
    if isinstance(v, dict):
        return [e for item in v["list"] for e in (item or [])]
    return list(v)


def atoms_in(e) -> list[int]:
    if isinstance(e, int):
        return [e]
    items = e.factors if isinstance(e, Prod) else e.parts
    return [a for x in items for a in atoms_in(x)]


class Dims:
    """Union-find over dimension atoms, with bindings to composite expressions."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.sizes: list[Size] = []
        self.bound: dict[int, object] = {}
        self.blocks: list[tuple[object, str]] = []  # (expr, reason), applied by ``blocked()``
        self.origin: list[str] = []  # why the atom exists: "param", "input", "split", "derived", …

    # ----- atoms -----
    def atom(self, size: Size, origin: str) -> int:
        self.parent.append(len(self.parent))
        self.sizes.append(size)
        self.origin.append(origin)
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    # ----- expressions -----
    def resolve(self, e):
        """The canonical form: atoms are roots, bound atoms replaced, nested products/concats flattened,
        size-1 factors dropped."""
        if isinstance(e, int):
            r = self.find(e)
            return self.resolve(self.bound[r]) if r in self.bound else r
        if isinstance(e, Prod):
            flat = []
            for f in e.factors:
                f = self.resolve(f)
                flat.extend(f.factors if isinstance(f, Prod) else [f])
            kept = [f for f in flat if self.size(f) != ONE] or flat[:1]
            return kept[0] if len(kept) == 1 else Prod(tuple(kept))
        flat = []
        for p in e.parts:
            p = self.resolve(p)
            flat.extend(p.parts if isinstance(p, Cat) else [p])
        return flat[0] if len(flat) == 1 else Cat(tuple(flat))

    def size(self, e) -> Size:
        if isinstance(e, int):
            return self.sizes[self.find(e)]
        if isinstance(e, Prod):
            out = ONE
            for f in e.factors:
                out = size_mul(out, self.size(f))
            return out
        total = 0
        for p in e.parts:
            s = self.size(p)
            if not is_static(s):
                raise ValueError("symbolic concatenation")
            total += s[0]
        return (total, ())

    def block(self, e, reason: str) -> None:
        self.blocks.append((e, reason))

    def blocked(self) -> dict[int, list[str]]:
        """Root atom -> reasons it must keep its size."""
        out: dict[int, list[str]] = {}
        for e, reason in self.blocks:
            for a in atoms_in(self.resolve(e)):
                reasons = out.setdefault(self.find(a), [])
                if reason not in reasons:
                    reasons.append(reason)
        return out

    # ----- unification -----
    def unify(self, a, b, where: str) -> None:
        ra, rb = self.resolve(a), self.resolve(b)
        if ra == rb:
            return
        if self.size(ra) != self.size(rb):
            if isinstance(ra, Prod) and isinstance(rb, Prod):  # a reshape whose totals the size algebra
                self._pair_ends(list(ra.factors), list(rb.factors), where)  # cannot equate (``B//4``)
                return
            self.block(ra, f"size mismatch at {where}")
            self.block(rb, f"size mismatch at {where}")
            return
        if isinstance(ra, int) and isinstance(rb, int):
            self.parent[rb] = ra
            return
        if isinstance(rb, int):
            ra, rb = rb, ra
        if isinstance(ra, int):  # atom vs composite
            if ra in atoms_in(rb):
                self.block(rb, f"cyclic factorisation at {where}")
                return
            self.bound[ra] = rb
            return
        if isinstance(ra, Prod) and isinstance(rb, Prod):
            self._refine(list(ra.factors), list(rb.factors), where, product=True)
        elif isinstance(ra, Cat) and isinstance(rb, Cat):
            self._refine(list(ra.parts), list(rb.parts), where, product=False)
        else:
            self.block(ra, f"incompatible layouts (concatenation vs product) at {where}")
            self.block(rb, f"incompatible layouts (concatenation vs product) at {where}")

    def _refine(self, xs: list, ys: list, where: str, *, product: bool) -> None:
        """Unify two factor (or segment) lists with equal total, splitting atoms where one side's
        boundary falls inside the other's element. Trailing elements of equal size pair up first (with
        equal totals their indices coincide, whatever lies before them: ``(B·T, C)`` viewed as
        ``(B, T, C)`` keeps C even where B·T cannot be refined); where no common refinement exists, the
        elements not yet paired are blocked."""
        xs, ys = list(xs), list(ys)
        while len(xs) > 1 and len(ys) > 1 and self.size(xs[-1]) == self.size(ys[-1]):
            self.unify(xs.pop(), ys.pop(), where)
        i = j = 0
        while i < len(xs) and j < len(ys):
            x, y = self.resolve(xs[i]), self.resolve(ys[j])
            sx, sy = self.size(x), self.size(y)
            if sx == sy:
                self.unify(x, y, where)
                i, j = i + 1, j + 1
                continue
            big, small, big_list, k = (x, y, xs, i) if self._larger(sx, sy, product) else (y, x, ys, j)
            if product and isinstance(big, Cat) and self._stack(big_list, k, big, where):
                continue
            rest = self._remainder(self.size(big), self.size(small), product)
            if rest is None or not isinstance(big, int):
                for e in xs[i:] + ys[j:]:
                    self.block(e, f"no common factorisation of {self._text(xs[i:], product)} and "
                                  f"{self._text(ys[j:], product)} at {where}")
                return
            head = self.atom(self.size(small), "split")
            tail = self.atom(rest, "split")
            self.bound[self.find(big)] = Prod((head, tail)) if product else Cat((head, tail))
            big_list[k:k + 1] = [head, tail]

    def _stack(self, items: list, k: int, cat: Cat, where: str) -> bool:
        """Read ``items[k]``, a concatenation of n equal-size segments, as the product (n, segment) when
        a reshape splits it (BEiT's and EVA's ``torch.cat((q_bias, k_bias, v_bias))`` viewed as
        ``(3, heads, head_dim)``): the segments are unified, since one position of the segment dim indexes
        all of them (q, k and v keep the same heads), and n is a fixed dim of its own. False when the
        segments differ in size."""
        if len({self.size(part) for part in cat.parts}) != 1:
            return False
        for part in cat.parts[1:]:
            self.unify(cat.parts[0], part, where)
        n = self.atom((len(cat.parts), ()), "split")
        self.block(n, f"concatenated segments reshaped into a dim of their own at {where}")
        items[k:k + 1] = [n, cat.parts[0]]
        return True

    def _pair_ends(self, xs: list, ys: list, where: str) -> None:
        """Two factorisations of the same elements whose totals differ symbolically: factors of equal size
        at either end pair up (as in ``_refine``), the ones between them are blocked."""
        while xs and ys and self.size(xs[-1]) == self.size(ys[-1]):
            self.unify(xs.pop(), ys.pop(), where)
        while xs and ys and self.size(xs[0]) == self.size(ys[0]):
            self.unify(xs.pop(0), ys.pop(0), where)
        for e in xs + ys:
            self.block(e, f"size mismatch at {where}")

    def _larger(self, a: Size, b: Size, product: bool) -> bool:
        if product:
            return size_div(a, b) is not None
        return is_static(a) and is_static(b) and a[0] > b[0]

    def _remainder(self, big: Size, small: Size, product: bool) -> Size | None:
        if product:
            return size_div(big, small)
        if not (is_static(big) and is_static(small)):
            return None
        return (big[0] - small[0], ())

    def _text(self, items: list, product: bool) -> str:
        sep = "×" if product else "+"
        return sep.join(size_text(self.size(e)) for e in items)

    # ----- index maps -----
    def positions(self, e, select: dict[int, torch.Tensor]) -> torch.Tensor:
        """Old positions of ``e``'s elements, in new order, when each atom in ``select`` keeps (or
        reorders) the listed indices; other atoms keep all indices. ``e`` must be resolved and static."""
        if isinstance(e, int):
            return select[e] if e in select else torch.arange(self.size(e)[0])
        if isinstance(e, Prod):
            out = torch.zeros(1, dtype=torch.long)
            for f in e.factors:
                out = out[:, None] * self.size(f)[0] + self.positions(f, select)[None, :]
                out = out.reshape(-1)
            return out
        chunks, offset = [], 0
        for p in e.parts:
            chunks.append(self.positions(p, select) + offset)
            offset += self.size(p)[0]
        return torch.cat(chunks)

    def coords(self, e) -> dict[int, torch.Tensor]:
        """For each atom of (resolved, static) ``e``: its index at every position of ``e`` (-1 where the
        position lies in a concatenation segment without that atom)."""
        n = self.size(e)[0]
        if isinstance(e, int):
            return {e: torch.arange(n)}
        out: dict[int, torch.Tensor] = {}
        if isinstance(e, Prod):
            inner = n
            for f in e.factors:
                fs = self.size(f)[0]
                inner //= fs
                outer = n // (fs * inner)
                for a, idx in self.coords(f).items():
                    full = idx.repeat_interleave(inner).repeat(outer)
                    out[a] = torch.where(out[a] >= 0, out[a], full) if a in out else full
            return out
        offset = 0
        for p in e.parts:
            ps = self.size(p)[0]
            for a, idx in self.coords(p).items():
                col = out.setdefault(a, torch.full((n,), -1, dtype=torch.long))
                col[offset:offset + ps] = idx
            offset += ps
        return out


def new_size(dims: Dims, e, kept: dict[int, int]) -> Size:
    """Size of resolved ``e`` when atom ``a`` keeps ``kept[a]`` indices (others keep all)."""
    if isinstance(e, int):
        return (kept[e], ()) if e in kept else dims.size(e)
    if isinstance(e, Prod):
        out = ONE
        for f in e.factors:
            out = size_mul(out, new_size(dims, f, kept))
        return out
    return (sum(new_size(dims, p, kept)[0] for p in e.parts), ())


def slice_bounds(op: OpNode, n: int) -> tuple[int, int] | None:
    """``(start, end)`` that a ``slice.Tensor`` (step 1) or ``narrow`` op with constant bounds takes of a dim
    of static size ``n`` (Python's clipping rules), or None (symbolic bounds, a step)."""
    def at(i: int, name: str, default: Any) -> Any:
        return op.args[i] if i < len(op.args) else op.kwargs.get(name, default)

    if op.target == "aten.narrow.default":
        start, length = at(2, "start", None), at(3, "length", None)
        if not (isinstance(start, int) and isinstance(length, int)):
            return None
        start += n if start < 0 else 0
        return start, start + length
    start, end, step = at(2, "start", None), at(3, "end", None), at(4, "step", 1)
    if step != 1 or not all(v is None or isinstance(v, int) for v in (start, end)):
        return None
    start, end = (0 if start is None else start), (n if end is None else end)
    start, end = (min(max(v + n if v < 0 else v, 0), n) for v in (start, end))
    return start, max(start, end)
