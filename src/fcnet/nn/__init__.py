"""The exact NumPy engine: layers, models, update rules and the training loop."""

from fcnet.nn.model import MLP, TwoLayerNet
from fcnet.nn.solver import Solver

__all__ = ["MLP", "TwoLayerNet", "Solver"]
