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
    out = {}
    for name, v in values.items():
        _fcnet(space.check_field, name, where)
        if isinstance(v, str) and v != "-":
            v = _fcnet(space.parse_value, name, v)
        out[name] = _finite(v, f"{where}.{name}")
    _fcnet(space.with_changes, base, out, where=where)
    return out


def _one_each(key: str, given: list | None, items: list, message: str) -> None:
    """``given``, when given, has one entry per item; else ``message`` with both lengths."""
    if given is not None and len(given) != len(items):
        raise ValueError(f"{key}: " + message.format(len(given), len(items)))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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

    def columns(self) -> list[tuple[Any, dict]]:
        """The second axis' (label, changes); one unlabelled column for a one-axis table."""
        return self.axes[1][1] if len(self.axes) > 1 else [(None, {})]

    def cells(self) -> list[list[dict]]:
        """Row-major: the changes of each cell (rows x columns)."""
        return [[{**r, **c} for _, c in self.columns()] for _, r in self.axes[0][1]]

    @model_validator(mode="after")
    def _build(self, info: ValidationInfo) -> StudyTable:
        base: RunConfig = info.context["base"]
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
            _fcnet(space.check_field, name, "vary")
            where = f"vary.{name}"
            values = values if isinstance(values, list) else [values]
            if len(values) > 1000:
                raise ValueError(f"{where}: {len(values)} values; at most 1000")
            values = _fcnet(space.normalise_values, name, values, where)
            values = [_finite(_fcnet(space.parse_value, name, v) if isinstance(v, str) else v,
                              where) for v in values]
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
        if info.context["force_seeds"] or self.seeds is None:
            self.seeds = info.context["seeds"]
        cells = [c for row in self.cells() for c in row]
        if self.seeds > 1 and any("seed" in c for c in cells):
            raise ValueError(f"seeds = {self.seeds} and a table that sets 'seed' itself: give one")
        for c in cells:
            _fcnet(space.with_changes, base, c, where="cell")
        _one_each("reference", self.reference, cells, "{} values for {} cells (row-major)")
        return self


class ToyBlock(_Model):
    kind: Literal["toy"]


class BaselineBlock(_Model):
    kind: Literal["baseline"]
    reference: Number | None = None


class BatchNoiseBlock(_Model):
    kind: Literal["batch_noise"]
    runs: Annotated[list[ConfigTable], Field(min_length=1, max_length=20)]
    labels: list[Text] | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> BatchNoiseBlock:
        self.runs = [_changes(r, info.context["base"], f"runs[{k}]")
                     for k, r in enumerate(self.runs)]
        _one_each("labels", self.labels, self.runs, "{} labels for {} runs")
        return self


class PcaCurveBlock(_Model):
    kind: Literal["pca_curve"]
    pca: Number = 0.95

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> PcaCurveBlock:
        _changes({"pca": self.pca}, info.context["base"], "pca")
        return self


class ChosenBlock(_Model):
    kind: Literal["chosen"]
    config: ConfigTable = {}
    reference: Number | None = None
    weights: Annotated[list[ConfigTable], Field(max_length=20)] = []
    weight_labels: list[Text] | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> ChosenBlock:
        base = info.context["base"]
        self.config = _changes(self.config, base, "config")
        self.weights = [_changes(w, base, f"weights[{k}]") for k, w in enumerate(self.weights)]
        _one_each("weight_labels", self.weight_labels, self.weights, "{} labels for {} weights")
        return self


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

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> DepthBlock:
        self.config = _changes(self.config, info.context["base"], "config")
        if len(set(self.depths)) != len(self.depths):
            raise ValueError(f"depths: a depth is listed twice ({self.depths})")
        _one_each("reference", self.reference, self.depths, "{} values for {} depths")
        return self


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

    @model_validator(mode="after")
    def _keys(self) -> ClaimSpec:
        needs, takes = (keys.split() for keys in _CLAIM_KEYS[self.kind])
        for key in needs:
            if getattr(self, key) is None:
                raise ValueError(f"a {self.kind!r} claim needs {key!r}")
        for key in ("a", "b", "margin", "along", "up_to", "value", "at"):
            if getattr(self, key) != ({} if key == "at" else None) and key not in takes:
                raise ValueError(f"{key!r} is not a key of a {self.kind!r} claim")
        return self


class StudyFile(_Model):
    title: Text | None = None
    seeds: Annotated[StrictInt, Field(ge=1, le=MAX_SEEDS)] = 1
    base: ConfigTable = {}
    dataset: dict[StrictStr, ConfigTable] = {}
    table: Annotated[list[StudyTable], Field(max_length=100)] = []
    block: Annotated[list[Block], Field(max_length=len(BLOCKS))] = []
    claim: Annotated[list[ClaimSpec], Field(max_length=500)] = []
    _claims: list[claims.Claim] = PrivateAttr(default_factory=list)
    _axes: dict[str, claims.Axes] = PrivateAttr(default_factory=dict)  # claims' tables, by id

    @model_validator(mode="before")
    @classmethod
    def _base_config(cls, data: Any, info: ValidationInfo) -> Any:
        """The resolved base config (file's [base], the command line, [dataset.<name>]),
        needed by every table and block: put in the validation context first."""
        ctx = info.context
        if not isinstance(data, dict):
            return data
        base, over = data.get("base", {}), data.get("dataset", {})
        if not isinstance(base, dict):
            raise ValueError(f"base: expected a table of config fields, got {_what(base)}")
        if not isinstance(over, dict):
            raise ValueError(f"dataset: expected tables [dataset.NAME], got {_what(over)}")
        values = {**base, **ctx["overrides"]}
        for name in base:
            _fcnet(space.check_field, name, "base")
        ds = values.get("dataset", RunConfig.model_fields["dataset"].default)
        for name, entry in over.items():
            if not isinstance(entry, dict):
                raise ValueError(f"dataset.{name}: expected a table of config fields, "
                                 f"got {_what(entry)}")
            for key in (k for k in entry if k != "note"):  # every dataset's, not only this run's
                _fcnet(space.check_field, key, f"dataset.{name}")
        mine = dict(over.get(ds, {}))
        note = mine.pop("note", "")
        if not isinstance(note, str):
            raise ValueError(f"dataset.{ds}.note: expected a string, got {_what(note)}")
        try:
            # preset None: fields not given are the exercise's on either backend
            cfg = make_config({**values, **mine, "preset": None})
        except FcnetError as err:
            raise ValueError(f"base: {err}") from None
        for name, v in {**values, **mine}.items():
            _finite(v, f"base.{name}")
        seeds = data.get("seeds", 1)
        ctx.update(base=cfg, note=note, seeds=seeds if isinstance(seeds, int) else 1)
        return data

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> StudyFile:
        seen: dict[str, int] = {}
        for i, t in enumerate(self.table):
            t.id = t.id or f"table-{i + 1}"
            if t.id in seen:
                raise ValueError(f"table[{i}]: id {t.id!r} is used twice (also table[{seen[t.id]}])")
            seen[t.id] = i
        kinds: dict[str, int] = {}
        for i, b in enumerate(self.block):
            if b.kind in kinds:
                raise ValueError(f"block[{i}]: a second {b.kind!r} block (block[{kinds[b.kind]}]); "
                                 "each kind is allowed once")
            kinds[b.kind] = i
        runs = sum(len(row) * t.seeds for t in self.table for row in t.cells())
        if runs > MAX_RUNS:
            raise ValueError(f"the tables ask for {runs} runs (cells x seeds); at most {MAX_RUNS}")
        self._claims = _fcnet(self._resolve_claims)
        return self

    def _resolve_claims(self) -> list[claims.Claim]:
        axes = self._axes = {t.id: claims.table_axes(t) for t in self.table}
        for name in ("depth", "chosen"):
            if name in axes:
                raise FcnetError(f"table {name!r}: the id {name!r} names the {name} block's "
                                 "table in claims; choose another")
        blocks = {b.kind: b for b in self.block}
        if "depth" in blocks:
            d = blocks["depth"]
            axes["depth"] = claims.Axes(["layers", "init"], [list(d.depths), list(d.init)],
                                        [[f"{x} layers" for x in d.depths], list(d.init)])
        if "chosen" in blocks:
            axes["chosen"] = claims.Axes(["split"], [["val", "test"]], [["val", "test"]])
        out: list[claims.Claim] = []
        for k, spec in enumerate(self.claim):
            out.append(claims.resolve(spec, k, axes))
            if out[-1].id in {c.id for c in out[:-1]}:
                raise FcnetError(f"claim[{k}]: id {out[-1].id!r} is used twice")
        return out


_TYPES = {"dict_type": "expected a table", "model_type": "expected a table",
          "list_type": "expected a list", "string_type": "expected a string",
          "int_type": "expected an integer", "float_type": "expected a number",
          "bool_type": "expected true or false", "union_tag_not_found": "missing 'kind'"}


def _what(v: Any) -> str:
    names = {dict: "a table", list: "a list", str: "a string", int: "an integer",
             float: "a number", bool: "a boolean"}
    return f"{names.get(type(v), type(v).__name__)} {v!r}" if not isinstance(v, dict | list) \
        else names[type(v)]


def _where(loc: tuple, data: dict) -> str:
    """('table', 2, 'vary') -> "table 't3'.vary": tables by id (else name), blocks by kind,
    claims by id (else index)."""
    text = ""
    if len(loc) > 1 and loc[0] in ("table", "block", "claim") and isinstance(loc[1], int):
        items = data.get(loc[0])
        d = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
        d = d if isinstance(d, dict) else {}
        name = d.get("id") or {"table": d.get("name"), "block": d.get("kind")}.get(loc[0])
        text = f"{loc[0]} {name!r}" if isinstance(name, str) else f"{loc[0]}[{loc[1]}]"
        loc = loc[3 if loc[0] == "block" and len(loc) > 2 and loc[2] in BLOCKS else 2:]  # the tag
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else f".{key}" if text else str(key)
    return text


_TAGS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
         "literal['-']": '"-"', "dict[str,any]": "a table", "list[dict[str,any]]":
         "a list of tables"}
_BOUNDS = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">",
           "less_than": "<"}


def _union(errors: list[dict]) -> tuple[tuple, str] | None:
    """A value that fits none of a union's types: (its location, 'expected A or B')."""
    tags = [i for i, k in enumerate(errors[0]["loc"]) if k in _TAGS]
    if not tags:
        return None
    n = tags[-1]
    at = tuple(errors[0]["loc"][:n])
    kinds = list(dict.fromkeys(_TAGS[e["loc"][n]] for e in errors if tuple(e["loc"][:n]) == at
                               and len(e["loc"]) > n and e["loc"][n] in _TAGS))
    if "a number" in kinds and "an integer" in kinds:
        kinds.remove("an integer")
    return at, f"expected {' or '.join(kinds)}, got {_what(errors[0]['input'])}"


def one_line(err: ValidationError, data: Any) -> str:
    """The first problem of a validation error, as 'where: what'."""
    e = err.errors()[0]
    loc = tuple(e["loc"])
    where = _where(loc, data)
    kind = e["type"]
    msg = e["msg"].removeprefix("Value error, ")
    union = _union(err.errors())
    bad = e.get("input")
    if isinstance(bad, float) and not math.isfinite(bad) and (union or kind == "finite_number"):
        where, msg = _where(union[0], data) if union else where, f"{bad} is not a finite number"
    elif union and kind.endswith("_type") or union and kind == "literal_error":
        where, msg = _where(union[0], data), union[1]
    elif kind in _BOUNDS:
        msg = f"must be {_BOUNDS[kind]} {next(iter(e['ctx'].values()))}, got {e['input']!r}"
    elif kind == "string_pattern_mismatch":
        msg = (f"{e['input']!r}: an id starts with a letter and holds letters, digits, _ and - "
               "(at most 64)")
    elif kind in ("too_long", "too_short"):
        msg = msg[0].lower() + msg[1:]
    elif kind in ("extra_forbidden", "missing"):
        key, where = str(loc[-1]), _where(loc[:-1], data)
        keys = {name for m in _Model.__subclasses__() for name in m.model_fields}
        close = difflib.get_close_matches(key, keys, n=1)
        msg = (f"missing required key {key!r}" if kind == "missing" else
               f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    elif kind == "union_tag_invalid":
        msg = (f"unknown block {e['input'].get('kind') if isinstance(e['input'], dict) else ''!r}"
               f" (known: {', '.join(BLOCKS)})")
    elif kind == "literal_error":
        msg = f"{e['input']!r} is not one of {e['ctx']['expected']}"
    elif kind in _TYPES:
        msg = f"{_TYPES[kind]}, got {_what(e['input'])}"
    return f"{where}: {msg}" if where else msg


def parse(data: dict, source: str, overrides: dict, seeds: int | None = None
          ) -> tuple[StudyFile, dict]:
    """The validated model and its context (``base``: the RunConfig, ``note``: the dataset's);
    ``seeds`` (the command line's) replaces every ``seeds`` of the file."""
    ctx: dict = {"overrides": overrides, "force_seeds": seeds is not None}
    if seeds is not None:
        data = {**data, "seeds": seeds}
    try:
        model = StudyFile.model_validate(data, context=ctx)
    except ValidationError as err:
        raise FcnetError(f"{source}: {one_line(err, data)}") from None
    return model, ctx


def read(path: Path, source: str) -> dict:
    """A study file's TOML; one-line errors for a missing, unreadable, non-UTF-8 or bad file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FcnetError(f"{source}: study file not found") from None
    except IsADirectoryError:
        raise FcnetError(f"{source}: is a directory, not a study file") from None
    except OSError as err:
        raise FcnetError(f"{source}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FcnetError(f"{source}: not UTF-8 text (byte {raw[err.start]:#04x} at offset "
                         f"{err.start}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise FcnetError(f"{source}: not valid TOML ({err})") from None
