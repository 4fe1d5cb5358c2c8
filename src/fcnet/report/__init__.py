"""Figures and the self-contained report of fcnet.  Only ``visualize_grid`` (NumPy) loads
here: ``plots`` (matplotlib) and ``render`` (jinja2) are imported on demand."""

from fcnet.report.grid import visualize_grid

__all__ = ["visualize_grid"]
