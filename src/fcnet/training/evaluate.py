"""Evaluate a finished run on a split, or predict classes of image files,
using exactly the run's saved preprocessing and parameters."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnet import files
from fcnet.errors import FcnetError
from fcnet.training import rundir, torch_run
from fcnet.training.run import build_model

SPLITS = ("train", "val", "test")


def load_run(run_dir: Path):
    """A finished run's config, summary and predict_proba: raw split rows (uint8 images or
    features) -> probabilities (N, C).  Every file read is checked against summary.json's sha256."""
    from fcnet.data import Preprocessor

    d = Path(run_dir)
    c, summary = rundir.read_run_config(d), files.read_json(d / rundir.SUMMARY)
    if not rundir.is_finished(summary):
        raise FcnetError(f"{run_dir}: the run has not finished (status "
                         f"{summary.get('status')!r}); resume it with fcnet train --resume")
    best = (d / "best_params.npz").exists()
    weights = torch_run.WEIGHTS if c.backend == "torch" else "best_params.npz" if best else "params.npz"
    for name, why in rundir.damaged(d, summary, [rundir.CONFIG, rundir.PREPROCESS, weights]).items():
        raise FcnetError(f"{d / name}: {why}; train the run again with fcnet train --resume {d}")
    prep = Preprocessor.from_state(files.load_npz(d / rundir.PREPROCESS))
    if c.backend == "torch":  # weights_only load
        from fcnet.torch_backend.train import TorchTrainer

        D, classes = summary["input_size"], summary["classes"]
        proba = TorchTrainer.load(d / weights, c, D, len(classes),
                                  torch_run.flat_images(summary.get("image_shape"), D), classes).predict_proba
    else:
        params, out = files.load_npz(d / weights), f"b{len(c.hidden) + 1}"
        model = (build_model(c, params["W1"].shape[0], params[out].shape[0])
                 if "W1" in params and out in params else None)
        if model is None or set(params) != set(model.params):
            raise FcnetError(f"{d / weights}: parameters do not match the config")
        model.params.update({k: v.astype(model.dtype) for k, v in params.items()})
        proba = model.predict_proba
    return c, summary, lambda x_raw: proba(prep.transform(x_raw))


def evaluate_run(run_dir: Path, split: str = "test") -> dict:
    """Accuracy, per-class accuracy and confusion matrix on a split."""
    from fcnet.data import load_splits

    if split not in SPLITS:
        raise FcnetError(f"split must be one of {SPLITS}, got {split!r}")
    c, summary, predict_proba = load_run(run_dir)
    data = load_splits(c.dataset, c.path, val_size=c.val_size, test_size=c.test_size,
                       seed=c.split_seed, progress=False)
    want, got = summary.get("split_hash"), data.meta.get("split", {}).get("hash")
    if want and got and want != got:
        raise FcnetError(f"{run_dir}: the dataset's split no longer matches the run's "
                         f"(hash {got} != {want}); the data changed since training")
    part = getattr(data, split)
    pred, y = np.argmax(predict_proba(part.x), axis=1), np.asarray(part.y)
    cm = rundir.confusion(y, pred, len(data.classes))
    per_class = {name: float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None
                 for i, name in enumerate(data.classes)}
    return {"split": split, "n": int(y.shape[0]), "accuracy": float((pred == y).mean()),
            "per_class": per_class, "confusion": cm.tolist()}


def predict_files(run_dir: Path, paths: list[str], top: int = 3, resize: bool = False) -> list[dict]:
    """Top classes with probabilities for image files."""
    from PIL import Image, UnidentifiedImageError

    _, summary, predict_proba = load_run(run_dir)
    if not summary.get("image_shape"):
        raise FcnetError(f"{run_dir}: this run was not trained on images")
    h, w, ch = summary["image_shape"]
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
    return [{"file": str(p), "top": [{"class": summary["classes"][i], "probability": float(pr[i])}
                                     for i in np.argsort(-pr)[:top]]}
            for p, pr in zip(paths, predict_proba(np.stack(rows)))]
