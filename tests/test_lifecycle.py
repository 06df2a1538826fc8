"""A phase lives for weeks: seeds, experiments and epochs are added to a finished phase without starting over;
what would mix two runs in one folder is refused, field by field. And the small things of `imginav run`."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from imginav_lib.launch import runner as launch
from imginav_lib.cli import build_parser, main
from imginav_lib.errors import InputError
from imginav_lib.config.params import resolve_run
from imginav_lib.runs.runfolder import RunFolder, read_index
from imginav_lib.train.trainer import fit

EXPERIMENTS = {"F1": {"note": "baseline"}, "F3": {"note": "all heads", "loss": {"seg": 0.05, "cls": 0.01}}}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    from imginav_lib.demo.layouts import make_layouts

    return make_layouts(tmp_path_factory.mktemp("layouts"), n=24, size=32, seed=0)


def params(tmp: Path, manifest: Path, seeds=(1, 2, 3), epochs=1, **over) -> Path:
    p = {
        "phase": "t",
        "runs_root": "runs",
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 2},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": epochs, "batch_size": 4, "log_every": 2, "lr": 1e-3},
        "seeds": list(seeds),
        "experiments": EXPERIMENTS,
        "cluster": {"defaults": {"cores": 1, "gpus": 0, "walltime": "0:30"}, "warning_minutes": 1},
        **over,
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "params.yaml"
    path.write_text("# the phase under test\n" + yaml.safe_dump(p, sort_keys=False))
    return path


def finish(params_file: Path, experiment: str, seed: int) -> RunFolder:
    """What a finished run leaves for the launcher to read: its config.yaml and a done run.json."""
    cfg = resolve_run(params_file, experiment, seed)
    folder = RunFolder(cfg.run_dir)
    folder.path.mkdir(parents=True)
    folder.write_config(cfg.model_dump())
    folder.write_info({"status": "done", "epoch": cfg.training.epochs, "epochs": cfg.training.epochs})
    return folder


def finished_phase(tmp: Path, manifest: Path, **kw) -> Path:
    p = params(tmp, manifest, **kw)
    for e in EXPERIMENTS:
        for s in yaml.safe_load(p.read_text())["seeds"]:
            finish(p, e, s)
    return p


def recording_notebook(tmp: Path) -> Path:
    """A stand-in for train.ipynb that finishes its run at once and appends 'experiment seed' to executed.txt."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('params_file = ""\nexperiment = ""\nseed = 0\nruns_root = None\nprogress = True')
    cell.metadata["tags"] = ["parameters"]
    body = ("from pathlib import Path\nfrom imginav_lib.config.params import resolve_run\nfrom imginav_lib.runs.runfolder import RunFolder\n"
            "cfg = resolve_run(params_file, experiment, seed, runs_root)\nf = RunFolder(cfg.run_dir)\n"
            "f.write_config(cfg.model_dump())\n"
            "f.write_info({'status': 'done', 'epoch': cfg.training.epochs, 'epochs': cfg.training.epochs})\n"
            f"with open({str(tmp / 'executed.txt')!r}, 'a') as log:\n    log.write(f'{{experiment}} {{seed}}\\n')\n")  # fmt: skip
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "record.ipynb")
    return tmp / "record.ipynb"


def edit(p: Path, change) -> None:
    raw = yaml.safe_load(p.read_text())
    change(raw)
    p.write_text(yaml.safe_dump(raw, sort_keys=False))


# ---------------------------------------------------------------------------------------------------------
# Growing a phase


def test_adding_two_seeds_to_a_finished_three_seed_phase_runs_only_the_new_seeds(tmp_path, layouts, monkeypatch, capsys):
    p = finished_phase(tmp_path, layouts, seeds=(1, 2, 3))
    edit(p, lambda raw: raw.update(seeds=[1, 2, 3, 4, 5]))  # "needs more seeds"
    monkeypatch.setenv(launch.NOTEBOOK_ENV, str(recording_notebook(tmp_path)))
    assert launch.run_phase(p, jobs=2, report=False) == 0
    executed = sorted((tmp_path / "executed.txt").read_text().split("\n")[:-1])
    assert executed == ["F1 4", "F1 5", "F3 4", "F3 5"]
    out = capsys.readouterr().out
    assert "skipping 6 finished runs: entries 1-3,6-8" in out and "report skipped (--no-report)" in out
    index = read_index(tmp_path / "runs" / "t" / "index.json")
    assert len(index["runs"]) == 10


def test_raising_epochs_resumes_a_finished_run_as_if_it_had_been_planned_that_long(tmp_path, layouts):
    p = params(tmp_path, layouts, seeds=(1,), epochs=1)
    fit(resolve_run(p, "F3", 1), progress=False)
    folder = RunFolder(tmp_path / "runs" / "t" / "F3" / "seed1")
    assert folder.finished(1) and not folder.finished(2)
    edit(p, lambda raw: raw["training"].update(epochs=2))
    result = fit(resolve_run(p, "F3", 1), progress=False)
    info = folder.read_info()
    assert (result.status, info["status"], info["epoch"], info["epochs"], info["attempts"]) == ("done", "done", 2, 2, 2)
    # The same run planned for 2 epochs from the start: identical rows, best epoch and final evaluation.
    straight = params(tmp_path / "straight", layouts, seeds=(1,), epochs=2)
    fit(resolve_run(straight, "F3", 1), progress=False)
    other = RunFolder(tmp_path / "straight" / "runs" / "t" / "F3" / "seed1")
    timing = ["epoch_time_s", "train_images_per_s"]
    pd.testing.assert_frame_equal(pd.read_csv(folder.metrics).drop(columns=timing), pd.read_csv(other.metrics).drop(columns=timing), rtol=1e-5)
    assert info["best_epoch"] == other.read_info()["best_epoch"]
    assert folder.read_eval()["epoch"] == other.read_eval()["epoch"]
    assert folder.read_eval()["val"]["val_mse"] == pytest.approx(other.read_eval()["val"]["val_mse"], rel=1e-5)


def test_raised_epochs_select_finished_runs_again_and_a_run_that_stopped_early_stays_finished(tmp_path, layouts, capsys):
    p = finished_phase(tmp_path, layouts, seeds=(1,), epochs=1)
    stopped = RunFolder(tmp_path / "runs" / "t" / "F1" / "seed1")
    stopped.write_info({**stopped.read_info(), "stopped_early": True})
    edit(p, lambda raw: raw["training"].update(epochs=3))
    assert main(["run", str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would write" in out and "run 1 run," in out and "# F3 seed 1" in out and "# F1 seed 1" not in out


def test_a_comment_note_decision_and_cluster_edit_is_accepted_and_recorded(tmp_path, layouts, monkeypatch, capsys):
    p = finished_phase(tmp_path, layouts, seeds=(1,))
    monkeypatch.setenv(launch.NOTEBOOK_ENV, str(recording_notebook(tmp_path)))
    assert launch.run_phase(p, report=False) == 0  # all finished: only the index is written
    phase_dir = tmp_path / "runs" / "t"
    p.write_text(p.read_text().replace("# the phase under test", "# the phase under test, now with a better comment"))
    # A job queued under the first version runs under the edited file: it is the same run.
    assert launch.run_one(phase_dir / "index.json", 1) == 0 and "already done" in capsys.readouterr().out
    assert launch.run_phase(p, report=False) == 0
    edit(p, lambda raw: (raw["experiments"]["F3"].update(note="seg + cls"), raw.update(decision={"alpha": 0.1}),
                         raw["cluster"]["defaults"].update(walltime="1:00"), raw["training"].update(sample_interval=2)))  # fmt: skip
    assert launch.run_phase(p, report=False) == 0
    assert not (tmp_path / "executed.txt").exists()  # nothing ran: every run is finished under every version
    versions = json.loads((phase_dir / "index.json").read_text())["params_versions"]
    assert [v["changed"] for v in versions] == [None, [], ["training.sample_interval", "experiments.F3.note", "cluster.defaults.walltime", "decision"]]
    assert all((phase_dir / "params_versions" / f"{v['params_hash']}.yaml").is_file() for v in versions)
    assert (phase_dir / "params.yaml").read_text() == p.read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda raw: raw["experiments"]["F3"]["loss"].update(seg=0.1), "experiment F3 seed 1: loss.seg 0.05 → 0.1 would mix two runs: use another runs_root"),
        (lambda raw: raw["architecture"].update(base_channels=16), "experiment F1 seed 1: architecture.base_channels 8 → 16 would mix two runs"),
        (lambda raw: raw["training"].update(lr=0.01), "training.lr 0.001 → 0.01 would mix"),
        (lambda raw: raw["training"].update(early_stopping={"patience": 9}), "training.early_stopping.patience 3 → 9"),
        (lambda raw: raw["data"].update(split_seed=7), "data.split_seed 42 → 7"),
    ],
)
def test_a_change_that_would_mix_two_runs_is_refused_naming_the_field(tmp_path, layouts, capsys, change, message):
    p = finished_phase(tmp_path, layouts, seeds=(1,))
    before = {f: f.read_bytes() for f in (tmp_path / "runs").rglob("*") if f.is_file()}
    edit(p, change)
    assert main(["run", str(p), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imginav: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert main(["run", str(p)]) == 2
    assert {f: f.read_bytes() for f in (tmp_path / "runs").rglob("*") if f.is_file()} == before  # nothing written


def test_lowering_epochs_below_what_a_run_has_done_is_refused(tmp_path, layouts, capsys):
    p = finished_phase(tmp_path, layouts, seeds=(1,), epochs=3)
    edit(p, lambda raw: raw["training"].update(epochs=2))
    assert main(["run", str(p), "--dry-run"]) == 2
    assert "training.epochs 3 → 2 is below the 3 epochs it has run" in capsys.readouterr().err


def test_a_job_queued_before_a_loss_change_refuses_to_run(tmp_path, layouts):
    p = params(tmp_path, layouts, seeds=(1,))
    index_file = launch.write_index(launch.load_params(p), p, tmp_path / "runs")
    edit(p, lambda raw: raw["experiments"]["F3"]["loss"].update(cls=0.02))
    with pytest.raises(InputError, match=r"changed since .* experiment F3 seed 1: loss.cls 0.01 → 0.02 would mix two runs"):
        launch.run_one(index_file, 2)


# ---------------------------------------------------------------------------------------------------------
# The smaller things


def test_only_takes_one_name_per_flag_and_leaves_what_follows_alone():
    a = build_parser().parse_args(["run", "--only", "F1", "params.yaml", "--only", "F3", "--no-report"])
    assert (a.params, a.only, a.no_report) == ("params.yaml", ["F1", "F3"], True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "params.yaml", "--only", "F1", "F3"])  # F3 is not swallowed: an error


def test_dry_run_with_an_unset_variable_warns_naming_it(tmp_path, layouts, capsys, monkeypatch):
    monkeypatch.delenv("IMGINAV_SCRATCH", raising=False)
    p = params(tmp_path, layouts, cluster={"runs_root": "${IMGINAV_SCRATCH}/runs", "warning_minutes": 1,
                                           "defaults": {"cores": 1, "gpus": 0, "walltime": "0:30"}})  # fmt: skip
    assert main(["run", str(p), "--backend", "slurm", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "imginav: warning: environment variable IMGINAV_SCRATCH is not set (cluster.runs_root)" in err
    assert main(["run", str(p), "--backend", "slurm"]) == 2
    assert "IMGINAV_SCRATCH is not set" in capsys.readouterr().err


def test_validate_counts_images_says_how_they_are_resized_and_uses_singular_words(tmp_path, layouts, capsys):
    p = params(tmp_path, layouts, seeds=(1,), experiments={"F1": {}})
    edit(p, lambda raw: raw["data"].update(image_size=512))
    assert main(["validate", str(p)]) == 0
    out = capsys.readouterr().out
    assert "1 experiment x 1 seed = 1 run" in out
    n = len(pd.read_csv(layouts))
    assert f"manifest: {n} images" in out and "the first is 32x32 px: images are upscaled to 512x512" in out


def test_make_layouts_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["make-layouts", "--help"])
    out = capsys.readouterr().out
    assert "(default: 300)" in out and "(default: 64)" in out and "(default: 0)" in out
