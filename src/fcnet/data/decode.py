"""Decoding image files to uint8 arrays with Pillow, in worker processes when
there are many (decoding 60,000 small JPEGs is CPU-bound and Pillow holds the
GIL for much of it, so threads do not help; forked processes do)."""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import sys
from concurrent.futures import Executor, Future, ProcessPoolExecutor

import numpy as np

from fcnet.errors import FcnetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".tif",
                  ".tiff", ".webp")
CHUNK = 1000
_GRAY_MODES = ("1", "L", "I", "I;16", "F")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def decode_one(item: bytes | str) -> np.ndarray | str:
    """(H, W, 1) for greyscale, (H, W, 3) otherwise; a message string if undecodable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as im:
            if im.mode in _GRAY_MODES:
                return np.asarray(im.convert("L"))[..., None]
            return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except Exception as err:  # Pillow raises many types for broken files
        from fcnet.data.archive import one_line

        return f"cannot decode the image ({one_line(err)})"


def decode_chunk(items: list[bytes | str]) -> np.ndarray | list[np.ndarray | str]:
    """One (n, H, W, C) array when every image decodes to the same shape (cheap to
    send back from a worker), else the per-image results."""
    out = [decode_one(i) for i in items]
    if all(isinstance(a, np.ndarray) for a in out) and len({a.shape for a in out}) == 1:
        return np.stack(out)
    return out


def _pool() -> Executor | None:
    # fork: workers start at once and import nothing; only on Linux, where it is safe
    env = os.environ.get("FCNET_DATA_WORKERS")
    n = int(env) if env is not None else min(os.cpu_count() or 1, 8)
    if n < 2 or not sys.platform.startswith("linux"):
        return None
    return ProcessPoolExecutor(n, mp_context=mp.get_context("fork"))


class Decoder:
    """Collects ``(display name, bytes or file path)`` and decodes them in chunks,
    overlapping decoding with the reading of an archive."""

    def __init__(self, progress: bool = False, desc: str = "decode"):
        self.names: list[str] = []
        self._pending: list[bytes | str] = []
        self._results: list[Future | list] = []
        self._pool: Executor | None = None
        self._progress = progress
        self._desc = desc

    def add(self, name: str, item: bytes | str) -> None:
        self.names.append(name)
        self._pending.append(item)
        if len(self._pending) >= CHUNK:
            if not self._results:  # more than one chunk: worth a pool
                self._pool = _pool()
            self._flush()

    def _flush(self) -> None:
        chunk, self._pending = self._pending, []
        # without a pool, a chunk is decoded in finish(), under its progress bar
        self._results.append(chunk if self._pool is None else self._pool.submit(decode_chunk, chunk))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def finish(self) -> np.ndarray:
        """All images (at least one) as one (N, H, W, C) uint8 array, in the order added.
        Undecodable images and mixed sizes raise FcnetError naming the file."""
        from tqdm import tqdm

        chunks: list[np.ndarray] = []  # (n, H, W, C) runs of images of one shape
        try:
            if self._pending:
                self._flush()
            done = 0
            with tqdm(total=len(self.names), desc=self._desc, unit="img", leave=False,
                      disable=None if self._progress else True, file=sys.stderr) as bar:
                for r in self._results:
                    out = r.result() if isinstance(r, Future) else decode_chunk(r)
                    if isinstance(out, np.ndarray):
                        chunks.append(out)
                    else:
                        for j, a in enumerate(out):
                            if isinstance(a, str):
                                raise FcnetError(f"{self.names[done + j]}: {a}")
                            chunks.append(a[None])
                    done += len(out)
                    bar.update(len(out))
        finally:
            self.close()
        h, w = chunks[0].shape[1:3]
        c = max(a.shape[3] for a in chunks)
        out = np.empty((len(self.names), h, w, c), np.uint8)
        i = 0
        for a in chunks:
            if a.shape[1:3] != (h, w):
                raise FcnetError(f"{self.names[i]}: image is {a.shape[2]}x{a.shape[1]} but "
                                 f"{self.names[0]} is {w}x{h}; images of mixed sizes are refused")
            out[i: i + len(a)] = a  # a greyscale (.., 1) run broadcasts when others are RGB
            i += len(a)
        return out
