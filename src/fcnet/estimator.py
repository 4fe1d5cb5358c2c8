"""``FCNetClassifier``: the NumPy engine as a scikit-learn classifier.

It wraps ``fcnet.MLP`` and ``fcnet.nn.solver.Solver`` unchanged, so a fit is
exactly the exercise's training loop (minibatches drawn with replacement, an lr
decay at iteration 0 and every max(N // B, 1) iterations), and the estimator
drops into ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from fcnet.errors import FcnetError
from fcnet.nn.solver import SAMPLING
from fcnet.nn.model import DTYPES, MLP
from fcnet.nn.optim import NUMPY_RULES, SETTINGS, Setting, rule
from fcnet.nn.solver import Solver

_SEED_MAX = np.iinfo(np.int32).max


class EstimatorError(FcnetError, ValueError):
    """A bad parameter or unusable data given to ``FCNetClassifier``.

    Both fcnet's error (the CLI shows it as one line) and a ValueError, which is
    what scikit-learn's tools and checks expect from an estimator.
    """


class ParameterError(EstimatorError, InvalidParameterError):
    """A parameter outside its declared constraints (also scikit-learn's own error)."""


def _interval(s: Setting) -> Interval:
    """An update-rule setting's bounds as scikit-learn's constraint; an open end
    (no bound) excludes +-inf, and an Interval never holds NaN."""
    left = s.gt if s.gt is not None else s.ge
    right = s.lt if s.lt is not None else s.le
    closed = {(True, True): "both", (True, False): "left", (False, True): "right",
              (False, False): "neither"}[(s.ge is not None, s.le is not None)]
    return Interval(Real, left, right, closed=closed)


class FCNetClassifier(ClassifierMixin, BaseEstimator):
    """Fully-connected ReLU network with softmax output, trained by the exercise's SGD.

    Defaults are the exercise's CIFAR-10 settings (study.md Q3: hidden 50, init std
    1e-4, batch 200, decay 0.95, reg 0.25, 1,000 iterations) with lr 1e-3 (Table 2),
    tuned for raw, mean-subtracted pixels.  Standardised features (e.g. after
    ``StandardScaler``) want a larger ``std`` (about 1e-2) and ``learning_rate``.

    Parameters
    ----------
    hidden : int or tuple of int, default (50,)
        Hidden layer widths H_1, ..., H_{L-1}; ``()`` is softmax regression.
    std : float, default 1e-4
        Initial weights are ``std * randn``, biases 0.
    learning_rate : float, default 1e-3
    learning_rate_decay : float, default 0.95
        lr is multiplied by this once per epoch of max(N // batch_size, 1) iterations.
    reg : float, default 0.25
        L2 strength: loss + reg * sum(W ** 2) over weight matrices (no 1/2, no biases).
    num_iters : int, default 1000
        Minibatch steps (not epochs).
    batch_size : int, default 200
        Rows per step; larger than N is fine with ``sampling='replacement'``.
    optimizer : {'sgd', 'momentum', 'adam', 'rmsprop'}, default 'sgd'
        A NumPy update rule of ``fcnet.nn.optim.RULES``.
    momentum, beta1, beta2, decay_rate, eps : float
        The update rules' settings, declared (defaults and bounds) by the rules
        in ``fcnet.nn.optim``; each rule reads only its own: momentum (0.9) for
        'momentum', beta1 (0.9), beta2 (0.999) and eps (1e-8) for 'adam',
        decay_rate (0.99) and eps for 'rmsprop'.
    sampling : {'replacement', 'shuffle'}, default 'replacement'
        The exercise's ``choice(N, B)`` per step, or shuffled epochs (the batch is
        then capped at N).
    dropout_keep : float, default 1.0
        Inverted-dropout keep probability on the hidden layers; 1 disables it.
    dtype : {'float64', 'float32'}, default 'float64'
    validation_fraction : float, default 0.0
        Fraction of the training rows held out (at random) for ``val_acc_history_``;
        0 trains on every row and leaves that history empty.
    random_state : int, RandomState or None, default None
        Seeds the weights, the batches, the dropout masks and the validation split.
    verbose : bool, default False
        Print the loss every 100 iterations.

    Attributes
    ----------
    classes_ : ndarray (C,)
        The class labels, sorted; ``predict`` returns these.
    n_features_in_ : int
        D, the number of input features.
    feature_names_in_ : ndarray (D,)
        Column names, when X was a DataFrame with string column names.
    model_ : fcnet.MLP
        The trained network (``model_.params`` holds W1 (D, H_1), b1, ...).
    loss_history_ : list of float
        Training loss of every iteration's minibatch (num_iters values).
    train_acc_history_, val_acc_history_, lr_history_ : list of float
        Per epoch: accuracy on the current batch, on the held-out rows (empty
        without ``validation_fraction``), and the lr used during that epoch.
    n_iter_ : int
        Iterations run.
    """

    def __init__(
        self,
        hidden: int | Sequence[int] = (50,),
        std: float = 1e-4,
        learning_rate: float = 1e-3,
        learning_rate_decay: float = 0.95,
        reg: float = 0.25,
        num_iters: int = 1000,
        batch_size: int = 200,
        optimizer: str = "sgd",
        momentum: float = SETTINGS["momentum"].default,
        beta1: float = SETTINGS["beta1"].default,
        beta2: float = SETTINGS["beta2"].default,
        decay_rate: float = SETTINGS["decay_rate"].default,
        eps: float = SETTINGS["eps"].default,
        sampling: str = "replacement",
        dropout_keep: float = 1.0,
        dtype: str = "float64",
        validation_fraction: float = 0.0,
        random_state=None,
        verbose: bool = False,
    ):
        self.hidden = hidden
        self.std = std
        self.learning_rate = learning_rate
        self.learning_rate_decay = learning_rate_decay
        self.reg = reg
        self.num_iters = num_iters
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.beta1 = beta1
        self.beta2 = beta2
        self.decay_rate = decay_rate
        self.eps = eps
        self.sampling = sampling
        self.dropout_keep = dropout_keep
        self.dtype = dtype
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ validation
    # checked by scikit-learn before fit (an open end excludes inf; no Interval holds NaN)
    _parameter_constraints: dict = {
        "hidden": ["array-like", Interval(Integral, 1, None, closed="left")],
        "std": [Interval(Real, 0, None, closed="neither")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "learning_rate_decay": [Interval(Real, 0, None, closed="neither")],
        "reg": [Interval(Real, 0, None, closed="left")],
        "num_iters": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(NUMPY_RULES))],
        **{name: [_interval(s)] for name, s in SETTINGS.items()},
        "sampling": [StrOptions(set(SAMPLING))],
        "dropout_keep": [Interval(Real, 0, 1, closed="right")],
        "dtype": [StrOptions(set(DTYPES))],
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

    def _hidden_sizes(self) -> list[int]:
        """hidden as a list of positive widths (an int means one hidden layer)."""
        h = self.hidden
        sizes = [h] if isinstance(h, Integral) else list(h)
        if not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ParameterError(
                "The 'hidden' parameter of FCNetClassifier must be a positive int or a "
                f"sequence of them. Got {h!r} instead."
            )
        return [int(s) for s in sizes]

    # -------------------------------------------------------------- training
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y) -> FCNetClassifier:
        """Train a fresh network on X (N, D) and labels y (N,) of any hashable type."""
        hidden = self._hidden_sizes()
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32))
        check_classification_targets(y)
        encoder = LabelEncoder()
        y_idx = encoder.fit_transform(y)
        self.classes_ = encoder.classes_

        # one generator hands out independent seeds, so an int random_state fixes the run
        rs = check_random_state(self.random_state)
        init_seed, solver_seed, split_seed = (int(s) for s in rs.randint(_SEED_MAX, size=3))
        X_tr, y_tr, X_val, y_val = self._split(X, y_idx, split_seed)
        batch = self.batch_size
        if self.sampling == "shuffle":
            batch = min(batch, X_tr.shape[0])  # a shuffled epoch has only N rows

        model = MLP(
            X.shape[1], hidden, len(self.classes_), std=self.std,
            dropout_keep=self.dropout_keep, seed=init_seed, dtype=self.dtype,
        )
        solver = Solver(
            model, X_tr, y_tr, X_val, y_val,
            learning_rate=self.learning_rate, learning_rate_decay=self.learning_rate_decay,
            reg=self.reg, num_iters=self.num_iters, batch_size=batch, verbose=self.verbose,
            seed=solver_seed, optimizer=self.optimizer,
            optim_config={k: getattr(self, k) for k in rule(self.optimizer).settings},
            sampling=self.sampling,
        )
        solver.run()
        if solver.diverged_at is not None:
            raise EstimatorError(
                f"FCNetClassifier: training diverged at iteration {solver.diverged_at} "
                f"(loss {solver.loss_history[-1]}); lower learning_rate "
                f"(got {self.learning_rate}) or std (got {self.std})"
            )
        self.model_ = model
        self.loss_history_ = list(solver.loss_history)
        self.train_acc_history_ = list(solver.train_acc_history)
        self.val_acc_history_ = list(solver.val_acc_history) if self.validation_fraction else []
        self.lr_history_ = list(solver.lr_history)
        self.n_iter_ = solver.it
        return self

    def _split(self, X, y, seed: int):
        """Hold out validation_fraction of the rows at random (at least one, if any)."""
        n = X.shape[0]
        if not self.validation_fraction:
            # the Solver wants a non-empty validation set; one training row costs
            # nothing, and fit() discards that history
            return X, y, X[:1], y[:1]
        n_val = max(1, int(self.validation_fraction * n))
        if n_val >= n:  # only when n == 1, as validation_fraction < 1
            raise EstimatorError(
                f"FCNetClassifier: cannot hold out validation_fraction="
                f"{self.validation_fraction} of {n} sample; set it to 0 or pass more rows"
            )
        order = np.random.RandomState(seed).permutation(n)
        val, tr = order[:n_val], order[n_val:]
        return X[tr], y[tr], X[val], y[val]

    # ------------------------------------------------------------ prediction
    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, reset=False, dtype=(np.float64, np.float32))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, C), columns in the order of ``classes_``."""
        X = self._validated(X)
        return self.model_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        """Most probable class label (N,), taken from ``classes_``."""
        X = self._validated(X)
        return self.classes_.take(self.model_.predict(X))
