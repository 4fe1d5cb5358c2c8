"""Similar submissions: pairs whose ``two_layernet.py`` is near-identical once names, comments and
whitespace are normalised (copydetect's MOSS-style winnowing fingerprints; each file's similarity is the
share of its fingerprints found in the other).  The template (MOSS's "base file") never counts."""

from __future__ import annotations

import contextlib
import io
import itertools
from typing import NamedTuple

NOISE = 25  # k-gram length in tokens: shorter matches are noise (copydetect's default)
WINDOW = 1  # every k-gram is a fingerprint: the files are small
THRESHOLD = 0.8  # both files at least this similar to each other


class Pair(NamedTuple):
    """Two similar submissions: the share of each found in the other, and the lines (1-based) shared."""

    a: str
    b: str
    sim_a: float
    sim_b: float
    lines_a: tuple[int, ...]
    lines_b: tuple[int, ...]


def _fingerprint(source: str, boilerplate: list[int] | None):
    from copydetect import CodeFingerprint

    return CodeFingerprint("two_layernet.py", NOISE, WINDOW, boilerplate=boilerplate, fp=io.StringIO(source))


def _lines(source: str, slices, given: set[str]) -> tuple[int, ...]:
    """The lines the character ranges ``slices`` (2 x n: starts, ends) touch, but blank
    ones and those of the template (``given``: its stripped lines)."""
    out: set[int] = set()
    for start, end in zip(*slices):
        first = source.count("\n", 0, int(start)) + 1
        out.update(range(first, source.count("\n", 0, max(int(end) - 1, int(start))) + 2))
    text = source.splitlines()
    return tuple(n for n in sorted(out) if n <= len(text) and text[n - 1].strip()
                 and text[n - 1].strip() not in given)


def similar_pairs(sources: dict[str, str], template: str | None = None,
                  threshold: float = THRESHOLD) -> list[Pair]:
    """Pairs of submissions (name -> source) at least ``threshold`` similar both ways,
    most similar first.  Sources that cannot be tokenised (or have no fingerprints) are left out."""
    from copydetect import compare_files

    base = list(_fingerprint(template, None).hashes) if template else None
    given = {line.strip() for line in (template or "").splitlines()}
    prints = {}
    for name, src in sources.items():
        with contextlib.suppress(ValueError, IndexError, TypeError, RecursionError):
            if src.strip() and (fp := _fingerprint(src, base)).hashes:
                prints[name] = fp
    pairs = []
    for a, b in itertools.combinations(sorted(prints), 2):
        _, (sa, sb), (slices_a, slices_b) = compare_files(prints[a], prints[b])
        if min(sa, sb) >= threshold:
            pairs.append(Pair(a, b, float(sa), float(sb), _lines(sources[a], slices_a, given),
                              _lines(sources[b], slices_b, given)))
    return sorted(pairs, key=lambda p: (-min(p.sim_a, p.sim_b), p.a, p.b))
