"""The depth study: its record's structure, and the signal it exists to show."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from fcnet.errors import FcnetError  # noqa: E402
from fcnet.torch_backend.depth import depth_study, depth_table, plot_depth_study  # noqa: E402


def data(n=600, d=30, c=4, seed=0):
    rng = np.random.RandomState(seed)
    centres = 2 * rng.randn(c, d)
    y = rng.randint(0, c, n)
    return (centres[y] + rng.randn(n, d)).astype(np.float32), y


def test_depth_study_records_every_epoch_and_layer_for_each_init_and_depth(tmp_path):
    X, y = data()
    res = depth_study(X[:500], y[:500], X[500:], y[500:], depths=(2, 4), epochs=3,
                      batch_size=50, init=["normal:1e-3", "kaiming"], device="cpu",
                      progress=False)
    assert [(r["init"], r["depth"]) for r in res] == [
        ("normal:1e-3", 2), ("normal:1e-3", 4), ("kaiming", 2), ("kaiming", 4)]
    for r in res:
        assert r["train_acc_on"].endswith("the whole training split at the end")
        assert r["hidden"] == [50] * (r["depth"] - 1)
        assert [h["epoch"] for h in r["history"]] == [0, 1, 2, 3]
        for h in r["history"]:
            assert len(h["act_std"]) == len(h["grad_norm"]) == r["depth"]
            assert 0 <= h["train_acc"] <= 1 and 0 <= h["val_acc"] <= 1
        assert r["final_val_acc"] == r["history"][-1]["val_acc"]
        assert [h["lr"] for h in r["history"][1:]] == pytest.approx([1e-3, 9.5e-4, 9.025e-4])
    tiny4, kaiming4 = res[1], res[3]
    # normal(0, 1e-3): the signal shrinks layer by layer at initialisation ...
    s = tiny4["history"][0]["act_std"]
    assert s[0] > 10 * s[1] > 100 * s[2] > 1000 * s[3]
    # ... while He initialisation keeps it of one order
    k = kaiming4["history"][0]["act_std"]
    assert max(k[:3]) / min(k[:3]) < 10
    assert kaiming4["final_train_acc"] > 0.9
    table = depth_table(res)
    assert table.count("\n") == 2 + len(res) and "| kaiming | 4 |" in table
    png = plot_depth_study(res, tmp_path / "depth.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_depth_study_rejects_bad_depths_and_inits():
    X, y = data(n=100)
    with pytest.raises(FcnetError, match="depths"):
        depth_study(X, y, X, y, depths=(0,), progress=False)
    with pytest.raises(FcnetError, match="init"):
        depth_study(X, y, X, y, init="xavier", progress=False)


@pytest.mark.parametrize("hidden", [[50], [50, 50, 50], [37, 13]])
def test_flat_adam_is_torch_adam_bit_for_bit(hidden):
    """The depth study's FlatAdam against torch.optim.Adam itself (the exercise's optimizer):
    the same weights, bit for bit, after 60 steps of 3 nets of odd and even widths."""
    import copy

    import torch

    from fcnet.torch_backend.depth import FlatAdam
    from fcnet.torch_backend.model import MultiLayerPerceptron

    X, y = data(n=600, d=61)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    torch.manual_seed(1)  # the kaiming draws
    nets = [MultiLayerPerceptron(61, hidden, 4, init="kaiming", dtype=torch.float32)]
    nets.append(copy.deepcopy(nets[0]))
    start = nets[0][0].weight.detach().clone()
    ref = torch.optim.Adam(nets[0].parameters(), lr=1e-2, weight_decay=1e-3)
    flat = FlatAdam(nets[1].parameters(), lr=1e-2, weight_decay=1e-3)
    for step in range(60):
        rows = torch.from_numpy(np.random.RandomState(step).randint(0, 600, 50))
        for net, opt in zip(nets, (ref, flat), strict=True):
            for group in opt.param_groups:
                group["lr"] = 1e-2 * 0.95 ** (step // 10)  # as TorchTrainer sets it
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(X[rows]), y[rows]).backward()
            opt.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(nets[1][0].weight, start)  # it trained
    state = flat.state_dict()  # resumes where it stopped
    again = FlatAdam(MultiLayerPerceptron(61, hidden, 4, seed=1, dtype=torch.float32).parameters(), lr=0)
    again.load_state_dict(state)
    assert again.steps == 60 and torch.equal(again.exp_avg_sq, flat.exp_avg_sq)
