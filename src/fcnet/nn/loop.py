"""Moved to fcnet.nn.solver (kept while the torch backend moves over)."""

from fcnet.nn.solver import SAMPLING, draw_batch  # noqa: F401
