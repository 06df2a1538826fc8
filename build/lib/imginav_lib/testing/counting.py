"""How many images `prepare_cache` decodes in this process, for tests that prove a cache is reused.

Importing this module wraps the cache's build step (which returns the number of images it decoded); the library
itself keeps no counter.
"""
from __future__ import annotations

from imginav_lib.data import cache

_decoded = [0]
_build = cache._build


def _counting_build(*args, **kwargs) -> int:
    n = _build(*args, **kwargs)
    _decoded[0] += n
    return n


cache._build = _counting_build


def decode_count() -> int:
    """Images decoded by this process's prepares since it imported this module."""
    return _decoded[0]
