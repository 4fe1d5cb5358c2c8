"""The objects every source returns: a Dataset of predefined parts, and the SplitData a run trains on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Split:
    """x: (N, H, W, C) uint8 images, or (N, D) float features for non-image sources;
    y: (N,) int64 labels in 0..len(classes)-1."""

    x: np.ndarray
    y: np.ndarray

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.y, minlength=num_classes).tolist()


@dataclass
class Dataset:
    """A source's predefined parts ("train" always, "test", "val" when shipped), class names and provenance.
    ``ordered``: rows in the official order (CIFAR-10's batches), so the positional split applies."""

    name: str
    parts: dict[str, Split]
    classes: list[str]
    source: str
    checksum: str | None = None
    checksum_kind: str | None = None
    ordered: bool = False
    meta: dict = field(default_factory=dict)  # extra provenance (format, cache, md5, ...)

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        x = self.parts["train"].x
        return tuple(int(s) for s in x.shape[1:]) if x.ndim == 4 else None


@dataclass
class SplitData:
    """train / val / test splits of a dataset, with the split recorded in ``meta``."""

    train: Split
    val: Split
    test: Split
    classes: list[str]
    image_shape: tuple[int, int, int] | None
    meta: dict
