"""What makes two runs the same computation (runs/runfolder.SAME_RUN): every field of a run's config, changed on
its own, is either named as a change that would mix two runs, or listed below as one that may change between
attempts. A field added to the schema is same-run until it is listed here with a reason; a field dropped from
SAME_RUN by mistake fails its case."""
from __future__ import annotations

import pytest

from imginav_lib.config.schema import Architecture, Data, Loss, RunConfig, Training
from imginav_lib.runs.runfolder import config_changes

# May differ between attempts of one run: where it runs from, how long, how often it logs, what it shows.
MAY_CHANGE = {
    "phase", "experiment", "run_dir", "params_file", "params_hash",  # the same run read from another checkout
    "overrides",  # checked on its own: the values they set are what counts (test_lifecycle)
    "training.epochs",  # raised to extend a run; lowering below what it has run is refused elsewhere
    "training.checkpoint_interval", "training.sample_interval", "training.log_every", "training.heartbeat_s",
    "data.manifest", "data.cache_dir",  # paths: the cache key holds the content
    "data.on_bad_image", "data.workers", "data.num_samples",
}


def base_config() -> dict:
    return RunConfig(phase="p", experiment="F1", seed=1, run_dir="/r/p/F1/seed1", params_file="/p.yaml",
                     params_hash="abc", data=Data(manifest="m.csv"), architecture=Architecture(),
                     training=Training(), loss=Loss()).model_dump()  # fmt: skip


def leaves(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        name = f"{prefix}{k}"
        out += leaves(v, f"{name}.") if isinstance(v, dict) and v else [name]
    return out


def changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    return 1  # None


def with_change(config: dict, name: str) -> dict:
    import copy

    out = copy.deepcopy(config)
    *path, last = name.split(".")
    d = out
    for k in path:
        d = d[k]
    d[last] = changed(d[last])
    return out


@pytest.mark.parametrize("name", leaves(base_config()))
def test_every_field_is_same_run_unless_listed(name):
    config = base_config()
    changes = config_changes(config, with_change(config, name))
    if name in MAY_CHANGE:
        assert changes == [], f"{name} may change between attempts, but is named: {changes}"
    else:
        assert len(changes) == 1 and changes[0].startswith(f"{name} "), f"{name} changed, reported: {changes}"


def test_the_list_of_fields_that_may_change_names_real_fields():
    assert MAY_CHANGE <= set(leaves(base_config()))


def test_a_run_saved_before_a_field_existed_compares_with_the_value_it_used():
    """runfolder.ADDED: data.split was added later; runs saved before it used `fixed`."""
    config = base_config()
    old = __import__("copy").deepcopy(config)
    del old["data"]["split"]
    assert config["data"]["split"] == "fixed" and config_changes(old, config) == []
    per_seed = with_change(config, "data.split")  # any other value is a change from what the old run used
    assert config_changes(old, per_seed) == [f"data.split fixed → {per_seed['data']['split']}"]


def test_a_field_missing_on_one_side_is_named_unset():
    config = base_config()
    old = __import__("copy").deepcopy(config)
    del old["loss"]["kl"]
    assert config_changes(old, config) == [f"loss.kl unset → {config['loss']['kl']}"]
    assert config_changes(config, old) == [f"loss.kl {config['loss']['kl']} → unset"]


def test_early_stopping_switched_on_or_off_is_one_change():
    config = base_config()
    off = __import__("copy").deepcopy(config)
    off["training"]["early_stopping"] = None
    assert config_changes(off, config) == [f"training.early_stopping unset → {config['training']['early_stopping']}"]
    assert config_changes(config, off) == [f"training.early_stopping {config['training']['early_stopping']} → unset"]
