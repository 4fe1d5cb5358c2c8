"""Population training on a GPU: configurations trained per second for K = 1, 8, 64, 256.

K configurations of the net 3072-50-10 (each its own learning rate and L2
strength) share every minibatch of 200 rows, as fcnet.nn.solver's populations do on
the CPU: layer 1 of all members is one product (B, D) @ (D, K*H), layer 2 a
batched product (K, B, H) @ (K, H, C), and the fused SGD update is two more
(W1 <- shrink W1 + x^T (-lr dz1), W2 <- shrink W2 + a1^T (-lr dz2)).  A lone
``nn.Sequential`` trained with autograd and ``optim.SGD`` (the torch backend's
way) is the baseline.

    python3 benchmarks/gpu_population.py            # on a machine with CUDA
    python3 benchmarks/gpu_population.py --device cpu --ks 1,8 --rows 4000 --steps 30

Prints a table (and --json FILE writes the numbers).  Needs only torch; the data
are synthetic (step time does not depend on the values).  Takes well under
3 minutes on one H100.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Population:
    """K members' stacked parameters and one fused SGD step of all of them."""

    def __init__(self, k: int, d: int, h: int, c: int, device, std: float = 1e-4, seed: int = 0):
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.k, self.d, self.h, self.c = k, d, h, c
        self.W1 = (std * torch.randn(d, k * h, generator=g)).to(device)  # [W1_1 ... W1_K]
        self.b1 = torch.zeros(k, h, device=device)
        self.W2 = (std * torch.randn(k, h, c, generator=g)).to(device)
        self.b2 = torch.zeros(k, c, device=device)
        # sweep-like settings: learning rates 3e-5..1e-3, L2 in {0, .05, .25, .5}
        self.lr = torch.logspace(-4.5, -3, k, device=device) if k > 1 else torch.full(
            (1,), 1e-4, device=device)
        self.reg = torch.tensor([0.0, 0.05, 0.25, 0.5], device=device).repeat(k // 4 + 1)[:k]
        self.rows = None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step of every member on the shared batch; returns the losses (K,)."""
        k, h, b = self.k, self.h, x.shape[0]
        if self.rows is None or self.rows.shape[0] != b:
            self.rows = torch.arange(b, device=x.device)
        z1 = x @ self.W1  # (B, K*H): all first layers in one product
        a1 = torch.relu(z1.view(b, k, h).transpose(0, 1) + self.b1[:, None, :])  # (K, B, H)
        s = torch.baddbmm(self.b2[:, None, :], a1, self.W2)  # (K, B, C)
        logp = torch.log_softmax(s, dim=2)
        sq = self.W1.view(self.d, k, h).pow(2).sum((0, 2)) + self.W2.pow(2).sum((1, 2))
        loss = -logp[:, self.rows, y].mean(1) + self.reg * sq
        dz = logp.exp_()  # softmax
        dz[:, self.rows, y] -= 1
        dz *= (-self.lr / b)[:, None, None]  # -lr dJ/dz, the update's own scale
        shrink = 1 - 2 * self.lr * self.reg
        da1 = torch.bmm(dz, self.W2.transpose(1, 2)) * (a1 > 0)  # before W2 moves
        self.W2.mul_(shrink[:, None, None]).baddbmm_(a1.transpose(1, 2), dz)
        self.b2 += dz.sum(1)
        dz1 = da1.transpose(0, 1).reshape(b, k * h)
        self.W1.view(self.d, k, h).mul_(shrink[None, :, None])
        self.W1.addmm_(x.T, dz1)  # one product updates every member's W1
        self.b1 += da1.sum(1)
        return loss


def lone_module(d: int, h: int, c: int, device, std: float = 1e-4):
    """The torch backend's way: nn.Sequential, autograd, optim.SGD (weight decay 2 reg)."""
    net = torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.ReLU(), torch.nn.Linear(h, c))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.normal_(0, std)
            layer.bias.zero_()
    net = net.to(device)
    opt = torch.optim.SGD([{"params": [net[0].weight, net[2].weight], "weight_decay": 0.5},
                           {"params": [net[0].bias, net[2].bias]}], lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def time_steps(step, X, Y, batch: int, steps: int, block: int, device) -> float:
    """Median ms per step over blocks of ``block`` steps (one sync per block,
    as a training loop that checks its losses once per epoch)."""
    n = X.shape[0]
    for _ in range(10):  # warm-up: kernels chosen, allocator primed
        idx = torch.randint(0, n, (batch,), device=device)
        step(X.index_select(0, idx), Y.index_select(0, idx))
    sync(device)
    per_step = []
    for _ in range(max(steps // block, 3)):
        t0 = time.perf_counter()
        for _ in range(block):
            idx = torch.randint(0, n, (batch,), device=device)
            step(X.index_select(0, idx), Y.index_select(0, idx))
        sync(device)
        per_step.append(1e3 * (time.perf_counter() - t0) / block)
    return statistics.median(per_step)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ks", default="1,8,64,256", help="population sizes (default 1,8,64,256)")
    p.add_argument("--hidden", type=int, default=50, help="hidden units per member (default 50)")
    p.add_argument("--batch", type=int, default=200, help="minibatch rows (default 200)")
    p.add_argument("--rows", type=int, default=49_000, help="training rows (default 49000)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per K (default 200)")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matrix products (CUDA)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.manual_seed(0)
    d, c = 3072, 10
    X = 60 * torch.randn(args.rows, d, device=device)
    Y = torch.randint(0, c, (args.rows,), device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    block = 10 if device.type == "cpu" else 25
    results = {"device": name, "torch": torch.__version__, "tf32": args.tf32,
               "hidden": args.hidden, "batch": args.batch, "rows": args.rows, "k": {}}

    t_lone = time_steps(lone_module(d, args.hidden, c, device), X, Y, args.batch, args.steps,
                        block, device)
    results["lone_module_ms"] = t_lone
    print(f"device {name}, torch {torch.__version__}, net {d}-{args.hidden}-{c}, "
          f"batch {args.batch}, tf32 {args.tf32}")
    print(f"lone nn.Sequential + optim.SGD: {t_lone:.3f} ms/step = "
          f"{1e3 / t_lone:,.0f} configuration-steps/s")
    print(f"{'K':>5} {'ms/step':>9} {'config-steps/s':>15} {'vs lone':>8} "
          f"{'1000-iteration runs/min':>24}")
    for k in (int(v) for v in args.ks.split(",")):
        pop = Population(k, d, args.hidden, c, device)
        ms = time_steps(pop.step, X, Y, args.batch, args.steps, block, device)
        rate = k * 1e3 / ms
        results["k"][str(k)] = {"step_ms": ms, "configs_per_s": rate,
                                "speedup_vs_lone": rate / (1e3 / t_lone)}
        print(f"{k:>5} {ms:9.3f} {rate:15,.0f} {rate * t_lone / 1e3:8.1f}x "
              f"{rate * 60 / 1000:24,.1f}")
        del pop
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
