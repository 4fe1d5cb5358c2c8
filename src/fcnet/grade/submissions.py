"""Finding submissions (a ``.py``, a folder with ``two_layernet.py``, a ``.zip`` of one, or a folder of
them) and copying each into the run's private folder; zips are read through ``fcnet.data.archive`` (no
path traversal, no links), capped in size.  Faults in what the user named raise FcnetError; a bad
entry in a folder of submissions is graded 0 with the reason."""

from __future__ import annotations

import os
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fcnet.data.archive import iter_members, one_line
from fcnet.errors import FcnetError

ENTRY = "two_layernet.py"
MAX_BYTES = 64 << 20
MAX_FILES = 2000
_SKIP = {"__MACOSX", "__pycache__", ".git"}


@dataclass
class Submission:
    name: str
    path: Path
    problem: str | None = None  # set when it cannot be graded at all


def _zip_files(path: Path) -> list[tuple[str, bytes]]:
    """The files of the folder holding two_layernet.py inside the zip; FcnetError when unusable."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise FcnetError(f"{path}: not a valid zip file ({one_line(err)})") from None
    if len(infos) > MAX_FILES or sum(i.file_size for i in infos) > MAX_BYTES:
        raise FcnetError(f"{path}: more than {MAX_FILES} files or {MAX_BYTES >> 20} MB unpacked")
    files = [(n, b) for n, b in iter_members(path) if b is not None
             and not any(part in _SKIP for part in n.split("/"))]
    entries = sorted((n for n, _ in files if n.rsplit("/", 1)[-1] == ENTRY), key=lambda n: n.count("/"))
    if not entries:
        raise FcnetError(f"{path}: no {ENTRY} in the zip")
    if len(entries) > 1 and entries[0].count("/") == entries[1].count("/"):
        raise FcnetError(f"{path}: {entries[0]} and {entries[1]}: which one is the submission?")
    root = entries[0][: -len(ENTRY)]
    return [(n[len(root):], b) for n, b in files if n.startswith(root)]


def _check(path: Path) -> None:
    """Raise FcnetError when ``path`` cannot be a submission."""
    if not path.is_file() and not (path / ENTRY).is_file():
        raise FcnetError(f"{path}: no {ENTRY} in the folder")
    if path.suffix.lower() == ".zip":
        _zip_files(path)


def collect(paths: list[str | os.PathLike], exclude: list[Path] = ()) -> list[Submission]:
    """The submissions named, each under a unique name, in order (``exclude``: folders never taken)."""
    skip = {Path(e).resolve() for e in exclude}
    subs: list[Submission] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise FcnetError(f"{p}: no such file or directory")
        if p.is_file():
            if p.suffix.lower() not in (".py", ".zip"):
                raise FcnetError(f"{p}: a submission is a .py file, a .zip or a folder with {ENTRY}")
            _check(p)
            subs.append(Submission(p.stem if p.name != ENTRY else p.parent.name, p))
        elif (p / ENTRY).is_file():
            subs.append(Submission(p.resolve().name, p))
        else:
            inner = sorted(c for c in p.iterdir() if not c.name.startswith(".") and c.name not in _SKIP
                           and (c.is_dir() or c.suffix.lower() in (".py", ".zip"))
                           and c.resolve() not in skip)
            if not inner:
                raise FcnetError(f"{p}: no {ENTRY} in the folder, and no submissions in it "
                                 "(.py files, .zip files or folders)")
            for c in inner:
                sub = Submission(c.stem if c.is_file() else c.name, c)
                try:
                    _check(c)
                except FcnetError as err:
                    sub.problem = str(err).removeprefix(f"{c}: ")
                subs.append(sub)
    taken = Counter()
    for s in subs:
        taken[s.name] += 1
        if taken[s.name] > 1:
            s.name = f"{s.name}-{taken[s.name]}"
    return subs


def stage(sub: Submission, dest: Path) -> None:
    """Make ``dest`` with the submission's regular files (no links), world-readable, ENTRY on top."""
    dest.mkdir(mode=0o755)
    p = sub.path
    if p.is_file():
        files = [(ENTRY, p.read_bytes())] if p.suffix.lower() == ".py" else _zip_files(p)
    else:
        files, total = [], 0
        for root, dirs, names in os.walk(p):  # os.walk does not follow links to folders
            dirs[:] = [d for d in dirs if d not in _SKIP]
            for src in (Path(root) / n for n in names):
                if src.is_symlink() or not src.is_file():
                    continue
                total += src.stat().st_size
                if total > MAX_BYTES or len(files) >= MAX_FILES:
                    raise FcnetError(f"{p}: more than {MAX_FILES} files or {MAX_BYTES >> 20} MB")
                files.append((src.relative_to(p), src.read_bytes()))
    for rel, data in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        (dest / rel).write_bytes(data)
        os.chmod(dest / rel, 0o644)
