"""Small text helpers shared by the command line, the launcher and the analysis's sentences."""
from __future__ import annotations

import math


def plural(n: int, word: str) -> str:
    """"1 run", "2 runs"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fmt_duration(s: float | None) -> str:
    """Seconds as m:ss or h:mm:ss; "-" when unknown."""
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def pct(x: float) -> str:
    """A relative change as a signed percentage: 0.013 -> "+1.3%"; "n/a" when it is not a number."""
    return f"{x * 100:+.1f}%" if math.isfinite(x) else "n/a"
