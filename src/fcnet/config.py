"""One validated config object per run, saved beside its results as TOML.  Defaults are the
exercise's baseline (study.md Q3); any bad value fails before work starts, naming the field."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fcnet.data.load import DATASETS
from fcnet.errors import FcnetError
from fcnet.nn.optim import RULES, SETTINGS, rule


def _rule_field(name: str):
    """A config field for update-rule setting ``name``, declared by the rule (nn.optim)."""
    s = SETTINGS[name]
    return Field(s.default, gt=s.gt, ge=s.ge, lt=s.lt, le=s.le, description=s.help)


class RunConfig(BaseModel):
    """Every hyper-parameter of a training run."""

    # allow_inf_nan=False: every float field refuses NaN and +-inf, from flags, TOML or code
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    # data
    dataset: str = Field("cifar10", description=" | ".join(DATASETS))
    path: str | None = Field(None, description="local copy of the dataset (file or directory)")
    val_size: int | None = Field(None, ge=1, description="validation rows (None: the dataset's default)")
    test_size: int | None = Field(None, ge=1, description="test rows (None: all of the test split)")
    split_seed: int = Field(0, ge=0, description="seed of the train/val/test split")
    preprocess: Literal["mean", "channel", "scale", "zca", "none"] = Field(
        "mean", description="mean-image subtraction | per-channel (x/255-0.5)/0.5 | x/255 | "
        "ZCA whitening fitted on train | none (default: mean on numpy, channel on torch)"
    )
    zca_eps: float = Field(0.1, gt=0, description="ZCA regulariser, in [0, 1]-pixel variance units")
    pca: float | None = Field(
        None, gt=0, description="PCA components: a count (>= 1) or a variance fraction in (0, 1)"
    )
    pca_whiten: bool = Field(False, description="whiten the PCA components (unit variance)")

    # model
    backend: Literal["numpy", "torch"] = Field(
        "numpy", description="numpy (the exact engine) | torch (PyTorch, CPU or CUDA)")
    hidden: list[int] = Field(default_factory=lambda: [50],
                              description="hidden sizes, e.g. [100, 50] ([] is softmax regression)")
    std: float = Field(1e-4, gt=0, description="init: weights ~ std * randn")
    init: str = Field("normal", description="init: normal (std * randn) | normal:<std> | kaiming "
                      "(sqrt(2 / fan_in) * randn) | default (torch's own)")
    dropout_keep: float = Field(1.0, gt=0, le=1, description="keep probability of inverted dropout")
    batchnorm: bool = Field(False, description="torch: BatchNorm after each hidden Linear")
    activation: Literal["relu", "gelu"] = Field("relu", description="torch: hidden nonlinearity")

    # optimisation
    optimizer: Literal[tuple(RULES)] = Field(  # type: ignore[valid-type]
        "sgd", description="update rule: " + " | ".join(
            name + ("" if r.numpy else " (torch)") for name, r in RULES.items()))
    lr: float = Field(1e-4, gt=0, description="learning rate")
    decay: float = Field(0.95, gt=0, le=1, description="lr multiplier per epoch")
    schedule: Literal["step", "cosine"] = Field(
        "step", description="step: lr *= decay per epoch | cosine (torch)")
    # the update rules' own settings (each rule reads only its own; see optim_config)
    momentum: float = _rule_field("momentum")
    beta1: float = _rule_field("beta1")
    beta2: float = _rule_field("beta2")
    decay_rate: float = _rule_field("decay_rate")
    eps: float = _rule_field("eps")
    reg: float = Field(0.25, ge=0, description="L2: reg * sum(W**2), gradient 2 reg W")
    weight_decay: float | None = Field(None, ge=0, description="torch weight decay (None: 2 * reg)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="torch: label smoothing")
    mixup: float = Field(0.0, ge=0, description="torch: mixup, lam ~ Beta(a, a) (0: off)")
    ema: float = Field(0.0, ge=0, lt=1, description="torch: average the weights, avg <- ema avg + "
                       "(1 - ema) w per step (0: off)")
    augment: bool = Field(False, description="torch: random crop and horizontal flip of images")
    iters: int | None = Field(1000, ge=1, description="training length in iterations")
    epochs: int | None = Field(None, ge=1, description="training length in epochs (overrides iters)")
    time_budget: float | None = Field(
        None, gt=0, description="torch: train about this long (seconds, or 90s, 15m, 1h): the "
        "length in epochs, set from step times measured at the start, replaces epochs and iters")
    batch_size: int = Field(200, ge=1, description="minibatch size")
    sampling: Literal["replacement", "shuffle"] = Field(
        "replacement", description="minibatches drawn with replacement (the exercise) | shuffled epochs")
    seed: int = Field(0, ge=0, description="seed of the initial weights and the minibatch stream")
    dtype: Literal["float32", "float64", "bfloat16"] = Field(
        "float64", description="float64 (exact, the default) | float32 (fast) | "
        "bfloat16 (torch: bf16 products, float32 weights and updates)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="torch device; auto picks CUDA when present")
    amp: bool | None = Field(None, description="torch bf16 autocast (None: CUDA float32 only)")
    keep_best: bool = Field(False, description="also keep the parameters of the best val epoch")
    tensorboard: bool = Field(True, description="write TensorBoard event files into the run's tb/")

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of {', '.join(DATASETS)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        # fields not given take the named preset's (config.toml keeps the resolved fields, not
        # 'preset'); without the key torch runs take 'general', NumPy runs the field defaults;
        # preset=None means the caller already applied one.
        if isinstance(data, dict):
            data = dict(data)
            auto = "general" if data.get("backend") == "torch" else None
            name = data.pop("preset", auto)
            if name is not None:
                from fcnet.presets import load_preset

                try:
                    data = {**load_preset(name), **data}
                except FcnetError as err:
                    raise ValueError(str(err)) from None
        return data

    @field_validator("time_budget", mode="before")
    @classmethod
    def _budget_seconds(cls, v: Any, info) -> Any:
        if info.data.get("backend") == "numpy" and v is not None:
            raise ValueError("a time budget needs --backend torch")
        if info.data.get("epochs") is not None and v is not None:
            raise ValueError("sets the length in epochs: give epochs or time_budget, not both")
        if isinstance(v, str):
            units = {"s": 1, "m": 60, "h": 3600}
            try:
                return float(v[:-1]) * units[v[-1]] if v[-1:] in units else float(v)
            except ValueError:
                raise ValueError(f"expected seconds or a number with s, m or h, got {v!r}") from None
        return v

    @field_validator("hidden")
    @classmethod
    def _hidden_positive(cls, v: list[int]) -> list[int]:
        if any(h <= 0 for h in v):  # [] is softmax regression
            raise ValueError("every hidden size must be a positive integer")
        return v

    @field_validator("init")
    @classmethod
    def _init_known(cls, v: str) -> str:
        kind, _, arg = v.partition(":")
        if kind not in ("normal", "kaiming", "default") or (arg and kind != "normal"):
            raise ValueError("must be normal, normal:<std>, kaiming or default")
        try:
            if arg and float(arg) <= 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"normal:<std> needs a positive std, got {arg!r}") from None
        return v

    @model_validator(mode="after")
    def _pca_count(self) -> RunConfig:
        if self.pca is not None and self.pca >= 1 and self.pca != int(self.pca):
            raise ValueError("pca: a count must be an integer (or a fraction in (0, 1))")
        if self.pca is not None and self.preprocess == "zca":
            raise ValueError("pca: ZCA keeps every pixel; use preprocess zca or pca, not both")
        if self.backend == "numpy":
            if self.dtype == "bfloat16":
                raise ValueError("dtype='bfloat16' needs --backend torch (bf16 mixed precision)")
            if not rule(self.optimizer).numpy:
                raise ValueError(f"optimizer={self.optimizer!r} needs --backend torch")
            for key in ("batchnorm", "activation", "schedule", "label_smoothing", "mixup", "augment",
                        "amp", "ema", "weight_decay"):
                if (value := getattr(self, key)) != type(self).model_fields[key].default:
                    raise ValueError(f"{key}={value!r} needs --backend torch")
            if self.init == "default":
                raise ValueError("init='default' (torch's own) needs --backend torch "
                                 "(the NumPy engine draws normal or kaiming weights)")
        return self

    def init_std(self) -> float:
        """The normal init's std: from ``init='normal:<std>'`` or ``std``."""
        _, _, arg = self.init.partition(":")
        return float(arg) if arg else self.std

    def optim_config(self) -> dict[str, float]:
        """The chosen update rule's own settings, e.g. {'momentum': 0.9}."""
        return {k: getattr(self, k) for k in rule(self.optimizer).settings}

    def length(self, n_train: int) -> tuple[int, int]:
        """(total iterations, iterations per epoch = max(N // B, 1)); epochs, when set, beat iters."""
        per_epoch = max(n_train // self.batch_size, 1)
        return (self.epochs * per_epoch if self.epochs is not None else int(self.iters)), per_epoch

    def key(self) -> str:
        """12 hex digits of the sha256 of the fields that differ from their defaults: a new
        field (at a default that keeps old behaviour) leaves every existing key unchanged."""
        dump = self.model_dump_json(exclude_defaults=True)
        return hashlib.sha256(dump.encode()).hexdigest()[:12]

    def to_toml(self) -> str:
        """The config as TOML, None fields left out (TOML has no null: absent means default)."""
        return tomli_w.dumps({k: v for k, v in self.model_dump().items() if v is not None})


def make_config(values: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """Validate values (+ overrides, where None means 'not given'); a one-line FcnetError on failure."""
    try:
        return RunConfig(**(values or {}) | {k: v for k, v in overrides.items() if v is not None})
    except ValidationError as err:
        e, *others = err.errors()
        field = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"].removeprefix("Value error, ")
        where = f"config field '{field}'" if field else "config"
        raise FcnetError(f"{where}: {msg}" + (f" (and {len(others)} more)" if others else "")) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise FcnetError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise FcnetError(f"{path}: not valid TOML ({err})") from None


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """A config from a TOML file (optional) with flag overrides on top."""
    return make_config(read_toml(path) if path else {}, **overrides)
