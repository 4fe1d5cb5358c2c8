"""Evaluate a finished run on a split, or predict classes of image files,
using exactly the run's saved preprocessing and parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.errors import FcnetError
from fcnet.nn.model import MLP
from fcnet.training import rundir
from fcnet.training.rundir import confusion, read_run_config

SPLITS = ("train", "val", "test")


class RunModel:
    """A trained run: its config, preprocessing and a predict_proba (N, D) -> (N, C).

    Every file it reads is checked against the sha256 recorded in summary.json.
    """

    def __init__(self, run_dir: Path):
        from fcnet.data import Preprocessor

        self.run_dir = Path(run_dir)
        self.config = read_run_config(self.run_dir)
        summary = files.read_json(self.run_dir / rundir.SUMMARY)
        if not rundir.is_finished(summary):
            raise FcnetError(f"{run_dir}: the run has not finished (status "
                             f"{summary.get('status')!r}); resume it with fcnet train --resume")
        self.summary = summary
        if self.config.backend == "torch":
            from fcnet.training.torch_run import WEIGHTS

            weights = WEIGHTS
        else:
            weights = "best_params.npz" if (self.run_dir / "best_params.npz").exists() \
                else "params.npz"
        rundir.check_intact(self.run_dir, summary, [rundir.CONFIG, rundir.PREPROCESS, weights])
        self.prep = Preprocessor.from_state(files.load_npz(self.run_dir / rundir.PREPROCESS))
        self.classes: list[str] = summary.get("classes") or []
        self.image_shape = summary.get("image_shape")
        if self.config.backend == "torch":
            from fcnet.training.torch_run import load_torch_model

            self._proba = load_torch_model(self.run_dir, self.config, summary)
        else:
            from fcnet.training.run import build_model

            params = files.load_npz(self.run_dir / weights)
            if f"b{len(self.config.hidden) + 1}" not in params or "W1" not in params:
                raise FcnetError(f"{self.run_dir / weights}: parameters do not match the config")
            num_classes = params[f"b{len(self.config.hidden) + 1}"].shape[0]
            model: MLP = build_model(self.config, params["W1"].shape[0], num_classes)
            if set(params) != set(model.params):
                raise FcnetError(f"{self.run_dir / weights}: parameters do not match the config")
            for k in model.params:
                model.params[k] = params[k].astype(model.dtype)
            self._proba = model.predict_proba

    def predict_proba(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw split rows (uint8 images or features) -> probabilities (N, C)."""
        return self._proba(self.prep.transform(x_raw))


def load_run_model(run_dir: Path) -> RunModel:
    return RunModel(run_dir)


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    """Accuracy, per-class accuracy and confusion matrix on a split."""
    from fcnet.data import load_splits

    if split not in SPLITS:
        raise FcnetError(f"split must be one of {SPLITS}, got {split!r}")
    rm = RunModel(run_dir)
    c = rm.config
    data = load_splits(c.dataset, c.path, val_size=c.val_size, test_size=c.test_size,
                       seed=c.split_seed, progress=False)
    want = rm.summary.get("split_hash")
    got = data.meta.get("split", {}).get("hash")
    if want and got and want != got:
        raise FcnetError(f"{run_dir}: the dataset's split no longer matches the run's "
                         f"(hash {got} != {want}); the data changed since training")
    part = getattr(data, split)
    proba = rm.predict_proba(part.x)
    pred = np.argmax(proba, axis=1)
    y = np.asarray(part.y)
    k = len(data.classes)
    cm = confusion(y, pred, k)
    per_class = {
        data.classes[i]: (float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None) for i in range(k)
    }
    return {"split": split, "n": int(y.shape[0]), "accuracy": float((pred == y).mean()),
            "per_class": per_class, "confusion": cm.tolist()}


def predict_files(run_dir: Path, paths: list[str], top: int = 3, resize: bool = False) -> list[dict]:
    """Top classes with probabilities for image files."""
    from PIL import Image, UnidentifiedImageError

    rm = RunModel(run_dir)
    if not rm.image_shape:
        raise FcnetError(f"{run_dir}: this run was not trained on images")
    h, w, ch = rm.image_shape
    rows = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("L" if ch == 1 else "RGB")
                if im.size != (w, h):
                    if not resize:
                        raise FcnetError(f"{p}: image is {im.size[0]}x{im.size[1]}, the run "
                                         f"expects {w}x{h} (pass --resize to resize it)")
                    im = im.resize((w, h), Image.BILINEAR)
                rows.append(np.asarray(im, dtype=np.uint8).reshape(h, w, ch))
        except FileNotFoundError:
            raise FcnetError(f"{p}: file not found") from None
        except (UnidentifiedImageError, OSError) as err:
            raise FcnetError(f"{p}: cannot decode image ({err})") from None
    proba = rm.predict_proba(np.stack(rows))
    out = []
    for p, pr in zip(paths, proba):
        order = np.argsort(-pr)[:top]
        out.append({"file": str(p), "top": [{"class": rm.classes[i], "probability": float(pr[i])}
                                           for i in order]})
    return out
