"""Figures and the self-contained report of fcnet.

``visualize_grid`` is NumPy only; ``fcnet.report.plots`` (matplotlib, Agg) and
``fcnet.report.render`` (jinja2) load on first use, so importing this package
stays cheap.
"""

from __future__ import annotations

from fcnet.report.grid import visualize_grid

__all__ = ["visualize_grid", "plots", "render"]


def __getattr__(name: str):
    # `from fcnet.report import plots` works either way; this also serves `fcnet.report.plots`
    if name in ("plots", "render"):
        import importlib

        return importlib.import_module(f"fcnet.report.{name}")
    raise AttributeError(name)
