"""Random generators of the engine, and their state as plain arrays (np.savez,
no pickle), so a checkpoint restores every stream exactly."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def legacy_rng(seed: int | None):
    """NumPy's legacy generator: seeded, or the global one (the course's driver
    calls ``np.random.seed(0)`` and expects the net to draw from it)."""
    return np.random if seed is None else np.random.RandomState(seed)


def legacy_state(rng, prefix: str = "rng.") -> dict[str, np.ndarray]:
    """A legacy generator's MT19937 state: '<prefix>keys', 'pos', 'has_gauss', 'gauss'."""
    _, keys, pos, has_gauss, gauss = rng.get_state()
    return {f"{prefix}keys": keys.copy(), f"{prefix}pos": np.array(pos),
            f"{prefix}has_gauss": np.array(has_gauss), f"{prefix}gauss": np.array(gauss)}


def load_legacy_state(rng, state: Mapping[str, np.ndarray], prefix: str = "rng.") -> None:
    rng.set_state(("MT19937", np.asarray(state[f"{prefix}keys"], dtype=np.uint32),
                   int(state[f"{prefix}pos"]), int(state[f"{prefix}has_gauss"]),
                   float(state[f"{prefix}gauss"])))


def pcg64_state(gen: np.random.Generator) -> np.ndarray:
    """A PCG64 Generator's state as six uint64 words (its two 128-bit integers split)."""
    st = gen.bit_generator.state
    words = [st["state"]["state"], st["state"]["inc"]]
    return np.array([w >> 64 for w in words] + [w & (2**64 - 1) for w in words]
                    + [st["has_uint32"], st["uinteger"]], dtype=np.uint64)


def load_pcg64_state(gen: np.random.Generator, words: np.ndarray) -> None:
    w = [int(v) for v in words]
    gen.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": w[4], "uinteger": w[5],
                               "state": {"state": (w[0] << 64) | w[2], "inc": (w[1] << 64) | w[3]}}
