"""Reading .tar / .tar.gz / .zip archives member by member, in memory, never extracting to disk; a member
whose path escapes the root (``..``, absolute, a drive letter), a link or a device refuses the archive."""

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
    """Yield ``(relative name, bytes)`` per file, ``(name + "/", None)`` per folder; ``bar`` counts bytes."""
    try:
        yield from (_iter_zip if archive.name.lower().endswith(".zip") else _iter_tar)(archive, bar)
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error,
            OSError, NotImplementedError) as err:
        raise FcnetError(f"{archive}: truncated or corrupt archive ({one_line(err)})") from None


def _iter_tar(archive: Path, bar) -> Iterator[tuple[str, bytes | None]]:
    with open(archive, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
        for m in tf:
            name = safe_name(archive, m.name)
            if m.issym() or m.islnk():
                raise FcnetError(f"{archive}: member {m.name!r} is a link (to {m.linkname!r}); "
                                 "refusing the archive")
            if m.isdir():
                yield name + "/", None
            elif m.isreg():
                data = tf.extractfile(m).read()  # never None for a regular file
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


def _iter_zip(archive: Path, bar) -> Iterator[tuple[str, bytes | None]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = safe_name(archive, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise FcnetError(f"{archive}: member {info.filename!r} is a link; refusing the archive")
            yield (name + "/", None) if info.is_dir() else (name, zf.read(info))
            if bar is not None:
                bar.update(info.compress_size)
