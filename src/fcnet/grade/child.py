"""The grader's child process, ``python -I -S child.py CONFIG_JSON``, one per submission.
Standalone (standard library and NumPy only): under bubblewrap fcnet is not importable, so a
submission cannot hand in fcnet's own net.  It only *runs* the student's code on the grader's inputs
(``.npy``, no pickle) and writes JSON lines on the result fd: ``{"start": check}``, ``{"check":
check, "outputs": [...]}`` (one per step), ``{"imports": [...]}`` after loading and at the end,
``{"end": true}``.  Every comparison and threshold is the grader's (``fcnet.grade.judge``): what a
submission patches in this process changes only its own outputs."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

MB = 1 << 20
PARAMS = ("W1", "b1", "W2", "b2")
HERE = Path(__file__).resolve().parent


class Refused(Exception):
    """A contract violation, reported as its message alone."""


def _load(name: str, path: Path):
    """The module at ``path``, by path (fcnet itself is not importable here)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def set_limits(lim: dict) -> None:
    """CPU seconds, address space, processes, file size, open files; no core dumps; die with the grader."""
    for res, soft, hard in (
        (resource.RLIMIT_CPU, lim["cpu_s"], lim["cpu_s"] + 5),
        (resource.RLIMIT_AS, lim["memory_mb"] * MB, lim["memory_mb"] * MB),
        (resource.RLIMIT_NPROC, lim["nproc"], lim["nproc"]),
        (resource.RLIMIT_FSIZE, lim["fsize_mb"] * MB, lim["fsize_mb"] * MB),
        (resource.RLIMIT_NOFILE, lim["nofile"], lim["nofile"]),
        (resource.RLIMIT_CORE, 0, 0),
    ):
        cap = resource.getrlimit(res)[1]
        if cap != resource.RLIM_INFINITY:
            hard, soft = min(hard, cap), min(soft, cap)
        resource.setrlimit(res, (soft, hard))
    # PR_SET_PDEATHSIG SIGKILL: without bwrap nothing else would end a sleeping child
    ctypes.CDLL(None).prctl(1, ctypes.c_ulong(9), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))


def describe(err: BaseException, work: Path) -> str:
    """The exception's last line, with the deepest place in the submission's own files."""
    if isinstance(err, Refused):
        return str(err)
    last = traceback.format_exception_only(type(err), err)[-1].strip()
    if isinstance(err, SyntaxError):
        return last if not err.filename else f"{last} ({Path(err.filename).name}, line {err.lineno})"
    where = ""
    for frame in traceback.extract_tb(err.__traceback__):
        with contextlib.suppress(OSError, ValueError):
            if Path(frame.filename).resolve().is_relative_to(work):
                where = f" ({Path(frame.filename).name}, line {frame.lineno})"
    text = last + where
    return text if len(text) <= 300 else text[:297] + "..."


class ImportLog(list):
    """Every module name the submission asks for (even one that fails to import)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self and len(self) < 2000:
            self.append(fullname)
        return None  # only a log: the real finders do the work

    def record(self, before: set[str]) -> list[list[str]]:
        """[name, file] of each module the submission asked for or loaded (not in ``before``)."""
        out = dict.fromkeys(self, "")
        for name, mod in list(sys.modules.items()):
            if name not in before:
                out[name] = str(getattr(mod, "__file__", "") or "")
        return [[n, f] for n, f in list(out.items())[:2000]]


class Runner:
    """Runs one step at a time on the student's TwoLayerNet and returns plain values."""

    def __init__(self, cls, data: Path):
        import numpy as np

        if not isinstance(cls, type):
            raise Refused("two_layernet.py defines no class TwoLayerNet")
        self.np, self.cls = np, cls
        self.array = functools.cache(lambda name: np.load(data / f"{name}.npy", allow_pickle=False))

    def plain(self, value, what: str):
        """A student value as a nested list of floats (an ``{"error"}`` when it is not numbers)."""
        try:
            a = self.np.array(value, dtype=self.np.float64)
        except Exception:  # noqa: BLE001 - an object of the student's may raise anything
            return {"error": f"{what} returned {type(value).__name__}, not numbers"}
        return a.tolist() if a.ndim else float(a)

    def new_net(self, step: dict):
        self.np.random.seed(step.get("seed", 0))
        net = self.cls(*step["dims"], std=step["std"])
        if not isinstance(getattr(net, "params", None), dict):
            raise Refused("TwoLayerNet has no params dict")
        return net

    def construct(self, step: dict) -> dict:
        return self.params_of(self.new_net(step))

    def net_with(self, step: dict):
        """The student's net holding the grader's weights ``step["params"]``."""
        net = self.new_net({"dims": step["dims"], "std": 0.1})
        for k in PARAMS:
            net.params[k] = self.array(f"{step['params']}_{k}").copy()
        return net

    def params_of(self, net) -> dict:
        params = getattr(net, "params", None)
        if not isinstance(params, dict):
            return {k: {"error": "TwoLayerNet has no params dict"} for k in PARAMS}
        return {k: self.plain(params[k], f"params[{k!r}]") if k in params else {"error": f"params lacks {k}"}
                for k in PARAMS}

    def run(self, step: dict, work: Path) -> dict:
        """One step's outputs, or ``{"error"}`` with what went wrong."""
        try:
            if step["op"] not in ("construct", "forward", "loss", "time", "train"):
                raise Refused(f"unknown step {step['op']!r}")
            return getattr(self, step["op"])(step)
        except BaseException as err:  # noqa: BLE001 - student code may raise anything, SystemExit too
            return {"error": describe(err, work)}

    def forward(self, step: dict) -> dict:
        net = self.net_with(step)
        with self.np.errstate(all="ignore"):
            return {"probs": self.plain(net.loss(self.array(step["X"])), "loss(X)")}

    def loss(self, step: dict) -> dict:
        out = self.net_with(step).loss(self.array(step["X"]), self.array(step["y"]), reg=step["reg"])
        loss, grads = out if isinstance(out, tuple | list) and len(out) == 2 else (out, None)
        rec = {"loss": self.plain(loss, "loss(X, y, reg)")}
        if not isinstance(grads, dict):
            rec["grads"] = {"error": f"loss(X, y, reg) returned no grads dict ({type(grads).__name__})"}
        else:
            rec["grads"] = {k: self.plain(grads[k], f"grads[{k!r}]") if k in grads
                            else {"error": f"grads lacks {k}"} for k in PARAMS}
        return rec

    def time(self, step: dict) -> dict:
        """Best-of times of the student's loss and of a vectorised yardstick, interleaved."""
        net = self.net_with(step)
        X, y, reg, sizes = self.array(step["X"]), self.array(step["y"]), step["reg"], step["sizes"]
        params = {k: self.array(f"{step['params']}_{k}") for k in PARAMS}
        runs = {"yours": lambda n: net.loss(X[:n], y[:n], reg=reg),
                "yardstick": lambda n: _yardstick(self.np, params, X[:n], y[:n], reg)}
        best = {who: [float("inf")] * len(sizes) for who in runs}
        losses = []
        for rep in range(step["reps"]):
            for who, loss in runs.items():
                for i, n in enumerate(sizes):
                    t0 = time.perf_counter()
                    out = loss(n)
                    best[who][i] = min(best[who][i], time.perf_counter() - t0)
                    if who == "yours" and rep == 0:
                        losses.append(out[0] if isinstance(out, tuple | list) and len(out) == 2 else out)
            if rep and sum(best["yours"]) > 1.0:  # a slow loss: two timings are enough
                break
        return {**best, "loss": [self.plain(v, "loss(X, y, reg)") for v in losses]}

    def train(self, step: dict) -> dict:
        net = self.new_net(step)
        stats = net.train(self.array(step["X"]), self.array(step["y"]), self.array(step["X_val"]),
                          self.array(step["y_val"]), verbose=False, **step["kwargs"])
        rec: dict = {"params": self.params_of(net)}
        hist = stats.get("loss_history") if isinstance(stats, dict) else None
        rec["loss_history"] = (self.plain(hist, "train's loss_history") if hist is not None else
                               {"error": "train must return a dict with 'loss_history'"})
        if step.get("predict"):
            rec["predict"] = self.plain(net.predict(self.array(step["predict"])), "predict(X)")
        return rec


def _yardstick(np, p: dict, X, y, reg: float) -> None:
    """A plain vectorised loss and backward pass: the timing check's unit of speed."""
    z2 = X @ p["W1"] + p["b1"]
    a2 = np.maximum(z2, 0)
    z3 = a2 @ p["W2"] + p["b2"]
    e = np.exp(z3 - z3.max(axis=1, keepdims=True))
    a3 = e / e.sum(axis=1, keepdims=True)
    n = X.shape[0]
    _ = -np.log(a3[np.arange(n), y]).mean() + reg * ((p["W1"] ** 2).sum() + (p["W2"] ** 2).sum())
    dz3 = a3.copy()
    dz3[np.arange(n), y] -= 1
    dz3 /= n
    dz2 = (dz3 @ p["W2"].T) * (z2 > 0)
    _ = (a2.T @ dz3, dz3.sum(axis=0), X.T @ dz2, dz2.sum(axis=0))


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    sys.path[:] = [p for p in sys.path if p] + cfg["site"]  # NumPy's site-packages only
    # everything the runner needs is imported before student code can shadow it
    import numpy as np  # noqa: F401

    landlock, seccomp = (_load(f"_fcnet_grade_{n}", HERE / f"{n}.py") for n in ("landlock", "seccomp"))
    work = Path(cfg["work"])
    work.mkdir(parents=True, exist_ok=True)
    if cfg.get("probe"):  # report what confinement works here, as the only record
        caps = {"landlock": 0, "seccomp": False}
        with contextlib.suppress(OSError):
            caps["landlock"] = landlock.restrict_writes([work])
        with contextlib.suppress(OSError, KeyError, AttributeError):
            seccomp.install()
            caps["seccomp"] = True
        os.write(cfg["result_fd"], json.dumps(caps).encode() + b"\n")
        return 0
    set_limits(cfg["limits"])
    me = os.getpid()
    out = os.fdopen(cfg["result_fd"], "w", buffering=1)

    def emit(record: dict) -> None:
        if os.getpid() == me:  # a fork of the student's is not the grader's child
            out.write(json.dumps(record) + "\n")
            out.flush()

    shutil.copytree(cfg["src"], work, dirs_exist_ok=True)
    # copytree gives the folder the staged folder's mtime, which the import system's cached
    # listing of the (then empty) folder compares: without this, helper modules do not import
    importlib.invalidate_caches()
    work = work.resolve()
    with contextlib.suppress(OSError):  # the grader's probe found this out and said so
        landlock.restrict_writes([work])  # writes only in its own folder
    if seccomp.supported():
        seccomp.install()  # no new processes, no sockets but AF_UNIX
    os.chdir(work)
    sys.path.insert(0, str(work))
    sys.argv = ["two_layernet.py"]
    runner, log, before = None, ImportLog(), set(sys.modules)
    sys.meta_path.insert(0, log)
    for check in cfg["plan"]:
        name = check["name"]
        emit({"start": name})
        if name != "load" and runner is None:
            emit({"check": name, "error": "not run: two_layernet.py did not load"})
            continue
        try:
            if name == "load":  # no steps: the check is that it imports
                module = _load("two_layernet", work / "two_layernet.py")
                runner = Runner(getattr(module, "TwoLayerNet", None), Path(cfg["data"]))
            outputs = [runner.run(step, work) for step in check["steps"]]
            emit({"check": name, "outputs": outputs})
        except BaseException as err:  # noqa: BLE001 - student code may raise anything, SystemExit too
            emit({"check": name, "error": describe(err, work)})
        if name == "load":
            emit({"imports": log.record(before)})
    emit({"imports": log.record(before)})
    emit({"end": True})
    out.close()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)  # no atexit handlers or lingering threads of the student's


if __name__ == "__main__":
    sys.exit(main(sys.argv))
