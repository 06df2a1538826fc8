"""The one reader of the YAML files a user gives (phase params, `architecture_from:` winner files).

Each way such a file can be bad (unreadable or not a regular file, not UTF-8, invalid YAML, a key given twice,
nesting deeper than MAX_DEPTH, more than MAX_VALUES values once aliases are expanded, a top level that is not a
mapping) ends in one `InputError` line naming the file, and where it can, the line and column. `--set` values
(overrides.py) go through the same `load_yaml`.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from imginav_lib.errors import InputError
from imginav_lib.files import read_input_bytes

MAX_DEPTH = 20  # nested mappings/lists; the deepest params section is 4 (decision.handoff.training.early_stopping)
MAX_VALUES = 100_000  # values after alias expansion: a YAML alias bomb (billion laughs) stops here


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


def _check_depth(text: str, loader) -> None:
    """Refuse nesting deeper than MAX_DEPTH from the event stream (PyYAML's parser is iterative; its composer and
    constructor recurse, so a deeper document would end in a RecursionError there)."""
    depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.parser.ParserError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _check_size(value) -> None:
    """Refuse more than MAX_VALUES values or MAX_DEPTH levels as the schema would see them: aliases expanded (a
    YAML alias bomb), a self-referencing alias (`a: &a [*a]`) included. Stops counting at the limit."""
    stack, count = [(value, 1)], 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ValueError(f"more than {MAX_VALUES:,} values once its aliases are expanded (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels once its aliases are expanded")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for kv in node.items() for v in kv)
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def load_yaml(text: str, source: str):
    """Parse YAML text (a file's or a --set value's) with the unique-key loader and the bounds above; raises
    InputError `<source>: invalid YAML[ at line L, column C]: <problem>`."""
    try:
        _check_depth(text, _UniqueKeyLoader)
        value = yaml.load(text, Loader=_UniqueKeyLoader)
        _check_size(value)
        return value
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"{source}: invalid YAML{where}: {' '.join(str(e.problem or e.context).split())}") from None
    except yaml.YAMLError as e:  # e.g. a control character the reader refuses
        raise InputError(f"{source}: invalid YAML: {str(e).splitlines()[0]}") from None
    except (ValueError, RecursionError) as e:  # _check_size; RecursionError: a limit above was not enough
        raise InputError(f"{source}: {e or 'nested too deeply'}") from None


def read_yaml(path: str | Path) -> dict:
    """The one reader of the YAML files a user gives (params, winner files): a mapping with string keys.

    Raises InputError naming the file: unreadable or not a regular file, not UTF-8, invalid YAML (with line and
    column), a key given twice, too deep or too large, or a top level that is not a mapping.
    """
    path = Path(path)
    data = read_input_bytes(path)
    try:
        text = data.decode("utf-8-sig")  # a BOM from a Windows editor is harmless
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}: not UTF-8 text: byte 0x{data[e.start]:02x} on line {line} (save the file as UTF-8)") from None
    raw = load_yaml(text, str(path))
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise InputError(f"{path}: expected a mapping (key: value lines) at the top level, got {got}")
    for key in raw:
        if not isinstance(key, str):
            raise InputError(f"{path}: top-level key {key!r} is not a name")
    return raw
