"""The mutation runner's one judgement call: mutants inside annotations are left out."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mutation_run import annotation_spans  # noqa: E402


def test_annotation_spans_cover_annotations_and_nothing_else():
    src = ("from __future__ import annotations\n"
           "def f(x: int | None, y='é') -> dict[str, int]:\n"
           "    z: a | b = 1\n"
           "    return x | 1\n")
    lines = src.splitlines()
    got = sorted(lines[a[0] - 1][a[1]:b[1]] for a, b in annotation_spans(src))
    # columns are characters: the 'é' before the return annotation does not shift it
    assert got == ["a | b", "dict[str, int]", "int | None"]
    assert all(a[0] != 4 for a, _ in annotation_spans(src))  # `x | 1` is code
