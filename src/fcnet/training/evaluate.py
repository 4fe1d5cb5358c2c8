"""Evaluate a finished run on a split, or predict classes of image files,
using exactly the run's saved preprocessing and parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.errors import FcnetError
from fcnet.training import rundir, torch_run
from fcnet.training.run import build_model
from fcnet.training.rundir import confusion, read_run_config

SPLITS = ("train", "val", "test")


class RunModel:
    """A trained run: its config, preprocessing and a predict_proba (N, D) -> (N, C).
    Every file it reads is checked against the sha256 recorded in summary.json."""

    def __init__(self, run_dir: Path):
        from fcnet.data import Preprocessor

        self.run_dir = Path(run_dir)
        self.config = c = read_run_config(self.run_dir)
        self.summary = summary = files.read_json(self.run_dir / rundir.SUMMARY)
        if not rundir.is_finished(summary):
            raise FcnetError(f"{run_dir}: the run has not finished (status "
                             f"{summary.get('status')!r}); resume it with fcnet train --resume")
        best = (self.run_dir / "best_params.npz").exists()
        weights = torch_run.WEIGHTS if c.backend == "torch" else "best_params.npz" if best else "params.npz"
        rundir.check_intact(self.run_dir, summary, [rundir.CONFIG, rundir.PREPROCESS, weights])
        self.prep = Preprocessor.from_state(files.load_npz(self.run_dir / rundir.PREPROCESS))
        self.classes: list[str] = summary.get("classes") or []
        self.image_shape = summary.get("image_shape")
        if c.backend == "torch":
            self._proba = torch_run.load_torch_model(self.run_dir, c, summary)
            return
        params, out = files.load_npz(self.run_dir / weights), f"b{len(c.hidden) + 1}"
        model = (build_model(c, params["W1"].shape[0], params[out].shape[0])
                 if "W1" in params and out in params else None)
        if model is None or set(params) != set(model.params):
            raise FcnetError(f"{self.run_dir / weights}: parameters do not match the config")
        model.params.update({k: v.astype(model.dtype) for k, v in params.items()})
        self._proba = model.predict_proba

    def predict_proba(self, x_raw: np.ndarray) -> np.ndarray:
        """Raw split rows (uint8 images or features) -> probabilities (N, C)."""
        return self._proba(self.prep.transform(x_raw))


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    """Accuracy, per-class accuracy and confusion matrix on a split."""
    from fcnet.data import load_splits

    if split not in SPLITS:
        raise FcnetError(f"split must be one of {SPLITS}, got {split!r}")
    rm = RunModel(run_dir)
    c = rm.config
    data = load_splits(c.dataset, c.path, val_size=c.val_size, test_size=c.test_size,
                       seed=c.split_seed, progress=False)
    want, got = rm.summary.get("split_hash"), data.meta.get("split", {}).get("hash")
    if want and got and want != got:
        raise FcnetError(f"{run_dir}: the dataset's split no longer matches the run's "
                         f"(hash {got} != {want}); the data changed since training")
    part = getattr(data, split)
    pred, y = np.argmax(rm.predict_proba(part.x), axis=1), np.asarray(part.y)
    cm = confusion(y, pred, len(data.classes))
    per_class = {name: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None
                 for i, name in enumerate(data.classes)}
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
    return [{"file": str(p), "top": [{"class": rm.classes[i], "probability": float(pr[i])}
                                     for i in np.argsort(-pr)[:top]]}
            for p, pr in zip(paths, rm.predict_proba(np.stack(rows)))]
