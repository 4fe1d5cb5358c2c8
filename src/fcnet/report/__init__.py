"""Figures and the self-contained report of fcnet.

``visualize_grid`` is NumPy only; ``fcnet.report.plots`` (matplotlib) and
``fcnet.report.render`` (jinja2) are imported on demand, so this package stays cheap.
"""

from fcnet.report.grid import visualize_grid

__all__ = ["visualize_grid"]
