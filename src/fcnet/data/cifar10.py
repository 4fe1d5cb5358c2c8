"""CIFAR-10: the official "python version" (pickled batches, as a folder or the .tar.gz), or an
image-folder tree of its classes (the JPEG copy), labels in the official order either way.
Without a path: the cache directory, else the official download, verified by its published MD5."""

from __future__ import annotations

import codecs
import functools
import hashlib
import io
import pickle
import urllib.request
from pathlib import Path

import numpy as np

from fcnet.data.archive import is_archive, one_line
from fcnet.data.cache import cache_dir
from fcnet.data.core import Dataset, Split
from fcnet.data.imagefolder import layout, progress_bar, read_tree
from fcnet.errors import FcnetError
from fcnet.files import atomic_path, file_digest

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
DIR_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
BATCH_NAMES = (*TRAIN_BATCHES, TEST_BATCH, "batches.meta")


def _latin1_encode(text, encoding="utf-8"):
    # how Python 3 pickles bytes at protocol 2; only the latin-1 form is admitted
    if not isinstance(text, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError("the pickle asks for _codecs.encode with other arguments")
    return codecs.encode(text, "latin1")


@functools.cache
def _allowed() -> dict[tuple[str, str], object]:
    """A batch's needs: array reconstruction (numpy.core or _core, protocol 2 or 5), dtype, scalars, bytes."""
    a = np.zeros(1, np.uint8)
    numpy_fns = {("multiarray", "_reconstruct"): a.__reduce__()[0],
                 ("multiarray", "scalar"): np.uint8(0).__reduce__()[0],
                 ("numeric", "_frombuffer"): a.__reduce_ex__(5)[0]}
    return {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
            **{(f"{mod}.{sub}", name): fn for mod in ("numpy.core", "numpy._core")
               for (sub, name), fn in numpy_fns.items()}}


class BatchUnpickler(pickle.Unpickler):
    """Admits only a CIFAR-10 batch's types; anything else (os.system, eval, ...) is refused uncalled."""

    def find_class(self, module: str, name: str):
        if (obj := _allowed().get((module, name))) is None:
            raise FcnetError(f"the pickle asks for {module}.{name}, which a CIFAR-10 batch "
                             "never contains; refusing it")
        return obj


def read_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images (N, S, S, 3) uint8, labels (N,) int64."""
    try:
        obj = BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except FcnetError as err:
        raise FcnetError(f"{where}: {err}") from None
    except Exception as err:  # a damaged pickle can raise almost anything
        raise FcnetError(f"{where}: truncated or corrupt pickle ({one_line(err)})") from None
    if not isinstance(obj, dict):
        raise FcnetError(f"{where}: not a CIFAR-10 batch (a {type(obj).__name__}, not a dict)")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    x, labels = d.get("data"), d.get("labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2:
        raise FcnetError(f"{where}: 'data' must be a 2-D uint8 array (N, 3*32*32)")
    side = int(round((x.shape[1] / 3) ** 0.5))
    if 3 * side * side != x.shape[1] or side == 0:
        raise FcnetError(f"{where}: rows of {x.shape[1]} values are not square RGB images")
    try:
        y = np.asarray(labels)
    except Exception:
        y = np.asarray([])
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):  # None gives a 0-d array
        raise FcnetError(f"{where}: 'labels' must be a list of integers")
    if y.shape[0] != x.shape[0]:
        raise FcnetError(f"{where}: {y.shape[0]} labels for {x.shape[0]} images")
    if y.size and (y.min() < 0 or y.max() >= len(CLASSES)):
        bad = int(y.min() if y.min() < 0 else y.max())
        raise FcnetError(f"{where}: label {bad} out of range (CIFAR-10 labels are 0..9)")
    images = np.ascontiguousarray(x.reshape(-1, 3, side, side).transpose(0, 2, 3, 1))
    return images, y.astype(np.int64)


def _batch_dir(path: Path) -> Path | None:
    return next((d for d in (path, path / DIR_NAME)
                 if (d / "data_batch_1").is_file() or (d / TEST_BATCH).is_file()), None)


def load_cifar10(path: Path, progress: bool, verify: bool = False) -> Dataset:
    """Any CIFAR-10 file or folder at ``path``; ``verify``: check a cached official archive's MD5 first."""
    if verify and (got := file_digest(path, "md5")) != MD5:
        raise FcnetError(f"{path}: MD5 {got} does not match the published {MD5}; "
                         "delete the file to download it again, or pass --path")
    if path.is_dir() and (d := _batch_dir(path)) is not None:
        blobs = {b: (d / b).read_bytes() for b in BATCH_NAMES if (d / b).is_file()}
        where = str(d)
    else:
        if not path.is_dir() and not is_archive(path):
            raise FcnetError(f"{path}: not a cifar-10-batches-py folder, a .tar.gz/.zip archive "
                             "or an image-folder tree")
        tree = read_tree(path, progress, keep=lambda n: n.rsplit("/", 1)[-1] in BATCH_NAMES)
        if not tree.kept:
            classes, parts = layout(tree, CLASSES)
            return Dataset("cifar10", parts, classes, str(path),
                           meta={"format": "image folder with CIFAR-10 classes"})
        blobs = {n.rsplit("/", 1)[-1]: b for n, b in tree.kept.items()}
        where = f"{path}: {DIR_NAME}"
    if missing := [name for name in (*TRAIN_BATCHES, TEST_BATCH) if name not in blobs]:
        raise FcnetError(f"{where}: {missing[0]} is missing (the official format has "
                         f"{', '.join(TRAIN_BATCHES)} and {TEST_BATCH})")
    got = [read_batch(blobs[b], f"{where}/{b}") for b in (*TRAIN_BATCHES, TEST_BATCH)]
    if len(shapes := {x.shape[1:] for x, _ in got}) != 1:
        raise FcnetError(f"{where}: batches hold images of different sizes {sorted(shapes)}")
    xs, ys = zip(*got[:-1], strict=True)  # the five training batches in order, then the test batch
    parts = {"train": Split(np.concatenate(xs), np.concatenate(ys)), "test": Split(*got[-1])}
    return Dataset("cifar10", parts, list(CLASSES), str(path), ordered=True,
                   meta={"format": "official python batches"})


def default_source(progress: bool) -> tuple[Path, bool]:
    """The cached copy (folder or archive), else a download; and whether it still needs the MD5 check."""
    root, archive = cache_dir(), cache_dir() / ARCHIVE_NAME
    if _batch_dir(root / DIR_NAME) is not None:
        return root / DIR_NAME, False
    if not (cached := archive.is_file()):
        download(archive, progress)
    return archive, cached


def download(dest: Path, progress: bool) -> None:
    """Fetch URL to ``dest`` with a progress bar; ``dest`` appears only whole and with the published MD5."""
    hint = (f"put {ARCHIVE_NAME} (from {URL}) in {dest.parent}, or pass --path with a "
            f"{DIR_NAME} folder, the archive or an image-folder tree of CIFAR-10")
    try:
        resp = urllib.request.urlopen(URL, timeout=30)
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise FcnetError(f"cannot download CIFAR-10 from {URL} ({one_line(reason)}); {hint}") from None
    h = hashlib.md5()
    try:
        with resp, atomic_path(dest) as tmp, open(tmp, "wb") as f:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with progress_bar(progress, total=total, desc=f"download {dest.name}", unit="B",
                              unit_scale=True) as bar:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            if total is not None and f.tell() != total:
                raise OSError(f"got {f.tell()} of {total} bytes")
            if h.hexdigest() != MD5:
                raise FcnetError(f"{URL}: MD5 {h.hexdigest()} of the download does not match "
                                 f"the published {MD5}; nothing was kept")
    except OSError as err:  # URLError and HTTPError too
        raise FcnetError(f"{URL}: download failed ({one_line(err)}); {hint}") from None
