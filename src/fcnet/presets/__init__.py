"""Named configs shipped with fcnet: ``fcnet train --preset NAME``.

Each preset is a TOML file of RunConfig keys beside this module; flags given on
the command line override its values.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

from fcnet.errors import FcnetError


def available_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".toml"))


def load_preset(name: str) -> dict[str, Any]:
    """The preset's RunConfig values; FcnetError naming the choices for an unknown name."""
    names = available_presets()
    if name not in names:
        raise FcnetError(f"unknown preset {name!r}; available: {', '.join(names)}")
    text = resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:  # a shipped file: a packaging bug, said plainly
        raise FcnetError(f"preset {name!r}: not valid TOML ({err})") from None
