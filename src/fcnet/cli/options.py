"""Flags shared by subcommands: one per RunConfig field (`train`, `sweep`), generated from the config's
own declaration so they can never drift apart, and the checks `sweep`, `study` and `data` share."""

from __future__ import annotations

import argparse
import typing
from typing import Any

from fcnet.config import RunConfig, make_config, read_toml
from fcnet.errors import FcnetError

# the short spellings study.md and the exercise use
ALIASES = {"lr": ["--learning-rate"], "iters": ["--num-iters"]}


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """--config, --preset and one flag per RunConfig field (default: not given)."""
    g = parser.add_argument_group("run config (flags override --config, which overrides --preset)")
    g.add_argument("--config", metavar="TOML", help="read the run config from a TOML file")
    g.add_argument("--preset", metavar="NAME", help="start from a named preset: exercise (the course's "
                   "numbers, NumPy's default), general (Adam, Kaiming init: --backend torch's default), "
                   "best-cpu, best-gpu")
    for name, field in RunConfig.model_fields.items():
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description or name.replace('_', ' ')} (default {default!r})"
        ann, args = field.annotation, typing.get_args(field.annotation)
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if ann is bool or set(args) == {bool, type(None)}:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(ann) is typing.Literal:
            kwargs["choices"] = list(args)
        elif name == "hidden":
            kwargs.update(type=_int_list, metavar="H1,H2")
        elif name == "time_budget":
            kwargs.update(type=str, metavar="15m")  # the config reads the unit
        else:
            kind = next((k for k in (int, float) if k in args or ann is k), str)
            kwargs.update(type=kind, metavar={int: "N", float: "X"}.get(kind))
        g.add_argument("--" + name.replace("_", "-"), *ALIASES.get(name, []), **kwargs)


def config_from_args(args: argparse.Namespace, extra: dict | None = None) -> RunConfig:
    """preset < --config TOML < flags; validated into one RunConfig."""
    values: dict[str, Any] = {}
    if getattr(args, "preset", None):
        from fcnet.presets import load_preset

        values.update(load_preset(args.preset), preset=None)  # applied: no profile underneath (torch's too)
    if getattr(args, "config", None):
        values.update(read_toml(args.config))
    flags = {name: getattr(args, name, None) for name in RunConfig.model_fields}
    if flags.get("epochs") is not None and flags.get("iters") is None:
        values.pop("iters", None)
    if flags.get("iters") is not None and flags.get("epochs") is None:
        values["epochs"] = None  # --iters on the command line beats epochs from a file
    if (flags.get("iters") or flags.get("epochs")) and flags.get("time_budget") is None:
        values.pop("time_budget", None)  # and a time budget from a file or preset
    if flags.get("time_budget") is not None:
        values.pop("epochs", None)
    values.update(extra or {})
    return make_config(values, **flags)


def check_flags(args: argparse.Namespace, *counts: str) -> None:
    """The checks of `fcnet sweep`, `study` and `data`: each count given is >= 1, --join has --storage."""
    for name in counts:
        if (n := getattr(args, name)) is not None and n < 1:
            raise FcnetError(f"--{name.replace('_', '-')} must be at least 1, got {n}")
    if getattr(args, "join", False) and not args.storage:
        raise FcnetError("--join needs --storage URL (a database server the workers share)")
