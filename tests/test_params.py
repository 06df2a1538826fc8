import subprocess
import sys

import pytest
import yaml

from imginav_lib.errors import InputError
from imginav_lib.config.params import load_params, resolve_run, runs_of

from conftest import REPO


def _write(tmp_path, params):
    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(params))
    return p


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "imginav_lib.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_repo_params_files_validate(real_manifest, monkeypatch):
    monkeypatch.setenv("IMGINAV_DATA", str(real_manifest.parent))
    phase = load_params(REPO / "params" / "phase1_4.yaml")
    assert list(phase.experiments) == ["phase1_4_AE_F1_rgb_only", "phase1_4_AE_F2_rgb_seg", "phase1_4_AE_F3_rgb_seg_cls"]
    weights = [
        resolve_run(REPO / "params" / "phase1_4.yaml", e, 42).loss.model_dump(include={"mse", "seg", "cls"})
        for e in phase.experiments
    ]
    assert weights == [
        {"mse": 1.0, "seg": 0.0, "cls": 0.0},
        {"mse": 1.0, "seg": 0.05, "cls": 0.0},
        {"mse": 1.0, "seg": 0.05, "cls": 0.01},
    ]
    assert phase.seeds == [42, 43, 44, 45, 46]  # one seed gives no interval; 5 for the power (issue 12)
    demo = load_params(REPO / "params" / "phase1_4_demo.yaml", check_files=False)
    assert len(runs_of(demo)) == 9
    arch = load_params(REPO / "params" / "phase1_3_demo.yaml", check_files=False)
    assert [resolve_arch.latent_channels for resolve_arch in
            (arch.architecture.model_copy(update=o.architecture) for o in arch.experiments.values())] == [4, 8]
    for p in (demo, arch):  # CPU-only clusters: no GPU asked for, so sbatch gets no --gres
        assert p.cluster.defaults.gpus == 0 and p.cluster.report.gpus == 0


def test_overrides_merge_into_defaults(tiny):
    cfg = resolve_run(tiny, "F3", 1)
    assert (cfg.loss.seg, cfg.loss.cls, cfg.loss.mse) == (0.05, 0.01, 1.0)
    assert cfg.training.epochs == 2 and cfg.run_dir.endswith("tiny/F3/seed1")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p["training"].update(epochz=3), "training.epochz: unknown key"),
        (lambda p: p["experiments"]["F3"]["loss"].update(seg=-0.1), "experiments.F3.loss: seg: Input should be greater than or equal to 0"),
        (lambda p: p["experiments"]["F3"].update(loss={"mse": 0}), "experiments.F3.loss: mse, seg and cls weights are all zero"),
        (lambda p: p["data"].update(manifest="nope.csv"), "data.manifest: file not found"),
        (lambda p: p["training"].update(batch_size="sixteen"), "training.batch_size: Input should be a valid integer"),
        (lambda p: p["architecture"].update(base_channels=12), "base_channels 12 is not divisible by norm_groups 8"),
        (lambda p: p.update(decision={"baseline": "F9"}), "decision.baseline: 'F9' is not an experiment"),
        (lambda p: p["data"].update(workers=0), "data.workers: Input should be greater than or equal to 1"),
    ],
)
def test_bad_params_one_line_error(tmp_path, tiny, mutate, message):
    params = yaml.safe_load(tiny.read_text())
    mutate(params)
    p = _write(tmp_path, params)
    with pytest.raises(InputError) as e:
        load_params(p)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_validate_cli_exit_2_one_line_and_creates_nothing(tmp_path, tiny):
    params = yaml.safe_load(tiny.read_text())
    params["loss"] = {"mse": 1.0, "sgе": 0.1}  # typo'd key
    p = _write(tmp_path, params)
    before = sorted(tmp_path.rglob("*"))
    for cmd in ("validate", "run"):
        r = _cli(cmd, str(p), cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "loss.sgе: unknown key" in r.stderr and "Traceback" not in r.stderr
    assert sorted(tmp_path.rglob("*")) == before


def test_validate_cli_ok(tiny):
    r = _cli("validate", str(tiny), cwd=tiny.parent)
    assert r.returncode == 0 and "2 experiments x 1 seed = 2 runs" in r.stdout


def test_architecture_from_a_winner_file(tmp_path, tiny):
    winner = tmp_path / "winner.yaml"
    winner.write_text(yaml.safe_dump({"winner": "F2", "architecture": {"latent_channels": 16, "base_channels": 16, "downsampling_steps": 3}}))
    params = yaml.safe_load(tiny.read_text())
    params["architecture_from"] = str(winner)
    params.pop("architecture")
    p = _write(tmp_path, params)
    assert load_params(p).architecture.latent_channels == 16
    params["architecture_from"] = "missing.yaml"
    with pytest.raises(InputError, match="architecture_from: file not found"):
        load_params(_write(tmp_path, params))


def test_set_overrides_are_typed_by_the_schema_and_recorded(tiny):
    sets = ["training.epochs=3", "experiments.F3.loss.seg=0.1", "seeds=[1, 2]", "training.lr=1e-3"]
    phase = load_params(tiny, overrides=sets)
    assert phase.training.epochs == 3 and phase.seeds == [1, 2] and phase.training.lr == 1e-3
    cfg = resolve_run(tiny, "F3", 1, overrides=sets)
    assert (cfg.loss.seg, cfg.training.epochs, cfg.overrides) == (0.1, 3, sets)
    plain = resolve_run(tiny, "F3", 1)
    assert plain.params_hash != cfg.params_hash and plain.overrides == []
    assert resolve_run(tiny, "F3", 1, overrides=sets[:1]).params_hash != cfg.params_hash


@pytest.mark.parametrize(
    "item, message",
    [
        ("training.epochz=2", "--set training.epochz=2 (on "),
        ("training.epochs=two", "training.epochs: Input should be a valid integer"),
        ("experiments.F9.loss.seg=0.1", "--set experiments.F9.loss.seg=0.1: no experiment 'F9' (have: F1, F3)"),
        ("experiments.F3.loss.seg=-1", "experiments.F3.loss: seg: Input should be greater than or equal to 0"),
        ("training.epochs", "--set training.epochs: expected key.path=value"),
        ("training.epochs.x=1", "training.epochs is a value, not a section"),
        ("decision.steps=[[F1, F7]]", "decision.steps: 'F7' is not an experiment"),
    ],
)
def test_bad_set_is_a_one_line_error_naming_it(tiny, item, message):
    with pytest.raises(InputError) as e:
        load_params(tiny, overrides=["training.epochs=3", item])
    assert message in str(e.value) and "\n" not in str(e.value)
    if "epochz" in item:
        assert "training.epochz: unknown key" in str(e.value)


def test_a_winner_architecture_replaces_the_files_and_set_applies_on_top(tmp_path, tiny):
    winner = tmp_path / "winner.yaml"
    winner.write_text(yaml.safe_dump({"architecture": {"latent_channels": 16, "base_channels": 16, "downsampling_steps": 3}}))
    phase = load_params(tiny, overrides=[f"architecture_from={winner}", "architecture.latent_channels=2"])
    assert (phase.architecture.latent_channels, phase.architecture.base_channels) == (2, 16)
    assert load_params(tiny, overrides=[f"architecture_from={winner}"]).architecture.latent_channels == 16


def test_bad_set_on_the_cli_is_exit_2_one_line_and_creates_nothing(tmp_path, tiny):
    before = sorted(tmp_path.rglob("*"))
    for cmd in ("validate", "run"):
        r = _cli(cmd, str(tiny), "--set", "training.epochz=2", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith("imginav: error: --set training.epochz=2") and "unknown key" in r.stderr
    assert sorted(tmp_path.rglob("*")) == before
    r = _cli("validate", str(tiny), "--set", "training.epochs=3", "--set", "seeds=[1, 2]", cwd=tmp_path)
    assert r.returncode == 0 and "2 experiments x 2 seeds = 4 runs" in r.stdout


def test_a_run_made_under_other_overrides_is_refused_naming_the_field(tmp_path, tiny):
    from imginav_lib.launch.runner import run_phase
    from imginav_lib.config.params import resolve_run
    from imginav_lib.runs.runfolder import RunFolder

    cfg = resolve_run(tiny, "F3", 1, overrides=["experiments.F3.loss.seg=0.1"])
    RunFolder(cfg.run_dir).write_config(cfg.model_dump())  # a run started under that --set
    with pytest.raises(InputError, match=r"experiment F3 seed 1: loss.seg 0.1 → 0.05 would mix two runs"):
        run_phase(tiny, dry_run=True)  # the file's own weight: refused like an edit of the file
    with pytest.raises(InputError, match=r"loss.seg 0.1 → 0.2 would mix two runs"):
        run_phase(tiny, dry_run=True, overrides=["experiments.F3.loss.seg=0.2"])
    assert run_phase(tiny, dry_run=True, overrides=["experiments.F3.loss.seg=0.1"]) == 0  # the same overrides: fine
    assert run_phase(tiny, dry_run=True, overrides=["experiments.F3.loss.seg=0.1", "training.epochs=3"]) == 0  # more epochs


def test_phase1_4_states_a_precision_native_on_both_its_queues_and_splits_by_scene_with_a_test_split():
    phase = load_params(REPO / "params" / "phase1_4.yaml", check_files=False)
    assert phase.training.precision == "fp16"  # V100 (7.0) and L40s (8.9) both have fp16 units; bf16 only the L40s
    assert phase.cluster.assign == "by_seed" and phase.cluster.queues == ["gpuv100", "gpul40s"]
    assert phase.data.group_by == "auto" and phase.data.test_fraction == 0.1
    for name in ("phase1_4_demo.yaml", "phase1_3_demo.yaml"):
        assert load_params(REPO / "params" / name, check_files=False).data.test_fraction == 0.1
