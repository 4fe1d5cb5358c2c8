"""What a sweep varies: grid values (``--grid FIELD=VALUES``) and search ranges
(``--param FIELD=SPEC``), parsed from text; docs/sweep.md has the syntax."""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import typing
from dataclasses import dataclass
from typing import Any

from fcnet.config import RunConfig, make_config
from fcnet.errors import FcnetError

FIELDS = RunConfig.model_fields


def run_key(config: RunConfig) -> str:
    """``RunConfig.key``: identical configs share one run directory and run once."""
    return config.key()


def check_field(name: str, where: str) -> str:
    """``name`` if it is a RunConfig field, else FcnetError naming ``where``."""
    if name not in FIELDS:
        close = difflib.get_close_matches(name, list(FIELDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise FcnetError(f"{where}: unknown config field {name!r}{hint}")
    return name


def _numeric_kind(name: str) -> type | None:
    """int or float for a numeric field (Optional allowed), else None."""
    args = typing.get_args(FIELDS[name].annotation) or (FIELDS[name].annotation,)
    return None if bool in args else int if int in args else float if float in args else None


def split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets: ``[1,2],[3]`` -> two values."""
    parts, depth = [""], 0
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            parts.append("")
        else:
            parts[-1] += ch
    return [p.strip() for p in parts if p.strip()]


def parse_value(name: str, text: str) -> Any:
    """One value of field ``name`` from text (JSON where it parses, else the string)."""
    text = text.strip()
    if name == "hidden" and "x" in text and not text.startswith("["):
        try:
            return [int(h) for h in text.split("x")]
        except ValueError:
            raise FcnetError(f"hidden: expected sizes like 100x50, got {text!r}") from None
    if text in ("none", "None") and type(None) in typing.get_args(FIELDS[name].annotation):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return [value] if name == "hidden" and isinstance(value, int) else value


def _number(text: str, where: str) -> int | float:
    with contextlib.suppress(ValueError):
        return int(text)
    try:
        value = float(text)
    except ValueError:
        raise FcnetError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise FcnetError(f"{where}: expected a finite number, got {text.strip()!r}")
    return value


def _range(name: str, text: str, where: str) -> list:
    parts = text.split(":")
    if len(parts) != 3:
        raise FcnetError(f"{where}: a range is START:STOP:STEP, got {text!r}")
    start, stop, step = (_number(p, where) for p in parts)
    if step <= 0 or stop < start:
        raise FcnetError(f"{where}: a range needs STEP > 0 and STOP >= START, got {text!r}")
    n = int(round((stop - start) / step))
    if n > 10_000:
        raise FcnetError(f"{where}: {text!r} makes {n + 1} values; that is too many")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return list(range(start, stop + 1, step))
    values = [float(f"{start + i * step:.12g}") for i in range(n + 1)]  # 0.3, not 0.30000000000000004
    return [v for v in values if v <= stop * (1 + 1e-12)]


def parse_grid_item(item: str) -> tuple[str, list]:
    """``FIELD=V1,V2`` (or a range) -> (field, [values])."""
    name, eq, text = item.partition("=")
    name = name.strip().replace("-", "_")
    if not eq or not text.strip():
        raise FcnetError(f"--grid {item!r}: expected FIELD=V1,V2,...")
    check_field(name, f"--grid {item!r}")
    values = [parse_value(name, v) for v in split_values(text)]  # a range stays text: expanded below
    return name, normalise_values(name, values, f"--grid {name}")


def normalise_values(name: str, values: list, where: str) -> list:
    """Grid values of one field, from TOML or text: ranges expanded, hidden sizes as lists."""
    out = []
    for v in values:
        if isinstance(v, str) and name != "hidden" and ":" in v and _numeric_kind(name):
            out.extend(_range(name, v, where))
        elif name == "hidden" and isinstance(v, str | int):
            out.append(parse_value(name, v) if isinstance(v, str) else [v])
        else:
            out.append(v)
    if not out:
        raise FcnetError(f"{where}: no values")
    for i, v in enumerate(out):
        if v in out[:i]:
            raise FcnetError(f"{where}: value {v!r} is listed twice")
    return out


def _once(pairs, flag: str) -> dict:
    """(name, value) pairs as a dict; FcnetError for a name given twice."""
    out: dict = {}
    for name, value in pairs:
        if name in out:
            raise FcnetError(f"{flag} {name}: given twice")
        out[name] = value
    return out


def parse_grid(items: list[str]) -> dict[str, list]:
    return _once(map(parse_grid_item, items), "--grid")


@dataclass(frozen=True)
class SearchParam:
    """One dimension of a random/TPE search: a range (optionally log or stepped) or choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple | None = None

    @classmethod
    def parse(cls, item: str) -> SearchParam:
        """``FIELD=LOW:HIGH[:log|:STEP]`` or ``FIELD=A,B,C``."""
        name, eq, text = item.partition("=")
        name = name.strip().replace("-", "_")
        where = f"--param {item!r}"
        if not eq or not text.strip():
            raise FcnetError(f"{where}: expected FIELD=LOW:HIGH[:log] or FIELD=A,B,...")
        kind = _numeric_kind(check_field(name, where))
        if ":" in text and "," not in text and kind is not None:
            parts = text.split(":")
            if len(parts) not in (2, 3):
                raise FcnetError(f"{where}: a range is LOW:HIGH, LOW:HIGH:log or LOW:HIGH:STEP")
            low, high = (_number(p, where) for p in parts[:2])
            log = len(parts) == 3 and parts[2].strip() == "log"
            step = _number(parts[2], where) if len(parts) == 3 and not log else None
            if step is not None and step <= 0:
                raise FcnetError(f"{where}: STEP must be positive")
            if not low < high:
                raise FcnetError(f"{where}: needs LOW < HIGH")
            if log and low <= 0:
                raise FcnetError(f"{where}: a log range needs LOW > 0")
            if kind is int and (low != int(low) or high != int(high)):
                raise FcnetError(f"{where}: {name} is an integer field; bounds must be integers")
            return cls(name, float(low), float(high), log, step, integer=kind is int)
        values = [parse_value(name, v) for v in split_values(text)]
        if len(values) < 2:
            raise FcnetError(f"{where}: give a range LOW:HIGH or at least two choices")
        return cls(name, choices=tuple(_choice_key(v) for v in values))

    def suggest(self, trial) -> Any:
        """The value an Optuna trial suggests for this field."""
        if self.choices is not None:
            return _choice_value(self.name, trial.suggest_categorical(self.name, self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1),
                                     log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def ends(self) -> list:
        """The field values at both ends of the range (or every choice)."""
        values = self.choices if self.choices is not None else (self.low, self.high)
        return [int(v) if self.integer else _choice_value(self.name, v) for v in values]

    def describe(self) -> str:
        if self.choices is not None:
            return ",".join(str(c) for c in self.choices)
        tail = ":log" if self.log else (f":{self.step:g}" if self.step else "")
        return f"{self.low:g}:{self.high:g}{tail}"


def _choice_key(value: Any) -> Any:
    """Optuna choices must be scalars: hidden [100, 50] is stored as '100x50'."""
    return "x".join(map(str, value)) if isinstance(value, list) else value


def _choice_value(name: str, value: Any) -> Any:
    return parse_value(name, value) if name == "hidden" and isinstance(value, str) else value


def parse_params(items: list[str]) -> dict[str, SearchParam]:
    return _once(((p.name, p) for p in map(SearchParam.parse, items)), "--param")


def with_changes(base: RunConfig, changes: dict[str, Any], where: str = "sweep") -> RunConfig:
    """``base`` with ``changes`` applied and validated; setting ``iters`` clears the base's ``epochs``."""
    values = {**base.model_dump(), **changes}
    if "iters" in changes and "epochs" not in changes:
        values["epochs"] = None
    try:
        config = make_config(values)
    except FcnetError as err:
        described = " ".join(f"{k}={_choice_key(v)}" for k, v in changes.items()) or "(base)"
        raise FcnetError(f"{where} {described}: {err}") from None
    for k in changes:  # also where the config itself would let it through ("inf" text too)
        v = getattr(config, k)
        if isinstance(v, float) and not math.isfinite(v):
            raise FcnetError(f"{where} {k}={changes[k]}: not a finite number")
    return config
