"""Moved to fcnet.nn.solver: a population is a Solver of K models."""

from fcnet.nn.solver import PopulationSolver  # noqa: F401
