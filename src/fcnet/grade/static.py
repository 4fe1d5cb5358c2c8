"""Q1c's static half: Python loops over samples, units or classes in a submission's ``loss`` and
what it calls, read from its source files (nothing of it runs here): a loop whose iterable depends on
the data or array sizes; docs/grade.md ("The static loop checks") gives the rules and the split."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import NamedTuple

_WRAPPERS = {"zip", "enumerate", "reversed", "sorted", "list", "tuple"}
_HIDDEN_LOOPS = {"vectorize", "apply_along_axis", "frompyfunc"}
_SIZE_WORDS = ("size", "shape", "class", "dim", "num_")
_FUNC = ast.FunctionDef | ast.AsyncFunctionDef
_MUTATORS = {"append", "extend", "insert", "fill", "update", "put", "itemset", "setdefault", "sort",
             "__setitem__", "__iadd__", "__isub__"}


class Finding(NamedTuple):
    file: str
    line: int
    code: str
    part: str  # "forward" (forward pass and loss) or "backward"


class _Taint:
    """Which names in one function carry data or sizes."""

    def __init__(self, fn: ast.FunctionDef, is_method: bool):
        args = [a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs]
        self.names = set(args[int(is_method):])  # not self
        if fn.args.vararg:
            self.names.add(fn.args.vararg.arg)
        pairs = [pair for n in ast.walk(fn) if isinstance(n, ast.Assign | ast.AugAssign | ast.AnnAssign)
                 for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                 for pair in _pairs(t, n.value)]
        for _ in range(6):  # to a fixed point, whatever the order of the assignments
            before = len(self.names)
            for target, value in pairs:
                if value is not None and self.tainted(value):
                    self.names |= _names(target)
            if len(self.names) == before:
                break

    def tainted(self, expr: ast.AST) -> bool:
        """Whether ``expr`` reads a tainted name, a size-like attribute, a subscript or ``len()``."""
        return any((isinstance(n, ast.Name) and n.id in self.names) or isinstance(n, ast.Subscript)
                   or (isinstance(n, ast.Attribute) and any(w in n.attr.lower() for w in _SIZE_WORDS)
                       and "layer" not in n.attr.lower())
                   or (isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "len")
                   for n in ast.walk(expr))

    def allowed(self, it: ast.AST) -> bool:
        """Whether iterating over ``it`` runs a fixed number of times."""
        if isinstance(it, ast.Tuple | ast.List | ast.Set | ast.Dict | ast.Constant):
            return True
        if isinstance(it, ast.Call) and isinstance(it.func, ast.Name) and it.func.id in _WRAPPERS:
            return all(self.allowed(a) for a in it.args)
        return not self.tainted(it)  # range(n), d.items(), ...: whether n or d is tainted


def _pairs(target: ast.AST, value: ast.AST | None) -> list[tuple[ast.AST, ast.AST | None]]:
    """``a, b = x, y`` pairs up element by element; anything else is one pair."""
    seq = ast.Tuple | ast.List
    if isinstance(target, seq) and isinstance(value, seq) and len(target.elts) == len(value.elts):
        return list(zip(target.elts, value.elts))
    return [(target, value)]


class _Source:
    """One parsed file of the submission: its functions, classes and imports."""

    def __init__(self, path: Path):
        self.path, self.lines = path, path.read_text(errors="replace").splitlines()
        self.defs: dict[str, ast.AST] = {}
        self.imports: dict[str, tuple[str, str | None]] = {}  # local name -> (module, attribute)
        for node in ast.parse("\n".join(self.lines), filename=path.name).body:
            if isinstance(node, _FUNC | ast.ClassDef):
                self.defs[node.name] = node
            elif isinstance(node, ast.Import):
                for a in node.names:
                    mod = a.name if a.asname else a.name.split(".")[0]  # `import a.b` binds a
                    self.imports[a.asname or mod] = (mod, None)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    self.imports[a.asname or a.name] = (node.module, a.name)


class _Folder:
    """The submission's folder: its own modules, parsed on demand (None: not its own)."""

    def __init__(self, root: Path):
        self.root = root
        self.module = functools.cache(self._parse)

    def _parse(self, name: str) -> _Source | None:
        path = self.root.joinpath(*name.split(".")).with_suffix(".py")
        try:
            return _Source(path) if path.is_file() else None
        except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
            return None

    def lookup(self, src: _Source, name: str) -> tuple[_Source, ast.AST] | None:
        """What ``name`` means at the top of ``src``: a def there or one imported from the folder."""
        for _ in range(8):
            if name in src.defs:
                return src, src.defs[name]
            if name not in src.imports:
                return None
            mod, attr = src.imports[name]
            nxt = self.module(mod)
            if nxt is None or attr is None:
                return None
            src, name = nxt, attr
        return None

    def method(self, src: _Source, cls: ast.ClassDef, name: str, depth: int = 0):
        """(file, function) of ``cls.name``, through base classes of the submission's own."""
        for node in cls.body:
            if isinstance(node, _FUNC) and node.name == name:
                return src, node
        for base in cls.bases if depth < 8 else []:
            found = self.lookup(src, base.id) if isinstance(base, ast.Name) else None
            if found and isinstance(found[1], ast.ClassDef):
                m = self.method(found[0], found[1], name, depth + 1)
                if m:
                    return m
        return None


def _labels_region(fn: ast.AST) -> list[ast.stmt]:
    """The statements of ``fn`` that run only when labels are given: those after
    ``if y is None: ... return``, or the body of ``if y is not None:``."""
    y = fn.args.args[2].arg if len(fn.args.args) > 2 else "y"  # loss(self, X, y, ...)
    for i, st in enumerate(fn.body):
        if not (isinstance(st, ast.If) and isinstance(st.test, ast.Compare) and len(st.test.ops) == 1
                and isinstance(st.test.left, ast.Name) and st.test.left.id == y):
            continue
        op = st.test.ops[0]
        if isinstance(op, ast.Is | ast.Eq) and any(isinstance(n, ast.Return) for n in st.body):
            return fn.body[i + 1:] + list(st.orelse)
        if isinstance(op, ast.IsNot | ast.NotEq):
            return list(st.body)
    return []


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _written(node: ast.AST) -> set[str]:
    """Names a statement assigns to, including ``a[i] = ...`` and ``a.x += ...`` (``a``)."""
    out = set()
    for n in ast.walk(node):
        targets = (n.targets if isinstance(n, ast.Assign) else [n.target]
                   if isinstance(n, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor) else [])
        for t in targets:
            while isinstance(t, ast.Subscript | ast.Attribute | ast.Starred):
                t = t.value
            out |= _names(t)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):  # a.append(...), np.add.at(a, ...)
            if isinstance(n.func.value, ast.Name) and n.func.attr in _MUTATORS:
                out.add(n.func.value.id)
            if n.func.attr == "at" and n.args:
                out |= _names(n.args[0])
    return out


def _loss_names(region: list[ast.stmt]) -> set[str] | None:
    """The names the returned loss depends on within ``region`` (None: no ``return loss, grads``)."""
    ret = [n for st in region for n in ast.walk(st) if isinstance(n, ast.Return)
           and isinstance(n.value, ast.Tuple) and len(n.value.elts) == 2]
    if not ret:
        return None
    need = _names(ret[-1].value.elts[0])
    for _ in range(len(region) + 1):
        before = len(need)
        for st in region:
            if _written(st) & need:
                need |= _names(st)
        if len(need) == before:
            break
    return need


def find_loops(folder: Path) -> list[Finding]:
    """Loops over data in ``TwoLayerNet.loss`` of ``folder/two_layernet.py`` and in the
    functions it calls from the submission's own files, each marked forward or backward."""
    files = _Folder(Path(folder))
    entry = files.module("two_layernet")
    found = files.lookup(entry, "TwoLayerNet") if entry else None
    start = files.method(*found, "loss") if found and isinstance(found[1], ast.ClassDef) else None
    if start is None:
        return []
    cls = found[1]
    findings: list[Finding] = []
    seen: set = set()
    todo: list[tuple[_Source, ast.AST, bool, str | None]] = [(*start, True, None)]
    while todo:
        src, fn, is_method, part = todo.pop()
        if (src.path, fn.lineno) in seen:
            continue
        seen.add((src.path, fn.lineno))
        backward: set[int] = set()  # ids of the root's statements that only the backward pass needs
        if part is None:
            region = _labels_region(fn)
            need = _loss_names(region)
            if need is not None:
                backward = {id(st) for st in region if not (_written(st) & need)
                            and not any(isinstance(n, ast.Return) for n in ast.walk(st))}
        taint = _Taint(fn, is_method)
        for top in fn.body:
            where = part or ("backward" if id(top) in backward else "forward")
            for n in ast.walk(top):
                bad = None
                if isinstance(n, ast.For | ast.AsyncFor | ast.comprehension) and not taint.allowed(n.iter):
                    bad = n.iter if isinstance(n, ast.comprehension) else n  # a comprehension has no line
                elif isinstance(n, ast.While) and taint.tainted(n.test):
                    bad = n
                elif isinstance(n, ast.Call) and (
                        (isinstance(n.func, ast.Attribute) and n.func.attr in _HIDDEN_LOOPS)
                        or (isinstance(n.func, ast.Name) and n.func.id == "map"
                            and any(map(taint.tainted, n.args)))):
                    bad = n
                elif isinstance(n, ast.Call) and (callee := _resolve(files, src, cls, n.func)):
                    todo.append((*callee, where))
                if bad is not None:
                    code = src.lines[bad.lineno - 1].strip()  # the parsed text is these lines
                    code = code if len(code) <= 80 else code[:77] + "..."
                    findings.append(Finding(src.path.name, bad.lineno, code, where))
    # a loop reached from both passes is the forward pass's (sorted last, it wins)
    best = {(f.file, f.line): f for f in sorted(findings, key=lambda f: f.part == "forward")}
    return sorted(best.values(), key=lambda f: (f.file, f.line))


def _resolve(files: _Folder, src: _Source, cls: ast.ClassDef, f: ast.AST):
    """(file, function, is_method) that a call expression names in the submission's own files."""
    hit, is_method = None, False
    if isinstance(f, ast.Name):
        hit = files.lookup(src, f.id)
    elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        if f.value.id == "self":
            hit = files.method(src, cls, f.attr)
            is_method = hit is not None and not any(isinstance(d, ast.Name) and d.id == "staticmethod"
                                                    for d in hit[1].decorator_list)
        elif f.value.id in src.imports and src.imports[f.value.id][1] is None:
            mod = files.module(src.imports[f.value.id][0])
            hit = files.lookup(mod, f.attr) if mod else None
    return (*hit, is_method) if hit and isinstance(hit[1], _FUNC) else None
