"""Each check's value from what the child returned, against fcnet's own net on the same inputs, in the
grader's process: ``(value, note, detail)`` (detail: the toy loss curve) or ``Failed`` with a reason."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import fcnet
from fcnet.check import EXPECTED_LOSS, EXPECTED_PROBS, EXPECTED_TOY_FINAL_LOSS, THRESHOLDS
from fcnet.gradcheck import rel_error
from fcnet.grade.plan import LARGE_SCALE, PARAMS, SCALING_SIZES, TOY_REG, TOY_TRAINING, Case, Plan
from fcnet.grade.static import find_loops
from fcnet.nn.model import TwoLayerNet

FEEDBACK = "feedback (the course does not ask for it; 0 points in the default rubric)"
FEEDBACK_Q2 = ("feedback (the course asks Q1c's vectorisation of the forward pass and loss; "
               "0 points in the default rubric)")


class Failed(Exception):
    """The check fails for the reason given (no value)."""


@dataclass
class Seen:
    """What a check is judged on."""

    outputs: list  # one per step
    passed: dict[str, bool]  # earlier checks' verdicts
    folder: Path | None  # the submission's staged folder
    imports: list | None  # [name, file] of each module it asked for or loaded (None: never recorded)


def _arr(value, shape: tuple | None, what: str) -> np.ndarray:
    """A returned value as a float array of ``shape``; Failed with the child's error or a wrong shape."""
    if isinstance(value, dict):
        raise Failed(str(value.get("error", f"{what}: no value"))[:300])
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise Failed(f"{what} is not an array of numbers") from None
    if shape is not None and a.shape != shape:
        raise Failed(f"{what} has shape {a.shape}, expected {shape}")
    return a


def _out(seen: Seen, i: int) -> dict:
    o = seen.outputs[i] if i < len(seen.outputs) else {"error": "no output"}
    if not isinstance(o, dict):
        raise Failed("the child returned something that is not a record")
    if "error" in o and len(o) == 1:
        raise Failed(str(o["error"])[:300])
    return o


def _ref_loss(case: Case, reg: float) -> tuple[float, dict]:
    loss, grads = case.reference().loss(case.X, case.y, reg=reg)
    return float(loss), grads


def _where(case: Case) -> str:
    D, H, C = case.dims
    return ("the toy example" if case.name == "toy"
            else f"random inputs (N {len(case.y)}, D {D}, H {H}, C {C})")


def own_code(seen: Seen, plan: Plan):
    home = Path(fcnet.__file__).resolve().parent
    bad = []
    for name, file in seen.imports:
        with contextlib.suppress(OSError, ValueError):
            if name.split(".")[0] == "fcnet" or (file and Path(file).resolve().is_relative_to(home)):
                bad.append(name)
    if bad:
        raise Failed(f"imports {', '.join(sorted(set(bad))[:3])}: fcnet is a reference implementation, "
                     "not the student's own code (the score is 0)")
    return None, "imports nothing of fcnet's", None


def init(seen: Seen, plan: Plan):
    worst, notes = 0.0, []
    for i, step in enumerate(plan.steps["init"]):  # toy, then random dims, std and seed
        ref = TwoLayerNet(*step["dims"], std=step["std"], seed=step["seed"])  # as np.random.seed(seed)
        o = _out(seen, i)
        for k in PARAMS:
            got = _arr(o.get(k, {"error": f"params lacks {k}"}), ref.params[k].shape, f"params[{k!r}]")
            worst = max(worst, float(np.max(np.abs(got - ref.params[k]))))
        if i == 0 and worst >= 1e-12:
            notes.append("draw W1 then W2 as std * np.random.randn(...), biases zero")
    return worst, "; ".join(notes), None


def q1_scores(seen: Seen, plan: Plan):
    worst, notes = 0.0, []
    for i, case in enumerate((plan.toy, plan.rand)):
        want = EXPECTED_PROBS if case.name == "toy" else case.reference().loss(case.X)
        probs = _arr(_out(seen, i).get("probs"), want.shape, "loss(X)")
        diff = float(np.sum(np.abs(probs - want)))
        if not math.isfinite(diff) or diff >= THRESHOLDS["scores_diff"]:
            notes.append(f"{_where(case)}: {diff:.2e}")
            if np.all(np.isfinite(probs)) and not np.allclose(probs.sum(axis=1), 1.0):
                notes.append("rows do not sum to 1: loss(X) must return probabilities, not scores")
        worst = max(worst, diff) if math.isfinite(diff) else math.nan
    if len(notes) == 1 and notes[0].startswith("random") and not math.isnan(worst):
        notes.append("the toy example is right: published numbers memorised?")
    return worst, "; ".join(notes), None


def q1_stable(seen: Seen, plan: Plan):
    want = plan.toy.reference().loss(plan.toy.X * LARGE_SCALE)
    with np.errstate(all="ignore"):
        probs = _arr(_out(seen, 0).get("probs"), want.shape, "loss(X)")
        value = float(np.sum(np.abs(probs - want)))
    note = "" if np.all(np.isfinite(probs)) else "NaN or inf: subtract each row's max before exp"
    return value, "; ".join(x for x in (note, FEEDBACK) if x), None


def q1_loss(seen: Seen, plan: Plan):
    cases = [(plan.toy, TOY_REG), (plan.rand, plan.regs[0]), (plan.rand, plan.regs[1])]
    worst, wrong, implied, gots, toy_ok = 0.0, [], [], [], False
    for i, (case, reg) in enumerate(cases):
        got = float(_arr(_out(seen, i).get("loss", {"error": "loss(X, y, reg): no loss"}), (),
                         "loss(X, y, reg)"))
        gots.append(got)
        want = EXPECTED_LOSS if case.name == "toy" else _ref_loss(case, reg)[0]
        diff = abs(got - want)
        worst = max(worst, diff) if math.isfinite(diff) else math.nan
        l2 = float(sum(np.sum(case.params[k] ** 2) for k in ("W1", "W2")))
        implied.append((got - _ref_loss(case, 0.0)[0]) / l2)  # the reg the student's L2 term acts as
        if not diff < THRESHOLDS["loss_diff"]:
            wrong.append(f"{_where(case)} at reg {reg:g}")
        elif i == 0:
            toy_ok = True
    note, regs = "", [r for _, r in cases]
    if wrong and len(set(gots)) == 1:
        note = f"loss(X, y, reg) returns {gots[0]:.4g} whatever the inputs: nothing is computed yet"
    elif wrong and all(abs(v) < 1e-9 for v in implied):
        note = "matches the loss without the L2 term"
    elif wrong and all(abs(v - 0.5 * r) < 1e-9 * max(1, r) for v, r in zip(implied, regs)):
        note = "matches 0.5 * reg * sum(W**2): study.md's L2 has no 1/2"
    elif wrong and toy_ok and abs(implied[1] - implied[2]) < 1e-9 and abs(implied[1] - regs[1]) > 1e-6:
        note = (f"right at reg {TOY_REG:g} but the L2 term ignores reg: it acts as reg {implied[1]:.4g} "
                f"for reg {regs[1]:g} and {regs[2]:g}: is reg hard-coded?")
    elif wrong:
        note = "wrong on " + ", ".join(wrong)
    return worst, note, None


def q2_gradients(seen: Seen, plan: Plan):
    cases = [(plan.toy, TOY_REG), (plan.rand, plan.regs[0])]
    errs = dict.fromkeys(PARAMS, 0.0)
    for i, (case, reg) in enumerate(cases):
        grads = _out(seen, i).get("grads", {"error": "no gradients returned"})
        if isinstance(grads, dict) and "error" in grads and len(grads) == 1:
            raise Failed(str(grads["error"])[:300])
        _, ref = _ref_loss(case, reg)
        for k in PARAMS:
            errs[k] = max(errs[k], rel_error(_arr(grads.get(k), ref[k].shape, f"grads[{k!r}]"), ref[k]))
    value = max(errs.values())
    note = ", ".join(f"{k} {errs[k]:.1e}" for k in PARAMS)
    if not value < THRESHOLDS["rel_error"]:
        if _matches(seen, 0, _ref_loss(plan.toy, TOY_REG)[1]) and \
                _matches(seen, 1, _ref_loss(plan.rand, TOY_REG)[1]):
            note += (f"; right at reg {TOY_REG:g}, but at reg {plan.regs[0]:g} the gradients are those of "
                     f"reg {TOY_REG:g}: is reg hard-coded?")
        elif _matches(seen, 2, _ref_loss(plan.toy, 0.0)[1]):
            note += "; right without reg: is the 2 * reg * W term there?"
    return value, note, None


def _matches(seen: Seen, i: int, ref: dict) -> bool:
    """Whether step ``i`` returned the gradients ``ref``."""
    try:
        grads = _out(seen, i).get("grads")
        return all(rel_error(_arr(grads[k], ref[k].shape, k), ref[k]) < 1e-8 for k in PARAMS)
    except (Failed, KeyError, TypeError):
        return False


def _loops(seen: Seen, plan: Plan, part: str, need: str, clean: str, tail: tuple = ()):
    """The loops over data in the ``part`` pass (``clean`` when none), once ``need`` passed."""
    if not seen.passed.get(need):
        raise Failed(f"not judged: {need} must pass first (code that computes nothing has no loops)")
    try:
        found = [f for f in find_loops(seen.folder) if f.part == part] if seen.folder else []
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise Failed(f"cannot read the source: {type(err).__name__}") from None
    note = "; ".join(f"{f.file}:{f.line} `{f.code}`" for f in found[:3]) + \
        (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return float(len(found)), "; ".join([note or clean, *tail]), None


def q1c_scaling(seen: Seen, plan: Plan):
    if not seen.passed.get("q1_scores"):
        raise Failed("not timed: q1_scores must pass first (a forward pass that computes nothing is not "
                     "vectorised)")
    o = _out(seen, 0)
    losses = o.get("loss", [])
    if not (isinstance(losses, list) and len(losses) == len(SCALING_SIZES)
            and all(isinstance(v, int | float) and math.isfinite(v) for v in losses)):
        raise Failed("not timed: loss(X, y) did not return a finite loss at every size")
    if len(set(losses)) == 1:
        raise Failed(f"not timed: loss(X, y) returns {losses[0]:.4g} for N {SCALING_SIZES[0]} and "
                     f"{SCALING_SIZES[1]}: it computes nothing to time")
    yours, unit = (_arr(o.get(k), (len(SCALING_SIZES),), f"{k} times") for k in ("yours", "yardstick"))
    dn = SCALING_SIZES[1] - SCALING_SIZES[0]
    slope, base = (yours[1] - yours[0]) / dn, (unit[1] - unit[0]) / dn
    value = max(slope, 0.0) / max(base, 1e-9)
    return value, f"{slope * 1e6:.3g} us per sample (a plain vectorised loss {base * 1e6:.2g})", None


def q3_toy_training(seen: Seen, plan: Plan):
    o = _out(seen, 0)
    hist = _arr(o.get("loss_history"), None, "train's loss_history").ravel()
    if hist.size == 0:
        raise Failed("train returned an empty 'loss_history'")
    params, case = o.get("params"), plan.toy
    trained = case.reference()
    for k in PARAMS:
        trained.params[k][...] = _arr(params.get(k) if isinstance(params, dict) else None,
                                      trained.params[k].shape, f"params[{k!r}] after train")
    start = _ref_loss(case, TOY_TRAINING["reg"])[0]
    actual = float(trained.loss(case.X, case.y, reg=TOY_TRAINING["reg"])[0])
    final = float(hist[-1])
    value = max(final, actual)
    if not actual < start:
        note = (f"training did not reduce the loss: the weights after train give {actual:.4g} on the toy "
                f"data, {start:.4g} before (the reported final loss is {final:.4g})")
    elif abs(final - EXPECTED_TOY_FINAL_LOSS) < 1e-12:
        note = "the course's exact 0.01714960793873205"
    else:
        note = (f"reported {final:.4g}, trained weights {actual:.4g}; the course's driver gives "
                "0.01714960793873205")
    return value, note, {"loss_history": hist[:: max(1, hist.size // 2000)].tolist()}


def _training(seen: Seen, plan: Plan):
    o = _out(seen, 0)
    pred = _arr(o.get("predict", {"error": "predict(X_test) returned nothing"}), plan.y_test.shape,
                "predict(X_test)")
    hist = o.get("loss_history")
    note = f"final training loss {np.asarray(hist, dtype=np.float64).ravel()[-1]:.4g}" \
        if isinstance(hist, list) and hist else ""
    return float(np.mean(pred == plan.y_test)), note, None


JUDGE: dict[str, Callable[[Seen, Plan], tuple]] = {
    "load": lambda seen, plan: (None, "TwoLayerNet from two_layernet.py", None),  # it imported: no steps
    **{f.__name__: f for f in (own_code, init, q1_scores, q1_stable, q1_loss, q1c_scaling, q2_gradients,
                               q3_toy_training)},
    "q1c_loops": partial(_loops, part="forward", need="q1_scores",
                         clean="no loop over data in the forward pass and loss"),
    "q2_loops": partial(_loops, part="backward", need="q2_gradients",
                        clean="no loop over data in the backward pass", tail=(FEEDBACK_Q2,)),
    "q3_digits": _training, "q3_cifar10": _training,
}
