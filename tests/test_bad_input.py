"""Bad input, class by class, through the command line: exit code 2, one line `imginav: error: ...` naming the
file and the field, no traceback, and nothing created or changed (the folder tree is the same before and after).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import papermill
import pytest
import yaml

from imginav_lib.testing import synthetic as S
from imginav_lib.cli import main

from conftest import tiny_params


def tree(root: Path) -> dict[str, int]:
    """Every path under root with its size (-1 for folders): what 'nothing created or changed' compares."""
    return {str(p.relative_to(root)): (-1 if p.is_dir() else p.stat().st_size) for p in sorted(root.rglob("*"))}


def fails_cleanly(capsys, root: Path, argv: list[str], *expected: str) -> str:
    """Run the CLI in-process and check the promise; return the error line."""
    before = tree(root)
    capsys.readouterr()
    rc = main(argv)  # an exception escaping main fails the test: that would be a traceback
    out, err = capsys.readouterr()
    lines = [line for line in err.strip().splitlines() if "%|" not in line]  # tqdm's bar while images decode
    assert rc == 2, (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("imginav: error: ") and "Traceback" not in err, err
    for e in expected:
        assert e in lines[0], (e, lines[0])
    assert tree(root) == before
    return lines[0]


@pytest.fixture
def phase(tmp_path, labelled_manifest, monkeypatch):
    """A valid tiny params dict, a writer that saves a variant, and no kernel: report errors come before it."""
    monkeypatch.chdir(tmp_path)  # default outputs (reports/) would land here, inside the snapshot

    def no_kernel(*a, **k):
        raise AssertionError("papermill started a kernel for bad input")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    params = yaml.safe_load(tiny_params(tmp_path / "base", labelled_manifest).read_text())

    def write(mutate=None, name="p.yaml") -> Path:
        p = yaml.safe_load(yaml.safe_dump(params))
        if mutate:
            mutate(p)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(p, sort_keys=False))
        return path

    return write


def _set(section, **values):
    return lambda p: p.setdefault(section, {}).update(values)


# ---------------------------------------------------------------------------------------------------------
# One reader for every YAML file a user gives


GARBAGE = bytes(range(256)) * 4
LATIN1 = "phase: tiny\ndescription: première série\n".encode("latin-1")


@pytest.mark.parametrize(
    "content, expected",
    [
        (GARBAGE, "not UTF-8 text: byte 0x80 on line 2"),  # byte 10 is a newline
        (LATIN1, "not UTF-8 text: byte 0xe8 on line 2"),
        (b"phase: tiny\x00\n", "invalid YAML: unacceptable character #x0000"),
        (b"phase: tiny\ndata: {manifest: m.csv\n", "invalid YAML at line 3, column 1"),
        (b"phase: a: b\n", "invalid YAML at line 1, column 9: mapping values are not allowed here"),
        (b"- phase\n- data\n", "expected a mapping (key: value lines) at the top level, got a list"),
        (b"just words\n", "expected a mapping (key: value lines) at the top level, got a str"),
        (b"", "expected a mapping (key: value lines) at the top level, got an empty file"),
        (b"phase: a\nseeds: [1]\nseeds: [2]\n", "invalid YAML at line 3, column 1: key 'seeds' appears twice"),
        (b"1: a\n", "top-level key 1 is not a name"),
    ],
)
def test_params_file_that_is_not_a_yaml_mapping(tmp_path, phase, capsys, content, expected):
    p = tmp_path / "bad.yaml"
    p.write_bytes(content)
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], f"{p}: {expected}")


@pytest.mark.parametrize("cmd", [["validate"], ["prepare"], ["run"], ["run", "--dry-run"]])
def test_every_command_reads_params_through_the_same_reader(tmp_path, phase, capsys, cmd):
    p = tmp_path / "bad.yaml"
    p.write_bytes(LATIN1)
    fails_cleanly(capsys, tmp_path, [cmd[0], str(p), *cmd[1:]], f"{p}: not UTF-8 text")


def test_report_params_option_reads_through_the_same_reader(tmp_path, phase, capsys):
    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=2, sample_interval=1)
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"- a list\n")
    fails_cleanly(capsys, tmp_path, ["report", str(runs), "--params", str(p)], f"{p}: expected a mapping")


def test_unknown_keys_name_the_field(tmp_path, phase, capsys):
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("training", epochz=3)))], "p.yaml: training.epochz: unknown key")
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(lambda p: p.update(seedz=[1])))], "p.yaml: seedz: unknown key")


@pytest.mark.parametrize(
    "content, expected",
    [
        (GARBAGE, "not UTF-8 text"),
        (LATIN1, "not UTF-8 text: byte 0xe8 on line 2"),
        (b"architecture: {latent_channels: 4\n", "invalid YAML at line 2"),
        (b"- architecture\n", "expected a mapping (key: value lines) at the top level, got a list"),
        (b"winner: F2\n", "architecture: Field required"),
        (b"architecture: [4, 8]\n", "architecture: Input should be a valid dictionary"),
        (b"architecture: {latent_channels: 4}\nwinnr: F2\n", "winnr: unknown key"),
        (b"architecture: {latent_chanels: 4}\n", "architecture.latent_chanels: unknown key"),
        (b"architecture: {latent_channels: 4, latent_channels: 8}\n", "key 'latent_channels' appears twice"),
    ],
)
def test_bad_winner_file_names_both_files(tmp_path, phase, capsys, content, expected):
    winner = tmp_path / "winner.yaml"
    winner.write_bytes(content)
    p = phase(lambda p: p.update(architecture_from=str(winner)))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], f"{p}: architecture_from: {winner}: ", expected)


def test_architecture_from_must_be_a_path(tmp_path, phase, capsys):
    p = phase(lambda p: p.update(architecture_from=["winner.yaml"]))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: architecture_from: expected the path of a winner.yaml")


# ---------------------------------------------------------------------------------------------------------
# Every float finite


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    "section, key, field",
    [
        ("training", "lr", "training.lr"),
        ("training", "weight_decay", "training.weight_decay"),
        ("training", "heartbeat_s", "training.heartbeat_s"),
        ("loss", "seg", "loss.seg"),
        ("loss", "kl", "loss.kl"),
        ("data", "mask_tolerance", "data.mask_tolerance"),
        ("decision", "similar_tolerance", "decision.similar_tolerance"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path, phase, capsys, section, key, field, value):
    p = phase(_set(section, **{key: value}))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], f"p.yaml: {field}: Input should be a finite number")


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda p: p["experiments"]["F3"]["loss"].update(cls=float("inf")), "experiments.F3.loss: cls"),
        (lambda p: p["experiments"]["F3"].update(training={"lr": float("nan")}), "experiments.F3.training: lr"),
        (_set("training", early_stopping={"min_delta": float("inf")}), "training.early_stopping.min_delta"),
        (_set("decision", handoff={"training": {"lr": float("inf")}}), "decision.handoff: training.lr"),
        (_set("cluster", defaults={"mem_per_core_gb": float("inf")}), "cluster.defaults.mem_per_core_gb"),
    ],
)
def test_non_finite_numbers_in_nested_sections_are_refused(tmp_path, phase, capsys, mutate, field):
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(mutate))], f"p.yaml: {field}: Input should be a finite number")


# ---------------------------------------------------------------------------------------------------------
# Every name that becomes a folder


@pytest.mark.parametrize(
    "name, why",
    [("..", "starts with . or -"), (".hidden", "starts with . or -"), ("-F1", "starts with . or -"), ("", "empty"),
     ("a/b", "contains / or \\"), ("..\\up", "contains / or \\"), ("a\\b", "contains / or \\"),
     ("line\nbreak", "control character"), ("x" * 101, "longer than 100 characters")],
)
def test_experiment_names_that_cannot_be_folders(tmp_path, phase, capsys, name, why):
    p = phase(lambda p: p["experiments"].update({name: {}}))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: experiments: ", "is not a usable folder name", why)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "", "-x"])
def test_phase_names_that_leave_the_runs_root(tmp_path, phase, capsys, name):
    fails_cleanly(capsys, tmp_path, ["run", str(phase(lambda p: p.update(phase=name)))], "p.yaml: phase: ")
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("decision", handoff={"phase": name})))], "p.yaml: decision.handoff.phase: ")


def test_experiment_names_that_differ_only_in_case(tmp_path, phase, capsys):
    p = phase(lambda p: p["experiments"].update(f3={}))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: experiments: 'F3' and 'f3' differ only in case")


# ---------------------------------------------------------------------------------------------------------
# Every run folder a function of (phase, experiment, seed)


def test_duplicate_seeds_are_refused(tmp_path, phase, capsys):
    p = phase(lambda p: p.update(seeds=[42, 43, 42]))
    fails_cleanly(capsys, tmp_path, ["run", str(p)], "p.yaml: seeds: seed 42 is listed twice")
    p = phase(_set("decision", handoff={"seeds": [1, 1]}))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: decision.handoff.seeds: seed 1 is listed twice")


# ---------------------------------------------------------------------------------------------------------
# An image size the architecture can give back


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda p: (p["data"].update(image_size=20), p["architecture"].update(downsampling_steps=4)),
         "data.image_size: 20 px is not divisible by 2**4 = 16 (architecture.downsampling_steps of F1)"),
        (lambda p: (p["data"].update(image_size=40), p["experiments"]["F3"].update(architecture={"downsampling_steps": 4})),
         "data.image_size: 40 px is not divisible by 2**4 = 16 (experiments.F3.architecture.downsampling_steps of F3)"),
    ],
)
def test_image_size_must_divide_by_every_experiments_downsampling(tmp_path, phase, capsys, mutate, expected):
    fails_cleanly(capsys, tmp_path, ["run", str(phase(mutate))], f"p.yaml: {expected}")


def test_image_size_checked_against_a_winner_files_architecture(tmp_path, phase, capsys):
    winner = tmp_path / "winner.yaml"
    winner.write_text(yaml.safe_dump({"winner": "F2", "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 6}}))
    p = phase(lambda p: (p.pop("architecture"), p.update(architecture_from=str(winner))))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: data.image_size: 32 px is not divisible by 2**6 = 64")


# ---------------------------------------------------------------------------------------------------------
# Every output path checked before the expensive work


def test_cache_dir_that_is_a_file(tmp_path, phase, capsys):
    (tmp_path / "cachefile").write_text("not a folder")
    p = phase(_set("data", cache_dir=str(tmp_path / "cachefile")))
    for cmd in ("validate", "prepare", "run"):
        fails_cleanly(capsys, tmp_path, [cmd, str(p)], f"p.yaml: data.cache_dir: {tmp_path / 'cachefile'} is an existing file")
    p = phase(_set("data", cache_dir=str(tmp_path / "cachefile" / "sub")))
    fails_cleanly(capsys, tmp_path, ["prepare", str(p)], "p.yaml: data.cache_dir: cannot create", "cachefile is a file, not a folder")


def test_runs_root_that_is_a_file(tmp_path, phase, capsys):
    (tmp_path / "runsfile").write_text("not a folder")
    p = phase(lambda p: p.update(runs_root=str(tmp_path / "runsfile")))
    for cmd in ("validate", "run"):
        fails_cleanly(capsys, tmp_path, [cmd, str(p)], f"p.yaml: runs_root: {tmp_path / 'runsfile'} is an existing file")
    # a dry run may name cluster folders that do not exist here, but not a folder under a file
    fails_cleanly(capsys, tmp_path, ["run", str(p), "--dry-run"], "p.yaml: runs_root: cannot create", "runsfile is a file, not a folder")
    # --runs-root is checked before the cache is built (the snapshot holds no cache folder afterwards)
    fails_cleanly(capsys, tmp_path, ["run", str(phase()), "--runs-root", str(tmp_path / "runsfile")], "--runs-root: cannot create")


def test_phase_folder_that_is_a_file(tmp_path, phase, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "tiny").write_text("not a folder")
    p = phase(lambda p: p.update(runs_root=str(tmp_path / "runs")))
    fails_cleanly(capsys, tmp_path, ["run", str(p)], f"p.yaml: runs_root: {tmp_path / 'runs' / 'tiny'} is an existing file")


def test_report_output_that_cannot_be_written(tmp_path, phase, capsys):
    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=2, sample_interval=1)
    (tmp_path / "a_file").write_text("x")
    fails_cleanly(capsys, tmp_path, ["report", str(runs), "--out", str(tmp_path)], f"--out: {tmp_path} is a folder, not a file")
    fails_cleanly(capsys, tmp_path, ["report", str(runs), "--out", str(tmp_path / "a_file" / "r.html")],
                  f"--out: {tmp_path / 'a_file'} is an existing file, not a folder")
    (runs / "report.html").mkdir()  # a folder where the phase folder's report goes
    fails_cleanly(capsys, tmp_path, ["report", str(runs)], f"report: {runs / 'report.html'} is a folder, not a file")
    p = phase()
    cfg = yaml.safe_load(p.read_text())
    blocked = Path(cfg["runs_root"]) / cfg["phase"] / "report.html"
    blocked.mkdir(parents=True)
    fails_cleanly(capsys, tmp_path, ["run", str(p)], f"report: {blocked} is a folder, not a file")  # before training


def test_make_layouts_into_a_file(tmp_path, phase, capsys):
    (tmp_path / "out").write_text("x")
    fails_cleanly(capsys, tmp_path, ["make-layouts", str(tmp_path / "out"), "--n", "2"], "make-layouts: cannot create", "out is a file")


# ---------------------------------------------------------------------------------------------------------
# Manifests and images


def _manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layout_path", "type", "is_empty"])
        w.writerows(rows)
    return path


def test_empty_layout_path_names_the_row(tmp_path, phase, capsys, labelled_manifest):
    first = next(csv.DictReader(labelled_manifest.open()))["layout_path"]
    m = _manifest(tmp_path / "m.csv", [(first, "room", "false"), ("  ", "room", "false")])
    p = phase(_set("data", manifest=str(m)))
    fails_cleanly(capsys, tmp_path, ["prepare", str(p)], f"manifest {m}: row 3: empty layout_path")


@pytest.mark.parametrize(
    "content, expected",
    [(b"layout_path,type,is_empty\n\xff\xfe\x00garbage\n", "cannot parse CSV"),
     (b"layout_path,type,is_empty\na.png,room,false\nb.png,room,false,extra,more\n", "cannot parse CSV"),
     (b"path,kind\na.png,room\n", "missing column(s) layout_path, type, is_empty")],
)
def test_manifest_that_is_not_the_researchers_csv(tmp_path, phase, capsys, content, expected):
    m = tmp_path / "m.csv"
    m.write_bytes(content)
    fails_cleanly(capsys, tmp_path, ["prepare", str(phase(_set("data", manifest=str(m))))], f"manifest {m}: {expected}")


def test_unreadable_image_names_the_manifest_and_row(tmp_path, phase, capsys):
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    m = _manifest(tmp_path / "m.csv", [("a.png", "room", "false")])
    fails_cleanly(capsys, tmp_path, ["prepare", str(phase(_set("data", manifest=str(m))))], f"manifest {m}: 1 unreadable image(s): row 2: ")


def test_skip_mode_with_no_readable_image_names_the_manifest_and_reasons(tmp_path, phase, capsys):
    (tmp_path / "a.png").write_text("not a png")
    m = _manifest(tmp_path / "m.csv", [("a.png", "room", "false"), ("gone.png", "room", "false")])
    p = phase(_set("data", manifest=str(m), on_bad_image="skip"))
    fails_cleanly(capsys, tmp_path, ["prepare", str(p)], f"manifest {m}: no readable images, all 2 skipped: row 2: ",
                  "a.png", "row 3: ", "gone.png: missing")


# ---------------------------------------------------------------------------------------------------------
# imginav report on a folder that is not a phase folder


def test_report_on_folders_that_are_not_phase_folders(tmp_path, phase, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails_cleanly(capsys, tmp_path, ["report", str(empty)], f"{empty}: not a phase folder")
    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=2, sample_interval=1)
    fails_cleanly(capsys, tmp_path, ["report", str(runs.parent)], "not a phase folder")  # the runs root, one level up
    fails_cleanly(capsys, tmp_path, ["report", str(runs / "F1_rgb_only")], "not a phase folder")  # an experiment folder
    for text in ("[1, 2]", '{"runs": [{"seed": 1}]}', '{"runs": "F1"}', "{"):
        bad = tmp_path / f"bad{len(text)}"
        bad.mkdir()
        (bad / "index.json").write_text(text)
        fails_cleanly(capsys, tmp_path, ["report", str(bad)], f"{bad / 'index.json'}: ")
    fails_cleanly(capsys, tmp_path, ["report", str(tmp_path / "nowhere")], "runs folder not found")
    assert json.loads((runs / "index.json").read_text())["runs"]  # the real phase folder was left alone
