"""fcnet: fully-connected neural networks for image classification."""

from importlib.metadata import PackageNotFoundError, version

from fcnet.errors import FcnetError
from fcnet.nn import MLP, Solver, TwoLayerNet

try:
    __version__ = version("fcnet")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["MLP", "TwoLayerNet", "Solver", "FcnetError", "FCNetClassifier", "__version__"]


def __getattr__(name):
    # the scikit-learn estimator loads lazily, so `import fcnet` stays fast
    if name == "FCNetClassifier":
        from fcnet.estimator import FCNetClassifier

        return FCNetClassifier
    raise AttributeError(name)
