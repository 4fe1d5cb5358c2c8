"""`fcnet bench` (docs/bench.md): one SGD training step of the net 3072-100-10 at batch 200 for
fcnet in float32 and float64, its floor (``FloorStep``), PyTorch, scikit-learn, NumPy and torch
populations, interleaved in rounds in one process so machine drift touches them alike; each figure
is the median of its timed steps on synthetic CIFAR-sized inputs (their values don't matter)."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from threadpoolctl import threadpool_info

from fcnet.errors import FcnetError
from fcnet.nn.fpenv import flush_denormals
from fcnet.nn.fpenv import supported as ftz_supported
from fcnet.nn.model import MLP, TwoLayerNet
from fcnet.nn.solver import AHEAD, Solver, Stream

STEP_KEYS = ("fcnet_f32", "fcnet_f64", "blas_floor_f32", "blas_floor_f64", "torch_f32", "sklearn_f32")
TORCH_STEP_KEYS = ("torch_bf16", "bf16_floor")  # step_ms entries of the torch bf16 systems
MIN_STEPS = 30


@dataclass
class BenchSettings:
    """What is measured: ``steps`` timed steps per system (at least 30) over ``rounds`` rounds."""

    rows: int = 49_000
    steps: int = 60
    rounds: int = 6
    warmup: int = 10
    input_size: int = 3072
    hidden: int = 100
    classes: int = 10
    batch: int = 200
    lr: float = 1e-4
    reg: float = 0.25
    std: float = 1e-4
    seed: int = 0
    pop_k: int = 8
    pop_hidden: int = 50
    pop_k_large: int = 64
    bf16_threads: int = 0  # torch threads of the bf16 systems, floor included (0: torch's own)
    peers: tuple[str, ...] = ("torch", "sklearn")
    gap_s: float = 0.02
    switch_gap_s: float = 0.3

    def validate(self) -> None:
        if self.steps < MIN_STEPS:
            raise FcnetError(f"--steps must be at least {MIN_STEPS} (a median needs them), got {self.steps}")
        if self.rows < self.batch:
            raise FcnetError(f"--rows must be at least the batch size {self.batch}, got {self.rows}")
        if self.rounds < 1:
            raise FcnetError(f"--rounds must be positive, got {self.rounds}")


@dataclass
class System:
    """Something that takes one training step per ``step()`` call."""

    name: str
    step: Callable[[], None]
    threads: str = "openblas"  # whose worker threads it runs on (NumPy's OpenBLAS or torch's)
    steps_per_call: int = 1  # sklearn's call is an epoch of many steps
    warm: Callable[[], None] | None = None  # its warm-up, if not ``warmup`` steps
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # around its steps


def solver_system(name: str, s: BenchSettings, X, y, runs: list[tuple], num_iters: int = 2**62) -> System:
    """One iteration of each of its Solvers as ``train`` runs it: a lone net, K lone nets or a population,
    ``Solver.step`` after step with subnormals flushed once around them all (Solver.run(until=it + 1) a
    step, the flush set and restored each time, took 25-34 us longer: 2% of the step)."""
    n_val = min(1000, X.shape[0] // 10)  # runs: (model, lr, reg) of each Solver
    solvers = [Solver(model, X, y, X[:n_val], y[:n_val], learning_rate=lr, reg=reg, num_iters=num_iters,
                      batch_size=s.batch, seed=s.seed) for model, lr, reg in runs]

    def step() -> None:
        for solver in solvers:
            solver.step()

    return System(name, step, context=flush_denormals)


class FloorStep:
    """The floor of one SGD step (docs/bench.md): draw ``batch`` row indices, gather those rows of X
    into a preallocated buffer, and the matrix products of forward and backward alone. ``sizes`` is
    [D, H1, ..., C]; ``k`` members train at once: layer 1 one stacked product (B, D) @ (D, K*H1),
    deeper layers batched (K, B, H) @ (K, H, H'). ``own``: each member draws its own batch (their
    seeds differ), so K gathers and layer 1 batched too. X (N, D): a NumPy array (NumPy's BLAS) or
    a torch tensor (torch's kernels on ``threads`` threads, None: torch's own)."""

    def __init__(self, X, sizes: list[int], batch: int, k: int = 1, seed: int = 0,
                 threads: int | None = None, own: bool = False):
        self.X, self.batch, self.threads, self.own = X, batch, threads, own and k > 1
        self.stream = Stream(seed, AHEAD)  # the batches' indices, drawn as the NumPy Solver draws them
        self.torch = torch = None if isinstance(X, np.ndarray) else sys.modules["torch"]
        if torch is None:
            rs = np.random.default_rng(seed)  # its float32 normals: 4x faster than RandomState's
            self.mm = bmm = np.matmul
        else:
            gen = torch.Generator().manual_seed(seed)
            self.mm, bmm = torch.mm, torch.bmm

        def new(*shape):  # a product's operand
            if torch is None:
                return rs.standard_normal(shape, dtype=X.dtype)
            return torch.randn(*shape, generator=gen).to(X.dtype)

        def out(*shape):  # written before it is read (the gathered batch, a product's result)
            return np.empty(shape, X.dtype) if torch is None else torch.empty(*shape, dtype=X.dtype)

        B, D = batch, sizes[0]
        lead, H = ((k,), sizes[1]) if self.own else ((), k * sizes[1])
        self.x, self.W1, self.z1 = out(*lead, B, D), new(*lead, D, H), out(*lead, B, H)
        self.dz1, self.dW1 = new(*lead, B, H), out(*lead, D, H)
        # deeper layers: weights (K, H, H'); activations/gradients (K, B, H), a[0] layer 1's
        self.W = [new(k, h, h2) for h, h2 in zip(sizes[1:-1], sizes[2:])]
        self.dW = [out(k, h, h2) for h, h2 in zip(sizes[1:-1], sizes[2:])]
        self.a, self.da = ([new(k, B, h) for h in sizes[1:]] for _ in range(2))
        self.bmm = (lambda a, b, out: self.mm(a[0], b[0], out=out[0])) if k == 1 else bmm
        self.mm1 = bmm if self.own else self.mm  # layer 1's products

    def step(self) -> None:
        torch = self.torch
        if torch is not None:
            before = torch.get_num_threads()
            if self.threads:
                torch.set_num_threads(self.threads)
        for x in self.x if self.own else (self.x,):
            idx = self.stream.draw(self.X.shape[0], self.batch, "replacement", 0, 1)  # choice(n, B)
            if torch is not None:
                torch.index_select(self.X, 0, torch.from_numpy(idx), out=x)
            else:
                np.take(self.X, idx, axis=0, out=x, mode="clip")
        mm, bmm = self.mm1, self.bmm
        mm(self.x, self.W1, out=self.z1)
        for i, W in enumerate(self.W):  # forward through the deeper layers
            bmm(self.a[i], W, out=self.a[i + 1])
        for i in range(len(self.W) - 1, -1, -1):  # backward: a^T dZ, then dZ W^T
            bmm(self.a[i].swapaxes(-1, -2), self.da[i + 1], out=self.dW[i])
            bmm(self.da[i + 1], self.W[i].swapaxes(-1, -2), out=self.da[i])
        mm(self.x.swapaxes(-1, -2), self.dz1, out=self.dW1)
        if torch is not None:
            torch.set_num_threads(before)


def torch_system(s: BenchSettings, X32, y) -> System:
    import torch

    torch.manual_seed(s.seed)
    X, Y = torch.from_numpy(X32), torch.from_numpy(y)
    layers = torch.nn.Linear(s.input_size, s.hidden), torch.nn.Linear(s.hidden, s.classes)
    net = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1])
    with torch.no_grad():
        for layer in layers:
            layer.weight.normal_(0, s.std)
            layer.bias.zero_()
    # reg * sum(W**2) has gradient 2 reg W: weight_decay = 2 reg, weights only
    decayed = {"params": [m.weight for m in layers], "weight_decay": 2 * s.reg}
    opt = torch.optim.SGD([decayed, {"params": [m.bias for m in layers]}], lr=s.lr)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        idx = torch.randint(0, X.shape[0], (s.batch,))
        xb, yb = X.index_select(0, idx), Y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xb), yb)
        loss.backward()
        opt.step()
        loss.item()  # fcnet's step yields its loss too

    return System("torch_f32", step, "torch")


def sklearn_system(s: BenchSettings, X32, y) -> System:
    """One call = one epoch of ``MLPClassifier.fit`` (``warm_start``: no re-init)."""
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    # study.md: reg * sum(W**2) per batch is alpha = 2 * batch * reg
    model = MLPClassifier(
        hidden_layer_sizes=(s.hidden,), solver="sgd", batch_size=s.batch,
        learning_rate_init=s.lr, alpha=2 * s.batch * s.reg, momentum=0.0,
        nesterovs_momentum=False, max_iter=1, shuffle=True, random_state=s.seed,
        warm_start=True, tol=0.0, n_iter_no_change=2**31,
    )

    def fit(rows: int | None = None) -> None:  # the first ``rows`` only: a warm-up
        with warnings.catch_warnings(), sklearn.config_context(assume_finite=True):
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X32[:rows], y[:rows])

    return System("sklearn_f32", fit, steps_per_call=math.ceil(X32.shape[0] / s.batch),
                  warm=lambda: fit(2000))


def pop_configs(s: BenchSettings, k: int) -> list[dict]:
    """K sweep-like configurations: learning rates and L2 strengths spread out."""
    lrs = np.geomspace(3e-5, 1e-3, k)
    regs = np.resize([0.0, 0.05, 0.25, 0.5], k)
    return [{"lr": float(a), "reg": float(b), "seed": s.seed + j}
            for j, (a, b) in enumerate(zip(lrs, regs, strict=True))]


def build_systems(s: BenchSettings, notes: dict) -> list[System]:
    gen = np.random.default_rng(s.seed)
    X32 = gen.standard_normal((s.rows, s.input_size), dtype=np.float32)
    X32 *= 60.0  # the spread of mean-subtracted pixels
    y = gen.integers(0, s.classes, s.rows).astype(np.intp)
    X64 = X32.astype(np.float64)

    def net(dtype: str) -> TwoLayerNet:
        return TwoLayerNet(s.input_size, s.hidden, s.classes, std=s.std, seed=s.seed, dtype=dtype)

    def pop_model(c: dict) -> MLP:
        return MLP(s.input_size, [s.pop_hidden], s.classes, std=s.std, seed=c["seed"], dtype="float32")

    def floor(name: str, X, hidden: int, k: int = 1) -> System:  # NumPy's BLAS, or torch's on bf16_threads
        f = FloorStep(X, [s.input_size, hidden, s.classes], s.batch, k, s.seed, s.bf16_threads or None)
        return System(name, f.step, "openblas" if isinstance(X, np.ndarray) else "torch")

    systems = [
        solver_system("fcnet_f32", s, X32, y, [(net("float32"), s.lr, s.reg)]),
        solver_system("fcnet_f64", s, X64, y, [(net("float64"), s.lr, s.reg)]),
        floor("blas_floor_f32", X32, s.hidden),
        floor("blas_floor_f64", X64, s.hidden),
    ]
    for peer, system in (("torch", torch_system), ("sklearn", sklearn_system)):
        if peer in s.peers:
            try:
                systems.append(system(s, X32, y))
            except ImportError as err:
                notes[f"{peer}_f32"] = f"not measured: {err}"
    configs = pop_configs(s, s.pop_k)
    lrs, regs = [c["lr"] for c in configs], [c["reg"] for c in configs]
    systems += [
        solver_system("sequential", s, X32, y, [(pop_model(c), c["lr"], c["reg"]) for c in configs]),
        solver_system("population", s, X32, y, [([pop_model(c) for c in configs], lrs, regs)], 2**24),
        floor("pop_floor", X32, s.pop_hidden, s.pop_k),
    ]
    if "torch" in s.peers:
        try:
            import torch  # first: a missing torch is an ImportError here

            from fcnet.config import make_config
            from fcnet.torch_backend.population import TorchPopulation
            from fcnet.torch_backend.train import bf16_unsupported

            # what a --dtype bfloat16 run trains in here (float32 without bf16 instructions)
            why = bf16_unsupported(torch.device("cpu"))
            dtype = "bfloat16" if why is None else "float32"
            if why:
                notes["bf16"] = (f"{why}: the bf16 systems ran the float32 fallback of a "
                                 "--dtype bfloat16 run, and the bf16 targets are n/a")
            Xb = torch.from_numpy(X32).to(getattr(torch, dtype))  # one copy for all of them

            def bf16(name: str, members: list[dict], hidden: int) -> System:  # a bf16-mixed population step
                pop = TorchPopulation(
                    [make_config(backend="torch", optimizer="sgd", init="normal", std=s.std,
                                 hidden=[hidden], lr=c["lr"], reg=c["reg"], seed=s.seed,
                                 batch_size=s.batch, iters=2**40, dtype=dtype, device="cpu")
                     for c in members], s.input_size, s.classes, threads=s.bf16_threads or None)
                (X, Y), n = pop.data(Xb, y), Xb.shape[0]
                return System(name, lambda: pop.step(X, Y, pop.batch(n), pop.lrs), "torch")

            systems += [  # the exercise's net (K = 1), K sweep configurations and their floors
                bf16("torch_bf16", [{"lr": s.lr, "reg": s.reg}], s.hidden),
                floor("bf16_floor", Xb, s.hidden),
                bf16("pop_torch_bf16", configs, s.pop_hidden),
                floor("pop_torch_bf16_floor", Xb, s.pop_hidden, s.pop_k),
                bf16("pop_torch_bf16_k64", pop_configs(s, s.pop_k_large), s.pop_hidden),
            ]
        except (ImportError, FcnetError) as err:
            notes["torch_bf16"] = f"not measured: {err}"
    return systems


# each target's system and its floor, visited one right after the other (which first alternating
# from round to round), so a spell of host noise touches both sides of the ratio alike: visited
# apart, a single run's ratio moved by up to 0.12 on a shared 2-core VM.  Each keeps its block of
# consecutive steps, as a run takes them: timed step for step in turn, each step ran in the other's
# aftermath, and the ratio of fcnet_f32 came out 0.04 higher than with blocks.
PAIRS = {"fcnet_f32": "blas_floor_f32", "torch_bf16": "bf16_floor", "population": "pop_floor",
         "pop_torch_bf16": "pop_torch_bf16_floor"}


def measure(systems: list[System], s: BenchSettings, progress: Callable | None = None):
    """Interleaved rounds; returns {name: [ms per step, ...]} (sklearn: one per epoch).  A target's
    system and its floor (``PAIRS``) are visited back to back, so sample i of each comes from the
    same round: a pair for ``ratio_ci``."""
    samples: dict[str, list[float]] = {sys_.name: [] for sys_ in systems}
    for sys_ in systems:  # warm-up: workspaces, caches, thread pools, lazy inits
        with sys_.context():
            if sys_.warm:
                sys_.warm()
            else:
                for _ in range(s.warmup):
                    sys_.step()
    by_name = {x.name: x for x in systems}
    paired = {x.name: by_name[PAIRS[x.name]] for x in systems if PAIRS.get(x.name) in by_name}
    floors = {f.name for f in paired.values()}
    units = [[x, paired[x.name]] if x.name in paired else [x] for x in systems if x.name not in floors]
    last = None
    for r in range(s.rounds):
        shift = r % len(units)
        for unit in units[shift:] + units[:shift]:
            for sys_ in unit[::-1] if r % 2 else unit:
                # OpenBLAS's idle workers spin ~0.1 s and slow torch's threads (and the other way round)
                time.sleep(s.gap_s if sys_.threads == last else s.switch_gap_s)
                last = sys_.threads
                # ``steps`` steps in all over the rounds (sklearn: enough whole epochs)
                calls = math.ceil(math.ceil(s.steps / sys_.steps_per_call) / s.rounds)
                with sys_.context():
                    for _ in range(2 if sys_.steps_per_call == 1 else 0):  # untimed, after the gap
                        sys_.step()
                    for _ in range(calls):
                        t0 = time.perf_counter()
                        sys_.step()
                        samples[sys_.name].append(1e3 * (time.perf_counter() - t0) / sys_.steps_per_call)
        if progress:
            progress()
    return samples


def ratio_ci(a: list[float], b: list[float], level: float = 0.95) -> list[float] | None:
    """A ``level`` bootstrap interval of median(a) / median(b), paired samples resampled
    together (scipy's percentile bootstrap, fixed seed); None without samples."""
    if not a or len(a) != len(b):
        return None
    import inspect

    from scipy.stats import bootstrap

    # SciPy 1.15 named the seed ``rng`` (``random_state`` before, and on its way out)
    seed = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    res = bootstrap((np.asarray(a), np.asarray(b)),
                    lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
                    paired=True, vectorized=True, confidence_level=level, n_resamples=2000,
                    method="percentile", **{seed: 0})
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def machine_info() -> dict:
    """CPU, cores, BLAS library and threads, library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    b = next((p for p in blas if "numpy" in p.get("filepath", "")), blas[0] if blas else None)
    info: dict = {
        "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "numpy": np.__version__,
        "blas": f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})" if b else None,
        "blas_threads": b.get("num_threads") if b else None,
        # OpenBLAS's kernel choice can be forced (this environment sets Haswell)
        "openblas_coretype_env": os.environ.get("OPENBLAS_CORETYPE"),
        "flush_denormals": ftz_supported(),
    }
    info |= {mod: getattr(sys.modules.get(mod), "__version__", None) for mod in ("torch", "sklearn")}
    if sys.modules.get("torch"):
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


def _ms(v: float | None, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


def summarise(samples: dict[str, list[float]], steps_timed: dict, s: BenchSettings, notes: dict) -> dict:
    med = {k: float(statistics.median(v)) if v else None for k, v in samples.items()}
    step = {k: med.get(k) for k in STEP_KEYS + TORCH_STEP_KEYS}
    seq, pop, pop_floor = med["sequential"], med["population"], med.get("pop_floor")
    tpop, tfloor = med.get("pop_torch_bf16"), med.get("pop_torch_bf16_floor")  # the torch population
    f32 = step["fcnet_f32"]
    # each against the floor of its own precision, measured in this run: they hold on any CPU
    targets = {  # name: (ratio, its system; PAIRS names its floor)
        "fcnet_f32 / blas_floor_f32 <= 1.15": (_ratio(f32, step["blas_floor_f32"]), "fcnet_f32"),
        "torch_bf16 / bf16_floor <= 1.2": (_ratio(step["torch_bf16"], step["bf16_floor"]), "torch_bf16"),
        "population / population_floor <= 1.25": (_ratio(pop, pop_floor), "population"),
        "torch_population / torch_population_floor <= 1.25": (_ratio(tpop, tfloor), "pop_torch_bf16"),
    }
    fallback = "bf16" in notes  # the bf16 systems ran in float32: no bf16 target applies
    # reported, not targets: peers, and ratios across precisions (CPUs' bf16 units differ)
    comparisons = {
        "fcnet_f32 / torch_f32": _ratio(f32, step["torch_f32"]),
        "sklearn_f32 / fcnet_f32": _ratio(step["sklearn_f32"], f32),
        "sequential / population": _ratio(seq, pop),
        "fcnet_f32 / torch_bf16": _ratio(f32, step["torch_bf16"]),
        "sequential / torch_bf16_population": _ratio(seq, tpop),
    }
    return {
        "step_ms": step,
        "population": {
            "k": s.pop_k, "hidden": s.pop_hidden, "dtype": "float32",
            "sequential_ms": seq, "population_ms": pop, "floor_ms": pop_floor,
            "speedup": _ratio(seq, pop),
            "torch_bf16_ms": tpop, "torch_bf16_floor_ms": tfloor,
            "torch_bf16_k64_ms": med.get("pop_torch_bf16_k64"),
            "k_large": s.pop_k_large, "torch_dtype": "float32" if fallback else "bfloat16",
        },
        "machine": machine_info(),
        "targets": {k: {"ratio": r, "ci95": ratio_ci(samples.get(a, []), samples.get(PAIRS[a], [])),
                        "met": None if r is None or (fallback and "bf16" in k)
                        else r <= float(k.split()[-1])} for k, (r, a) in targets.items()},
        "comparisons": comparisons,
        "settings": asdict(s) | {"peers": list(s.peers)},
        "steps_timed": steps_timed,
        "notes": notes,
    }


def run_bench(settings: BenchSettings | None = None, progress: Callable | None = None) -> dict:
    """Build every system, measure them interleaved, return the summary dict."""
    s = settings or BenchSettings()
    s.validate()
    notes: dict = {}
    systems = build_systems(s, notes)
    samples = measure(systems, s, progress)
    steps_timed = {x.name: len(samples[x.name]) * x.steps_per_call for x in systems}
    return summarise(samples, steps_timed, s, notes)


def format_table(r: dict) -> str:
    """The human-readable report."""
    step = r["step_ms"]
    floor = {"32": step["blas_floor_f32"], "64": step["blas_floor_f64"], "16": step.get("bf16_floor")}
    lines = [f"{'system':<16} {'ms/step':>9} {'x floor':>8}"]
    for k in STEP_KEYS + TORCH_STEP_KEYS:
        v = step.get(k)
        fl = floor.get(k[-2:], floor["16"])
        ratio = "" if v is None or fl is None else f"{v / fl:8.2f}"
        val = "   (n/a)" if v is None else f"{v:9.3f}"
        lines.append(f"{k:<16} {val} {ratio}")
    p = r["population"]
    lines += [
        "",
        f"population: {p['k']} configurations of {r['settings']['input_size']}-{p['hidden']}-"
        f"{r['settings']['classes']} ({p['dtype']}): sequential {p['sequential_ms']:.3f} ms, "
        f"population {p['population_ms']:.3f} ms per step of all {p['k']} "
        f"({p['speedup']:.2f}x), its floor {_ms(p.get('floor_ms'))} ms",
        f"torch {p.get('torch_dtype')} population: {_ms(p.get('torch_bf16_ms'))} ms per step of "
        f"all {p['k']} (its floor {_ms(p.get('torch_bf16_floor_ms'))} ms), "
        f"{_ms(p.get('torch_bf16_k64_ms'))} ms of {p.get('k_large')}",
        "",
        "targets (each against the floor of its own precision, this run; 95% interval):",
    ]
    mark = {True: "met", False: "MISSED", None: "n/a"}
    ci = {k: "" if t.get("ci95") is None else f"[{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]"
          for k, t in r["targets"].items()}
    lines += [f"  {k:<52} {_ms(t['ratio'], '.2f'):>6} {ci[k]:>12}  {mark[t['met']]}"
              for k, t in r["targets"].items()]
    lines += ["", "comparisons (reported, not targets):"]
    lines += [f"  {name:<52} {_ms(v, '.2f'):>6}" for name, v in r["comparisons"].items()]
    m = r["machine"]
    lines += ["", f"machine: {m['cpu']}, {m['cores']} cores, BLAS {m['blas']} "
              f"x{m['blas_threads']} threads, numpy {m['numpy']}, torch {m.get('torch')}, "
              f"sklearn {m.get('sklearn')}"]
    lines += [f"note: {k}: {v}" for k, v in r["notes"].items()]
    return "\n".join(lines)
