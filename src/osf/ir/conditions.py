"""Relations between input sizes that torch.export assumed while tracing and that no bound or equality of
single dims expresses: a branch on a size's parity, a reshape of rows into pairs, windows that must tile
the image. A rebuilt model runs straight-line code in which the branch is gone, so a size breaking one ran
the graph of the other case (a silently wrong output) or failed deep inside a reshape. Capture keeps them
in ``ir.info["size_conditions"]`` as expressions of a small integer language over the input symbols (ints,
``+ - * // % **``, ``cdiv`` (ceiling division), ``min``, ``max``, comparisons, ``and or not``), which a
rebuilt model checks once per new combination of input sizes, and states as ``torch._check`` while
torch.export traces it, so an exported ``.pt2`` keeps them as guards. Saved text is parsed against that
grammar, never evaluated as arbitrary Python."""
from __future__ import annotations

import ast
from typing import Any, Callable, Iterable

from .errors import FormatError, InputError
from .graph import INPUT, IR, Graph


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


_FUNCTIONS: dict[str, Callable] = {"cdiv": _cdiv, "min": min, "max": max}
_NODES = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd, ast.BinOp,
          ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Mod, ast.Pow, ast.Compare, ast.Eq, ast.NotEq, ast.Lt,
          ast.LtE, ast.Gt, ast.GtE, ast.Call, ast.Name, ast.Load, ast.Constant)
_SEEN_MAX = 4096  # size combinations remembered as checked (sequence lengths vary call by call)

# --- capture: torch.export's guards as text --------------------------------------------------------------

_ADD, _MUL, _NEG, _POW, _ATOM = 1, 2, 3, 4, 5  # operator precedence of the text


class _Unprintable(Exception):
    pass


def from_export(programs: Iterable[Any], symbol_at: dict[tuple[str, int], str]) -> tuple[list[str], list[str]]:
    """The guards torch.export recorded on the input sizes of ``programs`` (``ExportedProgram``s) that
    their symbols' ranges do not imply, as text over osf's symbols (``symbol_at[(input, dim)]``); and,
    as sympy text, those osf cannot write in its language (a float function of a size: none was seen on
    the models tried), which go unchecked."""
    import sympy
    from torch.utils._sympy.value_ranges import bound_sympy
    out: dict[str, None] = {}
    unchecked: list[str] = []
    seen: set = set()
    for ep in programs:
        places, env = _input_symbols(ep)
        names = {s.name: symbol_at[place] for s, place in places.items() if place in symbol_at}
        for guard in env.guards if env is not None else ():
            expr = guard.expr
            if (expr in seen or not isinstance(expr, sympy.Basic) or not expr.free_symbols
                    or any(s.name not in names for s in expr.free_symbols)):
                continue
            seen.add(expr)
            try:
                implied = bound_sympy(expr, env.var_to_range)
                if implied.is_singleton() and bool(implied.lower):
                    continue  # the ranges (checked as bounds) imply it
            except Exception:  # noqa: BLE001 - no bound known: keep the guard
                pass
            try:
                out.setdefault(_text(expr, names)[0])
            except _Unprintable:
                unchecked.append(str(expr))
    return list(out), unchecked


def _input_symbols(ep: Any) -> tuple[dict[Any, tuple[str, int]], Any]:
    """Where each symbol of ``ep``'s user inputs' sizes was first seen (input name, dim), and the shape
    environment that holds them."""
    import torch
    from torch.export.graph_signature import InputKind
    by_name = {n.name: n for n in ep.graph.nodes}
    places: dict[Any, tuple[str, int]] = {}
    env = None
    for spec in ep.graph_signature.input_specs:
        node = by_name.get(getattr(spec.arg, "name", None))
        val = node.meta.get("val") if spec.kind == InputKind.USER_INPUT and node is not None else None
        for d, size in enumerate(val.shape if isinstance(val, torch.Tensor) else ()):
            if isinstance(size, torch.SymInt) and size.node.expr.is_Symbol:
                places.setdefault(size.node.expr, (spec.arg.name, d))
                env = size.node.shape_env
    return places, env


def _text(e: Any, names: dict[str, str]) -> tuple[str, int]:
    """``e`` (a sympy expression of torch's shape language) as text of the condition language, with its
    precedence."""
    import sympy
    from torch.utils._sympy import functions as fn

    def sub(x: Any, level: int) -> str:
        text, own = _text(x, names)
        return f"({text})" if own < level else text

    if isinstance(e, sympy.Integer):
        return str(int(e)), (_ATOM if e >= 0 else _NEG)
    if isinstance(e, sympy.Symbol):
        return names.get(e.name, e.name), _ATOM
    if isinstance(e, sympy.Add):
        terms = sorted(e.args, key=lambda t: t.is_Number)  # sympy's order, the constant last
        text = sub(terms[0], _ADD)
        for t in terms[1:]:
            negative = t.could_extract_minus_sign()
            text += (" - " if negative else " + ") + sub(-t if negative else t, _ADD + 1)
        return text, _ADD
    if isinstance(e, sympy.Mul):
        if e.could_extract_minus_sign():
            return "-" + sub(-e, _POW), _NEG
        factors = e.args  # the number first
        return "*".join(sub(f, _MUL if i == 0 else _NEG) for i, f in enumerate(factors)), _MUL
    if isinstance(e, (sympy.Pow, fn.PowByNatural)) and e.args[1].is_Integer and e.args[1] > 0:
        return f"{sub(e.args[0], _ATOM)}**{int(e.args[1])}", _POW
    if isinstance(e, fn.FloorDiv) or (isinstance(e, fn.FloorToInt) and isinstance(e.args[0], fn.IntTrueDiv)):
        a, b = e.args if isinstance(e, fn.FloorDiv) else e.args[0].args
        return f"{sub(a, _MUL)}//{sub(b, _NEG)}", _MUL
    if isinstance(e, (sympy.Mod, fn.Mod, fn.PythonMod)):
        return f"{sub(e.args[0], _MUL)} % {sub(e.args[1], _NEG)}", _MUL
    if isinstance(e, fn.CeilDiv) or (isinstance(e, fn.CeilToInt) and isinstance(e.args[0], fn.IntTrueDiv)):
        a, b = e.args if isinstance(e, fn.CeilDiv) else e.args[0].args
        return f"cdiv({_text(a, names)[0]}, {_text(b, names)[0]})", _ATOM
    if isinstance(e, (sympy.Min, sympy.Max, fn.Min, fn.Max)):
        name = "min" if isinstance(e, (sympy.Min, fn.Min)) else "max"
        return f"{name}({', '.join(_text(a, names)[0] for a in e.args)})", _ATOM
    if isinstance(e, sympy.core.relational.Relational) and e.rel_op in ("==", "!=", "<", "<=", ">", ">="):
        return f"{_text(e.lhs, names)[0]} {e.rel_op} {_text(e.rhs, names)[0]}", 0
    if isinstance(e, (sympy.And, sympy.Or)):
        word = " and " if isinstance(e, sympy.And) else " or "
        return word.join(f"({_text(a, names)[0]})" for a in e.args), -1
    if isinstance(e, sympy.Not):
        return f"not ({_text(e.args[0], names)[0]})", -1
    raise _Unprintable(type(e).__name__)


def symbol_at(graph: Graph) -> dict[tuple[str, int], str]:
    """The symbol of each input dim that is one: ``{(input, dim): symbol}``."""
    return {(p.name, d): sym for p in graph.placeholders if p.kind == INPUT and isinstance(p.meta, dict)
            for d, sym in enumerate(p.meta.get("sym") or []) if isinstance(sym, str) and sym.isidentifier()}


# --- run time: check them --------------------------------------------------------------------------------

_SIZE_OPS = (ast.Mult, ast.FloorDiv)


def _compiled(text: str) -> tuple[Any, list[Any], list[str]]:
    """``text`` parsed against the condition grammar and compiled; its size terms compiled too (the
    symbols, products, floor and ceiling divisions, minima and maxima in it and the sides of its
    comparisons; not a number, a remainder, or a sum inside, such as ``S - 1`` or a padding
    ``7 - S % 7``); the symbols it reads."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise FormatError(f"size condition {text!r} is not valid: {e.msg}") from None
    sizes = []
    for node in ast.walk(tree):
        bad = not isinstance(node, _NODES)
        if isinstance(node, ast.Constant):
            bad = type(node.value) is not int
        elif isinstance(node, ast.Compare):
            sizes += [side for side in (node.left, *node.comparators) if not isinstance(side, ast.Constant)
                      and not (isinstance(side, ast.BinOp) and isinstance(side.op, ast.Mod))]
        elif isinstance(node, ast.Call):
            bad = not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS and not node.keywords)
            sizes.append(node)
        elif isinstance(node, ast.Name) and node.id not in _FUNCTIONS:
            bad = node.id.startswith("_")
            sizes.append(node)
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                bad = not (isinstance(node.right, ast.Constant) and type(node.right.value) is int
                           and 0 < node.right.value <= 8)
            elif isinstance(node.op, _SIZE_OPS):
                sizes.append(node)
        if bad:
            raise FormatError(f"size condition {text!r} uses {ast.dump(node)[:60]}, which the condition "
                              "language has no place for; the IR file was changed by hand or is corrupt: trace "
                              "the model again")
    sizes = list({id(t): t for t in sizes}.values())
    return (compile(tree, "<osf size condition>", "eval"),
            [compile(ast.Expression(term), "<osf size term>", "eval") for term in sizes],
            sorted({t.id for t in sizes if isinstance(t, ast.Name)}))


def _degenerate(terms: list[Any], namespace: dict, values: dict) -> bool:
    """Whether a size term is 0 or 1 at ``values``: export, which starts every size at 2, never traced
    there, and osf serves such sizes as it serves a batch of 1 (a 16×16 image's 1×1 last ResNet stage
    breaks export's ``(S - 1)//32 + 1 != 1``, yet the graph is right)."""
    for term in terms:
        try:
            if eval(term, namespace, values) in (0, 1):  # noqa: S307 - grammar checked by _compiled
                return True
        except ZeroDivisionError:
            return True
    return False


def of_ir(ir: IR) -> SizeConditions | None:
    """The checks of ``ir``'s size conditions on the flattened inputs of its rebuilt model (None: none)."""
    texts = list(ir.info.get("size_conditions") or [])
    if not texts:
        return None
    leaf_of = {want["placeholder"]: i for i, want in enumerate(ir.info["user_leaves"]) if "placeholder" in want}
    reads: dict[str, tuple[int, int]] = {}
    places: dict[str, str] = {}
    for (name, d), sym in symbol_at(ir.graph).items():
        if sym not in reads and name in leaf_of:
            reads[sym], places[sym] = (leaf_of[name], d), f"'{name}' dim {d}"
    return SizeConditions(texts, reads, places)


class SizeConditions:
    """The size conditions of one IR, read from the flattened inputs: ``reads`` gives, per symbol, the
    input leaf and dim that holds its size (a condition on a symbol no tensor input holds is not checked).
    Each combination of sizes is checked once."""

    __slots__ = ("texts", "reads", "places", "_checks", "_seen")

    def __init__(self, texts: list[str], reads: dict[str, tuple[int, int]], places: dict[str, str]) -> None:
        self.texts, self.reads, self.places = texts, reads, places
        self._checks: list[tuple[Any, list[Any], list[str]]] | None = None  # compiled at the first check
        self._seen: set[tuple[int, ...]] = set()

    def _compile(self) -> list[tuple[Any, list[Any], list[str]]]:
        if self._checks is None:
            checks = [(t, _compiled(t)) for t in self.texts]
            checks = [(t, c) for t, c in checks if set(c[2]) <= self.reads.keys()]
            self.texts, self._checks = [t for t, _ in checks], [c for _, c in checks]
        return self._checks

    def assert_symbolic(self, leaves: list) -> None:
        """While torch.export traces the model (``osf.export``), state each condition with
        ``torch._check`` on the symbolic sizes (or any of its size terms 0 or 1), so the exported program
        holds it as a guard and ``ExportedProgram.module()`` refuses sizes that break it."""
        import sympy
        import torch
        values = {s: leaves[i].shape[d] for s, (i, d) in self.reads.items()}
        namespace = {"__builtins__": {}, "cdiv": _cdiv, "min": torch.sym_min, "max": torch.sym_max}
        for text, (code, terms, _) in zip(self.texts, self._compile()):
            holds = eval(code, namespace, values)  # noqa: S307 - grammar checked by _compiled
            for term in terms:
                size = eval(term, namespace, values)  # noqa: S307
                holds = holds | (size == 0) | (size == 1)
            expr = getattr(getattr(holds, "node", None), "expr", None)
            if expr is not None and expr.func(*expr.args) is sympy.true:  # ``B//(B//4) != 1`` or its term is 1:
                continue  # true at every size; torch._check asserts on a condition that folds to True
            torch._check(holds, lambda text=text: f"input sizes break the condition {text}")

    def check(self, leaves: list) -> None:
        """Raise ``InputError`` when the sizes of ``leaves`` break a condition."""
        sizes = tuple([leaves[i].shape[d] for i, d in self.reads.values()])
        if sizes in self._seen:
            return
        self._compile()
        values = dict(zip(self.reads, sizes))
        namespace = {"__builtins__": {}, **_FUNCTIONS}
        for text, (code, terms, used) in zip(self.texts, self._checks):
            try:
                holds = eval(code, namespace, values)  # noqa: S307 - grammar checked by _compiled
            except ZeroDivisionError:  # a size 0 in a divisor: no data runs there
                continue
            if not holds and not _degenerate(terms, namespace, values):
                listed = ", ".join(f"{self.places[s]} = {values[s]} ({s})" for s in used)
                raise InputError(
                    f"the input sizes ({listed}) break a condition the captured graph relies on: {text}. "
                    "torch.export assumed it while tracing (a branch on a size, a reshape into pairs or "
                    "windows), so these sizes could give a silently wrong output or fail inside the graph; "
                    "call it with sizes that satisfy it, or trace with an example of the size you will run")
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()
        self._seen.add(sizes)
