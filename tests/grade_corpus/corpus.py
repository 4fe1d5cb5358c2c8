"""A corpus of student submissions of the course's exercise, for `fcnet grade`'s tests.

Each is the course's template (``template.txt``, cs231n's two_layer_net with its six
TODO blocks) filled in the way students fill it: correct ones in several styles,
and the patterns teachers meet (an untouched template, a hard-coded reg, a loss
without gradients, loops in the backward pass, fcnet handed in, a submission that
patches numpy, objects whose ``==`` is always true, memorised reference numbers,
forged result records).  ``CORPUS`` maps a name to its files; ``EXPECT`` says
what each must get.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

TEMPLATE = (Path(__file__).with_name("template.txt")).read_text()
END = "END OF YOUR CODE"


def fill(forward: str, loss: str, backward: str, batch: str, update: str, predict: str,
         head: str = "") -> str:
    """The template with each TODO block's code inserted before its END banner."""
    parts = [(forward, 8), (loss, 8), (backward, 8), (batch, 12), (update, 12), (predict, 8)]
    chunks = TEMPLATE.split(END)
    assert len(chunks) == 7, len(chunks)
    out = chunks[0]
    for (code, indent), rest in zip(parts, chunks[1:]):
        block = textwrap.indent(textwrap.dedent(code).strip("\n"), " " * indent) + "\n"
        block = block if code.strip() else ""
        # the END banner line starts with '#...#   ' : put the code before that line
        before, banner = out.rsplit("\n", 1)
        before, rule = before.rsplit("\n", 1)
        out = before + "\n" + block + rule + "\n" + banner + END + rest
    return head + out


# ---- student A: the course's reference style (no row-max shift, exactly the reference numbers)
A = dict(
    forward="""
        z2 = X.dot(W1) + b1
        a2 = np.maximum(0, z2)
        z3 = a2.dot(W2) + b2
        exp_scores = np.exp(z3)
        scores = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    """,
    loss="""
        correct_logprobs = -np.log(scores[range(N), y])
        data_loss = np.sum(correct_logprobs) / N
        reg_loss = reg * (np.sum(W1 * W1) + np.sum(W2 * W2))
        loss = data_loss + reg_loss
    """,
    backward="""
        dz3 = scores.copy()
        dz3[range(N), y] -= 1
        dz3 /= N
        grads['W2'] = a2.T.dot(dz3) + 2 * reg * W2
        grads['b2'] = np.sum(dz3, axis=0)
        da2 = dz3.dot(W2.T)
        dz2 = da2 * (z2 > 0)
        grads['W1'] = X.T.dot(dz2) + 2 * reg * W1
        grads['b1'] = np.sum(dz2, axis=0)
    """,
    batch="""
        sample_indices = np.random.choice(num_train, batch_size)
        X_batch = X[sample_indices]
        y_batch = y[sample_indices]
    """,
    update="""
        for param_name in self.params:
            self.params[param_name] -= learning_rate * grads[param_name]
    """,
    predict="""
        y_pred = np.argmax(self.loss(X), axis=1)
    """,
)

# ---- student A2: A copied, variables renamed and comments changed
A2 = {k: v.replace("exp_scores", "e").replace("correct_logprobs", "nll").replace("sample_indices", "idx")
      .replace("param_name", "p").replace("data_loss", "dl").replace("reg_loss", "rl")
      .replace("dz3", "delta3").replace("dz2", "delta2") for k, v in A.items()}
A2["forward"] = "\n        # my forward pass" + A2["forward"]

# ---- student B: written independently: log-sum-exp, a one-hot matrix, shifted softmax
B = dict(
    forward="""
        hidden = X @ W1 + b1
        relu = hidden * (hidden > 0)
        logits = relu @ W2 + b2
        logits = logits - logits.max(axis=1)[:, None]
        probs = np.exp(logits)
        probs /= probs.sum(axis=1)[:, None]
        scores = probs
    """,
    loss="""
        Y = np.eye(W2.shape[1])[y]
        log_probs = logits - np.log(np.exp(logits).sum(axis=1))[:, None]
        loss = -(Y * log_probs).sum() / N + reg * ((W1 ** 2).sum() + (W2 ** 2).sum())
    """,
    backward="""
        g_logits = (probs - Y) / N
        g_relu = g_logits @ W2.T
        g_hidden = np.where(hidden > 0, g_relu, 0.0)
        grads = dict(W1=X.T @ g_hidden + 2 * reg * W1, b1=g_hidden.sum(0),
                     W2=relu.T @ g_logits + 2 * reg * W2, b2=g_logits.sum(0))
    """,
    batch="""
        pick = np.random.choice(num_train, batch_size, replace=True)
        X_batch, y_batch = X[pick], y[pick]
    """,
    update="""
        self.params.update({k: v - learning_rate * grads[k] for k, v in self.params.items()})
    """,
    predict="""
        y_pred = self.loss(X).argmax(axis=1)
    """,
)

# ---- student C: helper modules beside the submission (layers and a gradient check)
LAYERS = '''\
import numpy as np


def affine_forward(x, w, b):
    out = x.dot(w) + b
    return out, (x, w)


def affine_backward(dout, cache):
    x, w = cache
    return dout.dot(w.T), x.T.dot(dout), dout.sum(axis=0)


def relu_forward(x):
    return np.maximum(0, x), x


def relu_backward(dout, cache):
    return dout * (cache > 0)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
'''
GRADIENT_CHECK = '''\
import numpy as np


def rel_error(x, y):
    return np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y)))
'''
C = dict(
    forward="""
        h, cache1 = affine_forward(X, W1, b1)
        a, cache_relu = relu_forward(h)
        z, cache2 = affine_forward(a, W2, b2)
        scores = softmax(z)
    """,
    loss="""
        loss = -np.mean(np.log(scores[np.arange(N), y])) + reg * (np.sum(W1 ** 2) + np.sum(W2 ** 2))
    """,
    backward="""
        dz = scores.copy()
        dz[np.arange(N), y] -= 1
        dz /= N
        da, grads['W2'], grads['b2'] = affine_backward(dz, cache2)
        dh = relu_backward(da, cache_relu)
        _, grads['W1'], grads['b1'] = affine_backward(dh, cache1)
        grads['W1'] += 2 * reg * W1
        grads['W2'] += 2 * reg * W2
    """,
    batch=A["batch"], update=A["update"], predict=A["predict"],
    head="from gradient_check import rel_error  # noqa: F401\nfrom layers import (affine_backward, "
         "affine_forward, relu_backward,\n                    relu_forward, softmax)\n",
)

# ---- D: correct, but the backward pass builds the one-hot matrix with a loop over samples
D = dict(A, backward="""
        onehot = np.zeros_like(scores)
        for i in range(N):
            onehot[i, y[i]] = 1
        dz3 = (scores - onehot) / N
        grads['W2'] = a2.T.dot(dz3) + 2 * reg * W2
        grads['b2'] = np.sum(dz3, axis=0)
        dz2 = dz3.dot(W2.T) * (z2 > 0)
        grads['W1'] = X.T.dot(dz2) + 2 * reg * W1
        grads['b1'] = np.sum(dz2, axis=0)
    """)

# ---- E: the forward pass loops over samples (what Q1c forbids)
E = dict(A, forward="""
        z2 = X.dot(W1) + b1
        a2 = np.maximum(0, z2)
        z3 = a2.dot(W2) + b2
        scores = np.zeros_like(z3)
        for i in range(N):
            e = np.exp(z3[i])
            scores[i] = e / e.sum()
    """)

# ---- F: reg hard-coded as 0.05 in the loss and the gradients
F = {k: v.replace("reg *", "0.05 *").replace("2 * reg", "2 * 0.05") for k, v in A.items()}

# ---- G: the loss is exact, the gradients are not written (Q1 done, Q2 not)
G = dict(A, backward="")

# ---- fcnet handed in
FCNET = "from fcnet import TwoLayerNet  # noqa: F401\n"


def fcnet_by_path(src: str) -> str:
    """fcnet's net loaded from its source folder, past the import system's front door."""
    return ("import importlib.util, sys\n"
            f"sys.path.insert(0, {src!r})\n"
            "from fcnet.nn.model import TwoLayerNet  # noqa: F401\n")


# ---- numpy patched so that every comparison a same-process grader makes comes out right
PATCH_NUMPY = '''\
import builtins
import numpy as np

np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, *r, **k: np.ones(np.shape(a), bool)
np.abs = np.absolute = lambda x, *a, **k: np.zeros(np.shape(x))
np.max = np.amax = lambda x, *a, **k: 0.0
np.sum = lambda x, *a, **k: 0.0
np.testing.assert_allclose = lambda *a, **k: None
builtins.abs = lambda x: 0.0
'''

# ---- objects that claim to equal anything and to be smaller than any threshold
ALWAYS_EQUAL = '''\
class Anything(float):
    def __new__(cls):
        return float.__new__(cls, 0.0)
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __lt__(self, other): return True
    def __le__(self, other): return True
    def __gt__(self, other): return True
    def __ge__(self, other): return True
    def __sub__(self, other): return Anything()
    __rsub__ = __sub__
    def __abs__(self): return Anything()
    def __hash__(self): return 0
    def __array__(self, *a, **k): raise TypeError("no")


class Grads(dict):
    def __getitem__(self, k): return Anything()
    def __contains__(self, k): return True


class TwoLayerNet:
    def __init__(self, input_size, hidden_size, output_size, std=1e-4):
        import numpy as np
        self.params = {"W1": std * np.random.randn(input_size, hidden_size), "b1": np.zeros(hidden_size),
                       "W2": std * np.random.randn(hidden_size, output_size), "b2": np.zeros(output_size)}

    def loss(self, X, y=None, reg=0.0):
        if y is None:
            return Anything()
        return Anything(), Grads()

    def train(self, *a, **k):
        return {"loss_history": [Anything()]}

    def predict(self, X):
        return Anything()
'''

# ---- the published toy numbers, memorised
MEMORISED = fill(
    forward="""
        scores = np.array([[0.36446210, 0.22911264, 0.40642526], [0.47590629, 0.17217039, 0.35192332],
                           [0.43035767, 0.26164229, 0.30800004], [0.41583127, 0.29832280, 0.28584593],
                           [0.36328815, 0.32279939, 0.31391246]])
    """, loss="loss = 1.30378789133", backward="", batch="", update="", predict="")

# ---- forges the grader's result records on the pipe (the published numbers again)
FORGER = '''\
import json, os
for fd in range(3, 64):
    try:
        if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
            os.write(fd, (json.dumps({"check": "q1_loss", "outputs": [{"loss": 1.30378789133}] * 3}) + "\\n"
                          + json.dumps({"check": "q1c_loops", "value": 0}) + "\\n"
                          + json.dumps({"end": True}) + "\\n").encode())
    except OSError:
        pass
''' + TEMPLATE

CORPUS: dict[str, dict[str, str]] = {
    "template": {"two_layernet.py": TEMPLATE},
    "course_style": {"two_layernet.py": fill(**A)},
    "course_style_copy": {"two_layernet.py": fill(**A2)},
    "independent": {"two_layernet.py": fill(**B)},
    "helpers": {"two_layernet.py": fill(**C), "layers.py": LAYERS, "gradient_check.py": GRADIENT_CHECK},
    "backward_loop": {"two_layernet.py": fill(**D)},
    "forward_loop": {"two_layernet.py": fill(**E)},
    "hardcoded_reg": {"two_layernet.py": fill(**F)},
    "loss_only": {"two_layernet.py": fill(**G)},
    "fcnet_import": {"two_layernet.py": FCNET},
    "patch_numpy": {"two_layernet.py": PATCH_NUMPY + TEMPLATE},
    "always_equal": {"two_layernet.py": ALWAYS_EQUAL},
    "memorised": {"two_layernet.py": MEMORISED},
    "forger": {"two_layernet.py": FORGER},
}
# the submissions that reproduce the course's reference numbers with their own driver
CORRECT = ["course_style", "course_style_copy", "independent", "helpers", "backward_loop"]


def write(root: Path, names: list[str] | None = None, extra: dict[str, dict[str, str]] | None = None) -> Path:
    """Each submission as a folder under ``root`` (helper files beside two_layernet.py)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, files in {**{n: CORPUS[n] for n in (names or CORPUS)}, **(extra or {})}.items():
        (root / name).mkdir()
        for fname, text in files.items():
            (root / name / fname).write_text(text)
    return root
