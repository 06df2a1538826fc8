"""Paths in a params file: `~` and `${VAR}` expanded (so a cluster user keeps their paths out of the file:
IMGINAV_DATA, IMGINAV_SCRATCH, ...), relative ones taken from the params file's folder. The one place that does it."""
from __future__ import annotations

import os
import re
from pathlib import Path

_VAR = re.compile(r"\$\{?(\w+)\}?")


def unset_variables(value: str | None) -> list[str]:
    """The environment variables `value` names that this process has not set, in order."""
    return [v for v in _VAR.findall(value or "") if v not in os.environ]


def expand_path(value: str, base: Path) -> Path | None:
    """`value` with `~` and `${VAR}` expanded, relative to `base` unless absolute; None if it names an unset variable."""
    if unset_variables(value):
        return None
    p = Path(os.path.expanduser(os.path.expandvars(value)))
    return p if p.is_absolute() else (Path(base) / p).resolve()
