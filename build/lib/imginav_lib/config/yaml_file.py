"""The one reader of the YAML files a user gives (phase params, `architecture_from:` winner files).

Each way such a file can be bad (unreadable, not UTF-8, invalid YAML, a key given twice, a top level that is not
a mapping) ends in one `InputError` line naming the file, and where it can, the line and column.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from imginav_lib.errors import InputError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML would silently keep the last one)."""


def _mapping_without_repeats(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *defaults` may be overridden by the mapping's own keys: that is no repeat
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)):
            continue  # construct_mapping says what is wrong with an unhashable key
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def read_yaml(path: str | Path) -> dict:
    """The one reader of the YAML files a user gives (params, winner files): a mapping with string keys.

    Raises InputError naming the file: unreadable, not UTF-8, invalid YAML (with line and column), a key given
    twice, or a top level that is not a mapping.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")  # a BOM from a Windows editor is harmless
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} (save the file as UTF-8)") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"{path}: invalid YAML{where}: {' '.join(str(e.problem or e.context).split())}") from None
    except yaml.YAMLError as e:  # e.g. a control character the reader refuses
        raise InputError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise InputError(f"{path}: expected a mapping (key: value lines) at the top level, got {got}")
    for key in raw:
        if not isinstance(key, str):
            raise InputError(f"{path}: top-level key {key!r} is not a name")
    return raw
