"""`--set key.path=value` overrides of a phase params file (`imginav run` and `validate`).

The values are read as YAML and applied to the raw params mapping; params.load_params then checks the result with
the same schema as the file's, so a bad override is an error naming its `--set`.
"""
from __future__ import annotations

import copy

from imginav_lib.config.yaml_file import MAX_DEPTH, load_yaml
from imginav_lib.errors import InputError


def parse_set(item: str) -> tuple[list[str], object]:
    """`training.epochs=2` -> (["training", "epochs"], 2): the value is read as YAML (2, 0.1, true, [42, 43], text);
    its type is then checked by the same schema as the file's."""
    key, sep, text = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(p.strip() for p in path):
        raise InputError(f"--set {item}: expected key.path=value, e.g. training.epochs=2")
    if len(path) > MAX_DEPTH:  # no params key is that deep; copying such a mapping would end in a RecursionError
        raise InputError(f"--set {item}: the key path is deeper than {MAX_DEPTH} levels")
    value = load_yaml(text, f"--set {item}: value") if text.strip() else ""  # the bounds of a params file too
    return [p.strip() for p in path], value


def apply_sets(raw: dict, overrides: list[str] | tuple) -> dict:
    """A copy of the raw params mapping with each `key.path=value` set. An experiment must exist in the file (a
    --set cannot add one); every other key is checked by the schema afterwards (unknown keys are errors there)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_set(item)
        if path[0] == "experiments" and len(path) > 1 and path[1] not in (raw.get("experiments") or {}):
            have = ", ".join(raw.get("experiments") or {}) or "none"
            raise InputError(f"--set {item}: no experiment {path[1]!r} (have: {have})")
        node = raw
        for i, k in enumerate(path[:-1]):
            if node.get(k) is None:
                node[k] = {}
            elif not isinstance(node[k], dict):
                raise InputError(f"--set {item}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = node[k]
        node[path[-1]] = value
    return raw
