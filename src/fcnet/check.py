"""The toy checks of study.md Q1-Q3 (`fcnet check`)."""

from __future__ import annotations

import numpy as np

from fcnet.gradcheck import check_model_gradients
from fcnet.nn.model import TwoLayerNet

INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, NUM_INPUTS = 4, 10, 3, 5

EXPECTED_PROBS = np.array(
    [
        [0.36446210, 0.22911264, 0.40642526],
        [0.47590629, 0.17217039, 0.35192332],
        [0.43035767, 0.26164229, 0.30800004],
        [0.41583127, 0.29832280, 0.28584593],
        [0.36328815, 0.32279939, 0.31391246],
    ]
)
EXPECTED_LOSS = 1.30378789133
EXPECTED_TOY_FINAL_LOSS = 0.01714960793873205
THRESHOLDS = {"scores_diff": 1e-7, "loss_diff": 1e-12, "rel_error": 1e-8, "toy_final_loss": 0.02}


def toy_model() -> TwoLayerNet:
    """The exercise's toy net: weights 0.1 * randn from RandomState(0), W1 then W2."""
    return TwoLayerNet(INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, std=1e-1, seed=0)


def toy_data() -> tuple[np.ndarray, np.ndarray]:
    """X = 10 * randn(5, 4) from RandomState(1), y = [0, 1, 2, 2, 1]."""
    X = 10 * np.random.RandomState(1).randn(NUM_INPUTS, INPUT_SIZE)
    return X, np.array([0, 1, 2, 2, 1])


def toy_training() -> dict:
    """Toy SGD as the course's script drives it: np.random.seed(0), net and
    batches from the global stream.  The global generator's state is restored."""
    saved = np.random.get_state()
    try:
        np.random.seed(0)
        net = TwoLayerNet(INPUT_SIZE, HIDDEN_SIZE, NUM_CLASSES, std=1e-1)
        X, y = toy_data()
        return net.train(X, y, X, y, learning_rate=1e-1, reg=5e-6, num_iters=100, verbose=False)
    finally:
        np.random.set_state(saved)


def run_checks() -> dict:
    """All four checks; returns the numbers and a pass flag per line."""
    net = toy_model()
    X, y = toy_data()
    probs = net.loss(X)
    loss, _ = net.loss(X, y, reg=0.05)
    rel = check_model_gradients(net, X, y, reg=0.05)
    hist = toy_training()["loss_history"]
    r = {
        "probs": probs.tolist(),
        "scores_diff": float(np.sum(np.abs(probs - EXPECTED_PROBS))),
        "loss": loss,
        "loss_diff": float(abs(loss - EXPECTED_LOSS)),
        "rel_error": rel,
        "toy_final_loss": float(hist[-1]),
        "toy_loss_history": hist,
    }
    r["passed"] = {k: (max(rel.values()) if k == "rel_error" else r[k]) < t for k, t in THRESHOLDS.items()}
    r["ok"] = all(r["passed"].values())
    return r


def format_block(r: dict) -> str:
    """The report's Figure 1 block, with pass/fail per line."""
    mark = {True: "PASS", False: "FAIL"}
    p = r["passed"]
    lines = [
        "Your scores:", np.array2string(np.array(r["probs"]), precision=8), "",
        "correct scores:", np.array2string(EXPECTED_PROBS, precision=8), "",
        f"[{mark[p['scores_diff']]}] Difference between your scores and correct "
        f"scores: {r['scores_diff']:.6e} (< 1e-7)",
        f"[{mark[p['loss_diff']]}] Difference between your loss and correct loss: "
        f"{r['loss_diff']:.6e} (< 1e-12)",
    ]
    lines += [f"[{mark[v < THRESHOLDS['rel_error']]}] {k} max relative error: {v:e} (< 1e-8)"
              for k, v in r["rel_error"].items()]
    lines += [f"[{mark[p['toy_final_loss']]}] Final training loss: "
              f"{r['toy_final_loss']!r} (< 0.02; report 0.01714960793873205)",
              "", "all checks passed" if r["ok"] else "SOME CHECKS FAILED"]
    return "\n".join(lines)
