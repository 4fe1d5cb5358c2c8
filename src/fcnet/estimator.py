"""``FCNetClassifier``: the NumPy engine as a scikit-learn classifier.  Its parameters resolve
into one ``RunConfig`` trained by the engine's one loop (``Solver``), as a NumPy run is."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fcnet.config import RunConfig, make_config
from fcnet.errors import FcnetError
from fcnet.nn.model import DTYPES
from fcnet.nn.optim import NUMPY_RULES, SETTINGS, Setting
from fcnet.nn.solver import SAMPLING, Solver
from fcnet.presets import available_presets
from fcnet.training.run import blas_threads, build_model, hyper

_SEED_MAX = np.iinfo(np.int32).max
# parameter -> RunConfig field where the names differ; every parameter but _OWN's is a field
_FIELDS = {"learning_rate": "lr", "learning_rate_decay": "decay", "num_iters": "iters"}
_OWN = {"preset", "hidden", "validation_fraction", "random_state", "verbose"}


class EstimatorError(FcnetError, ValueError):
    """A bad parameter or unusable data: fcnet's error and the ValueError scikit-learn expects."""


class ParameterError(EstimatorError, InvalidParameterError):
    """A parameter outside its declared constraints (also scikit-learn's own error)."""


def _interval(s: Setting) -> Interval:
    """An update-rule setting's bounds as scikit-learn's constraint (an open end excludes inf)."""
    closed = ("neither", "right", "left", "both")[2 * (s.ge is not None) + (s.le is not None)]
    return Interval(Real, s.ge if s.gt is None else s.gt, s.le if s.lt is None else s.lt, closed=closed)


class FCNetClassifier(ClassifierMixin, BaseEstimator):
    """Fully-connected ReLU network with softmax output, on fcnet's NumPy engine.

    With no arguments the ``general`` profile (Adam at lr 1e-3, Kaiming init, reg 1e-4, 100 hidden
    units, 1,000 iterations of batch 200) trains on any reasonably scaled data, as ``MLPClassifier()``
    does; ``preset="exercise"`` gives the course's CIFAR-10 numbers, for raw mean-subtracted pixels.
    Every other parameter left at None takes the preset's value (docs/estimator.md: the table).

    Parameters
    ----------
    preset : a preset of ``fcnet train --preset``, default 'general'
    hidden : int or tuple of int, hidden widths H_1, ..., H_{L-1}; ``()`` is softmax regression
    init : {'normal', 'kaiming'}, ``std * randn`` or ``sqrt(2 / fan_in) * randn`` (``std`` alone: normal)
    std, learning_rate : float
    learning_rate_decay : float, the lr multiplier per epoch of max(N // batch_size, 1) iterations
    reg : float, L2 strength: loss + reg * sum(W ** 2) over weight matrices (no 1/2, no biases)
    num_iters, batch_size : int, minibatch steps (not epochs) and rows per step
    optimizer : {'sgd', 'momentum', 'adam', 'rmsprop'}
    momentum, beta1, beta2, decay_rate, eps : float, settings the rules of ``fcnet.nn.optim`` declare
    sampling : {'replacement', 'shuffle'}, ``choice(N, B)`` per step or shuffled epochs (B capped at N)
    dropout_keep : float, inverted-dropout keep probability on the hidden layers; 1 disables it
    dtype : {'float64', 'float32'}
    validation_fraction : float, default 0.0, rows held out for ``val_acc_history_`` (0: none)
    random_state : int, RandomState or None, seeds the weights, batches, dropout masks and split
    verbose : bool, default False, print the loss every 100 iterations

    Attributes
    ----------
    classes_ : ndarray (C,), the sorted labels ``predict`` returns
    config_ : fcnet.config.RunConfig, the fit's resolved settings
    model_ : fcnet.MLP, the trained network (``model_.params``: W1 (D, H_1), b1, ...)
    loss_history_ : the minibatch loss of every iteration
    train_acc_history_, val_acc_history_, lr_history_ : per epoch
    n_iter_ : iterations run
    """

    def __init__(self, preset: str = "general", hidden: int | Sequence[int] | None = None,
                 init: str | None = None, std: float | None = None, learning_rate: float | None = None,
                 learning_rate_decay: float | None = None, reg: float | None = None,
                 num_iters: int | None = None, batch_size: int | None = None, optimizer: str | None = None,
                 momentum: float | None = None, beta1: float | None = None, beta2: float | None = None,
                 decay_rate: float | None = None, eps: float | None = None, sampling: str | None = None,
                 dropout_keep: float | None = None, dtype: str | None = None,
                 validation_fraction: float = 0.0, random_state=None, verbose: bool = False):
        # scikit-learn's convention: every parameter stored as given, nothing else
        vars(self).update({name: v for name, v in locals().items() if name != "self"})

    # checked by scikit-learn before fit (an open end excludes inf; no Interval holds NaN);
    # None: the preset's value
    _parameter_constraints: dict = {
        "preset": [StrOptions(set(available_presets()))],
        "hidden": ["array-like", Interval(Integral, 1, None, closed="left"), None],
        "init": [StrOptions({"normal", "kaiming"}), None],
        **dict.fromkeys(("std", "learning_rate"), [Interval(Real, 0, None, closed="neither"), None]),
        **dict.fromkeys(("learning_rate_decay", "dropout_keep"),
                        [Interval(Real, 0, 1, closed="right"), None]),
        "reg": [Interval(Real, 0, None, closed="left"), None],
        **dict.fromkeys(("num_iters", "batch_size"), [Interval(Integral, 1, None, closed="left"), None]),
        "optimizer": [StrOptions(set(NUMPY_RULES)), None],
        **{name: [_interval(s), None] for name, s in SETTINGS.items()},
        "sampling": [StrOptions(set(SAMPLING)), None],
        "dtype": [StrOptions(set(DTYPES)), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def _validate_params(self) -> None:
        """scikit-learn's declared checks, raised as fcnet's error too."""
        try:
            super()._validate_params()
        except InvalidParameterError as err:
            raise ParameterError(str(err)) from None

    def _config(self) -> RunConfig:
        """The fit's settings as one RunConfig: the preset under the parameters given."""
        values = {_FIELDS.get(name, name): v for name, v in self.get_params().items()
                  if name not in _OWN and v is not None}
        if self.hidden is not None:
            sizes = [self.hidden] if isinstance(self.hidden, Integral) else list(self.hidden)
            if not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
                raise ParameterError("The 'hidden' parameter of FCNetClassifier must be a positive int or "
                                     f"a sequence of them. Got {self.hidden!r} instead.")
            values["hidden"] = [int(s) for s in sizes]
        if self.std is not None and self.init is None:
            values["init"] = "normal"  # a scale given means the normal init it scales
        try:
            return make_config({**values, "dataset": "digits", "preset": self.preset,
                                "epochs": None, "tensorboard": False})
        except FcnetError as err:
            raise EstimatorError(f"FCNetClassifier: {err}") from None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> FCNetClassifier:
        """Train a fresh network on X (N, D) and labels y (N,) of any hashable type."""
        config = self._config()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        encoder = LabelEncoder()
        y_idx, self.classes_ = encoder.fit_transform(y), encoder.classes_

        # one generator hands out independent seeds, so an int random_state fixes the run
        rs = check_random_state(self.random_state)
        init_seed, solver_seed, split_seed = (int(s) for s in rs.randint(_SEED_MAX, size=3))
        X_tr, y_tr, X_val, y_val = X, y_idx, X[:1], y_idx[:1]  # the Solver wants a validation set
        if self.validation_fraction:  # else fit() drops this one
            n_val = max(1, int(self.validation_fraction * len(X)))
            if n_val >= len(X):  # only when n == 1, as validation_fraction < 1
                raise EstimatorError(f"FCNetClassifier: cannot hold out validation_fraction="
                                     f"{self.validation_fraction} of {len(X)} sample; set it to 0 or "
                                     "pass more rows")
            X_tr, X_val, y_tr, y_val = train_test_split(X, y_idx, test_size=n_val, random_state=split_seed)
        if config.sampling == "shuffle":
            config = config.model_copy(update={"batch_size": min(config.batch_size, len(X_tr))})
        model = build_model(config.model_copy(update={"seed": init_seed}), X.shape[1], len(self.classes_))
        hp = hyper([config.model_copy(update={"seed": solver_seed})], len(X_tr))
        solver = Solver(model, X_tr, y_tr, X_val, y_val, hp, verbose=self.verbose)
        with blas_threads(config, X.shape[1]):
            solver.run()
        if solver.diverged_at[0] is not None:
            raise EstimatorError(f"FCNetClassifier: training diverged at iteration {solver.diverged_at[0]} "
                                 f"(loss {solver.loss_history[-1]}); lower learning_rate (got {config.lr}) "
                                 f"or the init scale (init {config.init!r}, std {config.std})")
        self.config_, self.model_, self.n_iter_ = config, model, solver.it
        for name, values in solver.history().items():  # loss_history_, train_acc_history_, ...
            setattr(self, f"{name}_", values)
        if not self.validation_fraction:
            self.val_acc_history_ = []
        return self

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C), columns in the order of ``classes_``."""
        X = self._validated(X)  # first: unfitted is scikit-learn's NotFittedError
        return self.model_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        """Most probable class label (N,), taken from ``classes_``."""
        X = self._validated(X)
        return self.classes_.take(self.model_.predict(X))
