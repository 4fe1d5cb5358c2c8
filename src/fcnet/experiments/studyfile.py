"""A study file (docs/study.md) parsed into one validated pydantic model before anything
trains. A problem is one ``FcnetError`` naming the file, the key and what is wrong:
``study.toml: table 't3': vary: unknown config field 'hiden' (did you mean 'hidden'?)``."""

from __future__ import annotations

import difflib
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fcnet.config import RunConfig, make_config
from fcnet.errors import FcnetError
from fcnet.experiments import claims, space

MAX_SEEDS = 100
MAX_RUNS = 20_000  # runs one study may ask for (cells x seeds)
Number = StrictInt | StrictFloat
RefValue = Number | Literal["-"]
Text = Annotated[StrictStr, Field(max_length=2000)]
Id = Annotated[StrictStr, Field(pattern=r"^[A-Za-z][\w-]{0,63}$")]
ConfigTable = dict[StrictStr, Any]
_CLAIM_KEYS = {  # kind: (the keys it needs, the keys it takes)
    "better": ("a", "a b margin"), "unbeaten": ("a", "a b margin"),
    "no_better": ("a b", "a b margin"), "equal": ("a b margin", "a b margin"),
    "grows_then_flat": ("up_to", "along up_to at margin"), "overfits": ("a", "a margin"),
    "reproduces": ("a value", "a value")}


def _fcnet(fn, *args, **kw):
    """Call fn; an FcnetError becomes the ValueError pydantic reports at its location."""
    try:
        return fn(*args, **kw)
    except FcnetError as err:
        raise ValueError(str(err)) from None


def _finite(v: Any, where: str) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{where}: {v} is not a finite number")
    return v


def _changes(values: dict, base: RunConfig, where: str) -> dict:
    """A table of config fields, each value checked as the config checks it."""
    out = {space.check_field(k, where): _finite(space.parse_value(k, v) if isinstance(v, str) else v,
                                                f"{where}.{k}") for k, v in values.items()}
    space.with_changes(base, out, where=where)
    return out


def _one_each(key: str, given: list | None, items: list, message: str) -> None:
    """``given``, when given, has one entry per item; else ``message`` with both lengths."""
    if given is not None and len(given) != len(items):
        raise ValueError(f"{key}: " + message.format(len(given), len(items)))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _validated(self, info: ValidationInfo) -> _Model:
        _fcnet(self._check, info.context)
        return self

    def _check(self, ctx: dict) -> None:
        """A model's checks across its fields, once each is valid (``ctx``: the validation context)."""


class StudyTable(_Model):
    name: Text
    id: Id | None = None  # set to 'table-<n>' when not given
    vary: dict[StrictStr, Any] = {}
    base: ConfigTable = {}
    rows: Annotated[list[ConfigTable], Field(min_length=1, max_length=1000)] | None = None
    row_labels: list[Text] | None = None
    column_labels: list[Text] | None = None
    show: dict[StrictStr, StrictStr] = {}
    reference: list[RefValue] | None = None
    reference_label: Text = "report val %"
    note: Text = ""
    seeds: Annotated[StrictInt, Field(ge=1, le=MAX_SEEDS)] | None = None  # the study's if None
    _axes: list = PrivateAttr()

    @property
    def axes(self) -> list[tuple[str, list[tuple[Any, dict]]]]:
        """(axis name, [(label, changes)]), one or two: rows, then columns."""
        return self._axes

    def columns(self) -> list[tuple[str | None, dict]]:
        """The second axis' (short label: 'H100', changes); one unnamed column for a one-axis table."""
        if len(self.axes) == 1:
            return [(None, {})]
        name, items = self.axes[1]
        return [(None if lab is None else claims.label(name, lab), c) for lab, c in items]

    def cells(self) -> list[list[dict]]:
        """Row-major: the changes of each cell (rows x columns)."""
        return [[{**r, **c} for _, c in self.columns()] for _, r in self.axes[0][1]]

    def _check(self, ctx: dict) -> None:
        base: RunConfig = ctx["base"]
        tbase = _changes(self.base, base, "base")
        axes: list = []
        if self.rows is not None:
            labels = self.row_labels or [f"row {k + 1}" for k in range(len(self.rows))]
            _one_each("row_labels", labels, self.rows, "{} labels for {} rows")
            axes.append(("configuration", [(lab, {**tbase, **_changes(r, base, f"rows[{k}]")})
                                           for k, (lab, r) in enumerate(zip(labels, self.rows))]))
        elif self.row_labels is not None:
            raise ValueError("row_labels: only with rows")
        for name, values in self.vary.items():
            space.check_field(name, "vary")
            where = f"vary.{name}"
            values = values if isinstance(values, list) else [values]
            if len(values) > 1000:
                raise ValueError(f"{where}: {len(values)} values; at most 1000")
            values = [_finite(space.parse_value(name, v) if isinstance(v, str) else v, where)
                      for v in space.normalise_values(name, values, where)]
            axes.append((name, [(v, {**tbase, name: v}) for v in values]))
        if not 1 <= len(axes) <= 2:
            raise ValueError("vary one or two fields (or give rows and vary one field)")
        if self.column_labels is not None:
            if len(axes) != 2:
                raise ValueError("column_labels: only for a table with columns (two axes)")
            _one_each("column_labels", self.column_labels, axes[1][1], "{} labels for {} columns")
            axes[1] = (axes[1][0], list(zip(self.column_labels, [c for _, c in axes[1][1]])))
        for name in self.show.values():
            if not name.replace("_", "").isalnum():
                raise ValueError(f"show: {name!r} is not a run summary key")
        self._axes = axes
        if ctx["force_seeds"] or self.seeds is None:
            self.seeds = ctx["seeds"]
        cells = [c for row in self.cells() for c in row]
        if self.seeds > 1 and any("seed" in c for c in cells):
            raise ValueError(f"seeds = {self.seeds} and a table that sets 'seed' itself: give one")
        for c in cells:
            space.with_changes(base, c, where="cell")
        _one_each("reference", self.reference, cells, "{} values for {} cells (row-major)")


class ToyBlock(_Model):
    kind: Literal["toy"]


class BaselineBlock(_Model):
    kind: Literal["baseline"]
    reference: Number | None = None


class BatchNoiseBlock(_Model):
    kind: Literal["batch_noise"]
    runs: Annotated[list[ConfigTable], Field(min_length=1, max_length=20)]
    labels: list[Text] | None = None

    def _check(self, ctx: dict) -> None:
        self.runs = [_changes(r, ctx["base"], f"runs[{k}]") for k, r in enumerate(self.runs)]
        _one_each("labels", self.labels, self.runs, "{} labels for {} runs")


class PcaCurveBlock(_Model):
    kind: Literal["pca_curve"]
    pca: Number = 0.95

    def _check(self, ctx: dict) -> None:
        _changes({"pca": self.pca}, ctx["base"], "pca")


class ChosenBlock(_Model):
    kind: Literal["chosen"]
    config: ConfigTable = {}
    reference: Number | None = None
    weights: Annotated[list[ConfigTable], Field(max_length=20)] = []
    weight_labels: list[Text] | None = None

    def _check(self, ctx: dict) -> None:
        self.config = _changes(self.config, ctx["base"], "config")
        self.weights = [_changes(w, ctx["base"], f"weights[{k}]") for k, w in enumerate(self.weights)]
        _one_each("weight_labels", self.weight_labels, self.weights, "{} labels for {} weights")


class DepthBlock(_Model):
    kind: Literal["depth"]
    config: ConfigTable = {}
    depths: Annotated[list[Annotated[StrictInt, Field(ge=1, le=20)]],
                      Field(min_length=1, max_length=20)] = [2, 3, 4, 5]
    init: Annotated[list[StrictStr], Field(min_length=1, max_length=5)] = ["normal:1e-3", "kaiming"]
    reference: list[RefValue] | None = None

    @field_validator("init")
    @classmethod
    def _inits(cls, v: list[str]) -> list[str]:
        for s in v:
            _fcnet(make_config, {"backend": "torch", "init": s})
        return v

    def _check(self, ctx: dict) -> None:
        self.config = _changes(self.config, ctx["base"], "config")
        if len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths: a depth is listed twice ({self.depths})")
        _one_each("reference", self.reference, self.depths, "{} values for {} depths")


Block = Annotated[ToyBlock | BaselineBlock | BatchNoiseBlock | PcaCurveBlock | ChosenBlock
                  | DepthBlock, Field(discriminator="kind")]
BLOCKS = ("toy", "baseline", "batch_noise", "pca_curve", "chosen", "depth")


class ClaimSpec(_Model):
    text: Text
    table: StrictStr
    kind: Literal[tuple(_CLAIM_KEYS)]  # type: ignore[valid-type]
    id: Id | None = None
    a: ConfigTable | None = None
    b: ConfigTable | list[ConfigTable] | None = None
    margin: Annotated[Number, Field(ge=0, le=100)] | None = None
    along: StrictStr | None = None
    up_to: Any = None
    at: ConfigTable = {}
    value: Number | None = None
    dataset: StrictStr | None = None

    def _check(self, ctx: dict) -> None:
        needs, takes = (keys.split() for keys in _CLAIM_KEYS[self.kind])
        for key in needs:
            if getattr(self, key) is None:
                raise ValueError(f"a {self.kind!r} claim needs {key!r}")
        for key in ("a", "b", "margin", "along", "up_to", "value", "at"):
            if getattr(self, key) != ({} if key == "at" else None) and key not in takes:
                raise ValueError(f"{key!r} is not a key of a {self.kind!r} claim")


class StudyFile(_Model):
    title: Text | None = None
    seeds: Annotated[StrictInt, Field(ge=1, le=MAX_SEEDS)] = 1
    base: ConfigTable = {}
    dataset: dict[StrictStr, ConfigTable] = {}
    table: Annotated[list[StudyTable], Field(max_length=100)] = []
    block: Annotated[list[Block], Field(max_length=len(BLOCKS))] = []
    claim: Annotated[list[ClaimSpec], Field(max_length=500)] = []


def _base_config(data: dict, overrides: dict) -> tuple[RunConfig, str]:
    """The base config (the file's [base], the command line, [dataset.<name>]) and the dataset's note."""
    base, over = data.get("base", {}), data.get("dataset", {})
    if not isinstance(base, dict):
        raise FcnetError(f"base: expected a table of config fields, got {_what(base)}")
    if not isinstance(over, dict):
        raise FcnetError(f"dataset: expected tables [dataset.NAME], got {_what(over)}")
    values = {**base, **overrides}
    for name in base:
        space.check_field(name, "base")
    ds = values.get("dataset", RunConfig.model_fields["dataset"].default)
    for name, entry in over.items():
        if not isinstance(entry, dict):
            raise FcnetError(f"dataset.{name}: expected a table of config fields, got {_what(entry)}")
        for key in (k for k in entry if k != "note"):  # every dataset's, not only this run's
            space.check_field(key, f"dataset.{name}")
    mine = dict(over.get(ds, {}))
    note = mine.pop("note", "")
    if not isinstance(note, str):
        raise FcnetError(f"dataset.{ds}.note: expected a string, got {_what(note)}")
    try:
        # preset None: fields not given are the exercise's on either backend
        cfg = make_config({**values, **mine, "preset": None})
    except FcnetError as err:
        raise FcnetError(f"base: {err}") from None
    for name, v in {**values, **mine}.items():
        _finite(v, f"base.{name}")
    return cfg, note


def _cross(model: StudyFile) -> tuple[list[claims.Claim], dict[str, claims.Axes]]:
    """The checks across tables and blocks; the claims, resolved against their tables' (and blocks') axes."""
    seen: dict[str, int] = {}
    for i, t in enumerate(model.table):
        t.id = t.id or f"table-{i + 1}"
        if (first := seen.setdefault(t.id, i)) != i:
            raise FcnetError(f"table[{i}]: id {t.id!r} is used twice (also table[{first}])")
    kinds: dict[str, int] = {}
    for i, b in enumerate(model.block):
        if (first := kinds.setdefault(b.kind, i)) != i:
            raise FcnetError(f"block[{i}]: a second {b.kind!r} block (block[{first}]); "
                             "each kind is allowed once")
    runs = sum(len(row) * t.seeds for t in model.table for row in t.cells())
    if runs > MAX_RUNS:
        raise FcnetError(f"the tables ask for {runs} runs (cells x seeds); at most {MAX_RUNS}")
    axes = {t.id: claims.table_axes(t) for t in model.table}
    for name in ("depth", "chosen"):
        if name in axes:
            raise FcnetError(f"table {name!r}: the id {name!r} names the {name} block's "
                             "table in claims; choose another")
    if "depth" in kinds:
        d = model.block[kinds["depth"]]
        axes["depth"] = claims.Axes(["layers", "init"], [list(d.depths), list(d.init)],
                                    [[f"{x} layers" for x in d.depths], list(d.init)])
    if "chosen" in kinds:
        axes["chosen"] = claims.Axes(["split"], [["val", "test"]], [["val", "test"]])
    out: list[claims.Claim] = []
    for k, spec in enumerate(model.claim):
        out.append(claims.resolve(spec, k, axes))
        if out[-1].id in {c.id for c in out[:-1]}:
            raise FcnetError(f"claim[{k}]: id {out[-1].id!r} is used twice")
    return out, axes


_TYPES = {"dict_type": "expected a table", "model_type": "expected a table", "list_type": "expected a list",
          "string_type": "expected a string", "int_type": "expected an integer",
          "union_tag_not_found": "missing 'kind'"}


def _what(v: Any) -> str:
    name = {dict: "a table", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean"}.get(type(v), type(v).__name__)
    return name if isinstance(v, dict | list) else f"{name} {v!r}"


def _where(loc: tuple, data: dict) -> str:
    """('table', 2, 'vary') -> "table 't3'.vary": tables by id (else name), blocks by kind,
    claims by id (else index)."""
    text = ""
    if len(loc) > 1 and loc[0] in ("table", "block", "claim") and isinstance(loc[1], int):
        d = data[loc[0]][loc[1]]  # pydantic read data[loc[0]] as a list
        d = d if isinstance(d, dict) else {}
        name = d.get("id") or {"table": d.get("name"), "block": d.get("kind")}.get(loc[0])
        text = f"{loc[0]} {name!r}" if isinstance(name, str) else f"{loc[0]}[{loc[1]}]"
        loc = loc[3 if loc[0] == "block" and len(loc) > 2 and loc[2] in BLOCKS else 2:]  # the tag
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text


_TAGS = {"int": "a number", "float": "a number", "literal['-']": '"-"', "dict[str,any]": "a table",
         "list[dict[str,any]]": "a list of tables"}  # the unions' members (int: only in Number, with float)
_BOUNDS = {"greater_than_equal": ">=", "less_than_equal": "<="}


def one_line(err: ValidationError, data: Any) -> str:
    """The first problem of a validation error, as 'where: what'."""
    errors = err.errors()
    e = errors[0]
    loc, kind, bad = tuple(e["loc"]), e["type"], e.get("input")
    msg = e["msg"].removeprefix("Value error, ")
    if tags := [i for i, k in enumerate(loc) if k in _TAGS]:  # a value that fits none of a union's types
        loc = loc[:tags[-1]]
        n = len(loc)
        kinds = list(dict.fromkeys(_TAGS[x["loc"][n]] for x in errors if tuple(x["loc"][:n]) == loc
                                   and len(x["loc"]) > n and x["loc"][n] in _TAGS))
        msg = (f"{bad} is not a finite number" if isinstance(bad, float) and not math.isfinite(bad)
               else f"expected {' or '.join(kinds)}, got {_what(bad)}")
    elif kind in _BOUNDS:
        msg = f"must be {_BOUNDS[kind]} {next(iter(e['ctx'].values()))}, got {bad!r}"
    elif kind == "string_pattern_mismatch":
        msg = f"{bad!r}: an id starts with a letter and holds letters, digits, _ and - (at most 64)"
    elif kind in ("too_long", "too_short"):
        msg = msg[0].lower() + msg[1:]
    elif kind in ("extra_forbidden", "missing"):
        key, loc = str(loc[-1]), loc[:-1]
        keys = {name for m in _Model.__subclasses__() for name in m.model_fields}
        close = difflib.get_close_matches(key, keys, n=1)
        msg = (f"missing required key {key!r}" if kind == "missing" else
               f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    elif kind == "union_tag_invalid":
        msg = f"unknown block {bad['kind']!r} (known: {', '.join(BLOCKS)})"
    elif kind == "literal_error":
        msg = f"{bad!r} is not one of {e['ctx']['expected']}"
    elif kind in _TYPES:
        msg = f"{_TYPES[kind]}, got {_what(bad)}"
    where = _where(loc, data)
    return f"{where}: {msg}" if where else msg


def parse(data: dict, source: str, overrides: dict, seeds: int | None = None) -> tuple:
    """(the validated model, the base RunConfig, the dataset's note, the claims, their tables'
    axes); ``seeds`` (the command line's) replaces every ``seeds`` of the file."""
    if seeds is not None:
        data = {**data, "seeds": seeds}
    try:
        base, note = _base_config(data, overrides)
        n = data.get("seeds", 1)
        ctx = {"base": base, "seeds": n if isinstance(n, int) else 1, "force_seeds": seeds is not None}
        model = StudyFile.model_validate(data, context=ctx)
        return model, base, note, *_cross(model)
    except ValidationError as err:
        raise FcnetError(f"{source}: {one_line(err, data)}") from None
    except (FcnetError, ValueError) as err:
        raise FcnetError(f"{source}: {err}") from None


def read(path: Path, source: str) -> dict:
    """A study file's TOML; one-line errors for a missing, unreadable, non-UTF-8 or bad file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        why = {FileNotFoundError: "study file not found",
               IsADirectoryError: "is a directory, not a study file"}
        raise FcnetError(f"{source}: {why.get(type(err), f'cannot read ({err.strerror})')}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise FcnetError(f"{source}: not UTF-8 text (byte {raw[err.start]:#04x} at offset "
                         f"{err.start}); save the file as UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise FcnetError(f"{source}: not valid TOML ({err})") from None
