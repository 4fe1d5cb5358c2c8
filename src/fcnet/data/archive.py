"""Reading .tar / .tar.gz / .zip archives member by member, in memory.

Nothing is ever extracted to disk, and a member whose path would land outside
the archive's root (``..``, an absolute path, a drive letter) or that is a
link or a device is refused outright, naming the member."""

from __future__ import annotations

import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from fcnet.errors import FcnetError

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip")


def one_line(err: BaseException) -> str:
    """An exception as one short line, for messages built around it."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def safe_name(archive: Path, name: str) -> str:
    """The member's path relative to the archive root, or FcnetError if it escapes."""
    n = name.replace("\\", "/")
    if n.startswith("/") or re.match(r"^[A-Za-z]:", n):
        raise FcnetError(f"{archive}: member {name!r} has an absolute path; refusing the archive")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FcnetError(f"{archive}: member {name!r} would land outside the target (..); "
                         "refusing the archive")
    return "/".join(parts)


def iter_members(archive: Path, bar=None) -> Iterator[tuple[str, bytes | None]]:
    """Yield ``(relative name, bytes)`` for each regular file and ``(name + "/", None)``
    for each directory.  ``bar`` (a tqdm in bytes) follows the compressed position."""
    if archive.name.lower().endswith(".zip"):
        yield from _iter_zip(archive, bar)
    else:
        yield from _iter_tar(archive, bar)


def _corrupt(archive: Path, err: BaseException) -> FcnetError:
    return FcnetError(f"{archive}: truncated or corrupt archive ({one_line(err)})")


def _iter_tar(archive: Path, bar) -> Iterator[tuple[str, bytes | None]]:
    try:
        with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
            for m in tf:
                name = safe_name(archive, m.name)
                if m.issym() or m.islnk():
                    raise FcnetError(f"{archive}: member {m.name!r} is a link (to {m.linkname!r}); "
                                     "refusing the archive")
                if m.isdir():
                    yield name + "/", None
                elif m.isreg():
                    f = tf.extractfile(m)
                    data = f.read() if f is not None else b""
                    if len(data) != m.size:
                        raise EOFError(f"member {m.name!r} is cut short")
                    yield name, data
                else:
                    raise FcnetError(f"{archive}: member {m.name!r} is not a regular file or "
                                     "folder; refusing the archive")
                if bar is not None:
                    bar.update(raw.tell() - bar.n)
            # read to the end so gzip/bz2/xz check their trailer (CRC, length)
            while tf.fileobj.read(1 << 20):
                pass
            if bar is not None:
                bar.update(raw.tell() - bar.n)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise _corrupt(archive, err) from None


def _iter_zip(archive: Path, bar) -> Iterator[tuple[str, bytes | None]]:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = safe_name(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise FcnetError(f"{archive}: member {info.filename!r} is a link; "
                                     "refusing the archive")
                if info.is_dir():
                    yield name + "/", None
                else:
                    yield name, zf.read(info)
                if bar is not None:
                    bar.update(info.compress_size)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError,
            NotImplementedError) as err:
        raise _corrupt(archive, err) from None
