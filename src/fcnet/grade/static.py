"""Q1c's static half: find Python loops over samples, units or classes in a
submission's ``loss`` and in what it calls.

A loop is flagged when what it iterates over depends on the data or on array
sizes: the method's array arguments and anything computed from them, ``.shape``,
``.size``, ``len(...)``, an element of a container (``params['W1']``) or an
attribute named like a size (``self.hidden_size``, ``self.num_classes``).  Loops
over a literal list, over ``params`` itself (``.items()``, ``.keys()``,
``.values()``) or over ``range`` of constants and layer counts are allowed:
they run a fixed, tiny number of times.  ``np.vectorize``,
``np.apply_along_axis`` and ``map`` over data count as loops too.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import dataclass
from pathlib import Path

_WRAPPERS = {"zip", "enumerate", "reversed", "sorted", "list", "tuple"}
_DICT_VIEWS = {"items", "keys", "values"}
_HIDDEN_LOOPS = {"vectorize", "apply_along_axis", "frompyfunc"}
_SIZE_WORDS = ("size", "shape", "class", "dim", "num_")


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    code: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} `{self.code}`"


def _is_size_attr(attr: str) -> bool:
    a = attr.lower()
    return any(w in a for w in _SIZE_WORDS) and "layer" not in a


class _Taint:
    """Which names in one function carry data or sizes."""

    def __init__(self, fn: ast.FunctionDef, is_method: bool):
        args = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
        if is_method and args:
            args = args[1:]
        if fn.args.vararg:
            args.append(fn.args.vararg.arg)
        self.names = set(args)
        assigns = [n for n in ast.walk(fn) if isinstance(n, ast.Assign | ast.AugAssign | ast.AnnAssign)]
        for _ in range(6):  # to a fixed point, whatever the order of the assignments
            before = len(self.names)
            for n in assigns:
                targets = n.targets if isinstance(n, ast.Assign) else [n.target]
                for t in targets:
                    for target, value in _pairs(t, n.value):
                        if value is not None and self.tainted(value):
                            self.names |= {x.id for x in ast.walk(target) if isinstance(x, ast.Name)}
            if len(self.names) == before:
                break

    def tainted(self, expr: ast.AST) -> bool:
        for n in ast.walk(expr):
            if isinstance(n, ast.Name) and n.id in self.names:
                return True
            if isinstance(n, ast.Attribute) and _is_size_attr(n.attr):
                return True
            if isinstance(n, ast.Subscript):
                return True
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "len":
                return True
        return False

    def allowed(self, it: ast.AST) -> bool:
        """Whether iterating over ``it`` runs a fixed number of times."""
        if isinstance(it, ast.Tuple | ast.List | ast.Set | ast.Dict | ast.Constant):
            return True
        if isinstance(it, ast.Call):
            f = it.func
            if isinstance(f, ast.Name) and f.id in _WRAPPERS:
                return all(self.allowed(a) for a in it.args)
            if isinstance(f, ast.Name) and f.id == "range":
                return not any(self.tainted(a) for a in it.args)
            if isinstance(f, ast.Attribute) and f.attr in _DICT_VIEWS:
                return not self.tainted(f.value)
        return not self.tainted(it)


def _pairs(target: ast.AST, value: ast.AST | None) -> list[tuple[ast.AST, ast.AST | None]]:
    """``a, b = x, y`` pairs up element by element; anything else is one pair."""
    seq = ast.Tuple | ast.List
    if isinstance(target, seq) and isinstance(value, seq) and len(target.elts) == len(value.elts):
        return list(zip(target.elts, value.elts))
    return [(target, value)]


def _parse(func) -> tuple[ast.FunctionDef, str, int, list[str]] | None:
    """(def node, file name, line offset, source lines) of a Python function."""
    try:
        lines, first = inspect.getsourcelines(func)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        file = inspect.getsourcefile(func) or "?"
    except (OSError, TypeError, SyntaxError, RecursionError, MemoryError):
        return None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    return node, file, first - 1, lines


def _code(lines: list[str], lineno: int) -> str:
    text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
    return text if len(text) <= 80 else text[:77] + "..."


def find_loops(cls: type, roots: list[Path] | None = None, method: str = "loss") -> list[Finding]:
    """Loops over data in ``cls.<method>`` and in the functions it calls that live
    under ``roots`` (default: the folder of the file defining the method), followed
    through ``self.other(...)``, ``helper(...)`` and ``module.helper(...)``."""
    start = inspect.getattr_static(cls, method, None)
    if isinstance(start, staticmethod | classmethod):
        start = start.__func__
    if not inspect.isfunction(start):
        return []
    base = inspect.getsourcefile(start)
    own = [Path(r).resolve() for r in (roots or ([Path(base).parent] if base else []))]
    findings: list[Finding] = []
    seen: set = set()
    todo: list[tuple[object, bool]] = [(start, True)]
    while todo:
        func, is_method = todo.pop()
        if func.__code__ in seen:
            continue
        seen.add(func.__code__)
        parsed = _parse(func)
        if parsed is None:
            continue
        fn, file, offset, lines = parsed
        name = Path(file).name
        taint = _Taint(fn, is_method)
        for n in ast.walk(fn):
            bad = None
            if isinstance(n, ast.For | ast.AsyncFor) and not taint.allowed(n.iter):
                bad = n
            elif isinstance(n, ast.comprehension) and not taint.allowed(n.iter):
                bad = n.iter
            elif isinstance(n, ast.While) and taint.tainted(n.test):
                bad = n
            elif isinstance(n, ast.Call):
                f = n.func
                if isinstance(f, ast.Attribute) and f.attr in _HIDDEN_LOOPS:
                    bad = n
                elif isinstance(f, ast.Name) and f.id == "map" and any(taint.tainted(a) for a in n.args):
                    bad = n
                else:
                    callee = _resolve(f, func, cls)
                    if callee is not None and _is_own(callee[0], own):
                        todo.append(callee)
            if bad is not None:
                findings.append(Finding(name, offset + bad.lineno, _code(lines, bad.lineno)))
    return sorted(set(findings), key=lambda f: (f.file, f.line))


def _resolve(f: ast.AST, func, cls: type):
    """The Python function a call expression names, and whether it is a method."""
    g = getattr(func, "__globals__", {})
    obj, is_method = None, False
    if isinstance(f, ast.Name):
        obj = g.get(f.id)
    elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        if f.value.id == "self":
            obj = inspect.getattr_static(cls, f.attr, None)
            is_method = not isinstance(obj, staticmethod)
            if isinstance(obj, staticmethod | classmethod):
                obj = obj.__func__
        elif inspect.ismodule(g.get(f.value.id)):
            obj = getattr(g[f.value.id], f.attr, None)
    return (obj, is_method) if inspect.isfunction(obj) else None


def _is_own(func, roots: list[Path]) -> bool:
    try:
        path = Path(inspect.getsourcefile(func) or "").resolve()
    except TypeError:
        return False
    return any(path.is_relative_to(r) for r in roots)
