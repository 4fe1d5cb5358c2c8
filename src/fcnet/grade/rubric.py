"""The rubric: points per check (and optional threshold overrides), from TOML."""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

from fcnet.config import read_toml
from fcnet.errors import FcnetError
from fcnet.grade.checks import BY_NAME

DEFAULT = Path(__file__).with_name("rubric.toml")


class Rubric(NamedTuple):
    points: dict[str, float]
    thresholds: dict[str, float]  # overrides of the checks' own thresholds
    source: str


def load_rubric(path: str | Path | None = None) -> Rubric:
    """The default rubric, or the one in ``path``; FcnetError (one line) when it is malformed."""
    p = Path(path) if path is not None else DEFAULT
    if not p.is_file():
        raise FcnetError(f"rubric {p}: no such file")
    try:
        data = read_toml(p)
    except FcnetError as err:
        raise FcnetError(f"rubric {err}") from None
    if unknown := set(data) - {"points", "thresholds"}:
        raise FcnetError(f"rubric {p}: unknown table {sorted(unknown)[0]!r} (expected [points] and "
                         "optionally [thresholds])")
    tables = {}
    for table in ("points", "thresholds"):
        t = data.get(table, {})
        if not isinstance(t, dict):
            raise FcnetError(f"rubric {p}: {table} must be a table ([{table}])")
        for key, v in t.items():
            if key not in BY_NAME:
                raise FcnetError(f"rubric {p}: [{table}] unknown check {key!r} "
                                 f"(checks: {', '.join(BY_NAME)})")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise FcnetError(f"rubric {p}: [{table}] {key} must be a number, got {v!r}")
            if table == "points" and v < 0:
                raise FcnetError(f"rubric {p}: [points] {key} must not be negative, got {v:g}")
            if table == "thresholds" and BY_NAME[key].op == "ok":
                raise FcnetError(f"rubric {p}: [thresholds] {key} has no threshold (it passes when it runs)")
        tables[table] = {k: float(v) for k, v in t.items()}
    if not any(tables["points"].values()):
        raise FcnetError(f"rubric {p}: no check is worth any points")
    return Rubric(tables["points"], tables["thresholds"], str(p))
