"""Bad input, class by class, through the command line: exit code 2, one line `imginav: error: ...` naming the
file and the field, no traceback, and nothing created or changed (the folder tree is the same before and after).
"""
from __future__ import annotations

import csv
import json
import signal
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


HANG_S = 30  # an in-process command still running after this is a hang (a FIFO read blocks for ever)


class Hang(Exception):
    pass


def run_main(argv: list[str]) -> int:
    """main(argv), failing with Hang after HANG_S seconds (SIGALRM interrupts a blocking open or read)."""

    def hang(signum, frame):
        raise Hang(f"imginav {' '.join(argv)[:200]} still running after {HANG_S} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_S)
    try:
        return main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def fails_cleanly(capsys, root: Path, argv: list[str], *expected: str) -> str:
    """Run the CLI in-process and check the promise; return the error line."""
    before = tree(root)
    capsys.readouterr()
    rc = run_main(argv)  # an exception escaping main fails the test: that would be a traceback
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


# =========================================================================================================
# Second round (issue 24): no traceback, no hang, no silent acceptance, nothing overwritten, status after a move


import os  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from imginav_lib.demo.layouts import draw_layout  # noqa: E402
from imginav_lib.palette import PALETTE  # noqa: E402

SUBPROCESS_S = 120  # a whole CLI process (Python, pandas, torch imports) on a loaded 2-core machine


def fails_in_a_process(root: Path, argv: list[str], *expected: str, cwd: Path | None = None) -> tuple[str, float]:
    """The promise through a real `imginav` process: what it prints to the terminal (Pillow's warnings included)
    is the one line; a hang is a timeout. Returns the line and the seconds it took."""
    before = tree(root)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "imginav_lib.cli", *argv], capture_output=True, text=True,
                       timeout=SUBPROCESS_S, cwd=cwd or root, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    took = time.monotonic() - t0
    lines = [line for line in p.stderr.strip().splitlines() if "%|" not in line]
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert len(lines) == 1 and lines[0].startswith("imginav: error: ") and "Traceback" not in p.stderr, p.stderr
    for e in expected:
        assert e in lines[0], (e, lines[0])
    assert tree(root) == before
    return lines[0], took


def png_bytes(w: int, h: int, raw: bytes = b"", depth: int = 8) -> bytes:
    """An RGB PNG written by hand: any header size (a decompression bomb is a header), 8 or 16 bits a channel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def layout_rgb(seed: int, size: int = 32) -> np.ndarray:
    """(size, size, 3) uint8 generated layout: exact palette colours, so every format keeps them."""
    ids, _, _ = draw_layout(np.random.default_rng([seed, 1]), size)
    return PALETTE[ids]


def images_manifest(tmp_path: Path, bad: tuple[str, str] | None = None, n: int = 4) -> Path:
    """A manifest of n good PNGs and, if given, one more row (name, how) whose file the test makes."""
    rows = []
    for i in range(n):
        Image.fromarray(layout_rgb(i)).save(tmp_path / f"ok{i}.png")
        rows.append((f"ok{i}.png", "room", "false"))
    if bad:
        rows.insert(0, (bad[0], "room", "false"))
    return _manifest(tmp_path / "m.csv", rows)


# ---------------------------------------------------------------------------------------------------------
# One opener for every file a user gives: regular files only (a FIFO never blocks), NUL bytes, Pillow's bombs


def test_fifo_where_an_image_should_be_neither_hangs_validate_nor_prepare(tmp_path, phase, capsys):
    os.mkfifo(tmp_path / "pipe.png")
    m = images_manifest(tmp_path, ("pipe.png", "fifo"))
    p = phase(_set("data", manifest=str(m)))
    for cmd in ("validate", "prepare"):
        fails_cleanly(capsys, tmp_path, [cmd, str(p)], f"manifest {m}: ", "row 2: ", "pipe.png",
                      "is a FIFO (named pipe), not a regular file")
    # through a real process (what a user runs): no .build-* folder is left, nothing waits
    fails_in_a_process(tmp_path, ["prepare", str(p), "--workers", "2"], "is a FIFO (named pipe)")


def test_fifo_or_folder_where_a_user_file_should_be(tmp_path, phase, capsys):
    os.mkfifo(tmp_path / "pipe")
    fails_cleanly(capsys, tmp_path, ["validate", str(tmp_path / "pipe")], "params file", "is a FIFO (named pipe), not a regular file")
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("data", manifest=str(tmp_path / "pipe"))))],
                  "p.yaml: data.manifest: is a FIFO (named pipe), not a regular file")
    (tmp_path / "folder.csv").mkdir()
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("data", manifest=str(tmp_path / "folder.csv"))))],
                  "p.yaml: data.manifest: is a folder, not a regular file")
    p = phase(lambda p: p.update(architecture_from=str(tmp_path / "pipe")))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: architecture_from: is a FIFO (named pipe)")


@pytest.mark.parametrize("cmd", ["validate", "prepare"])
def test_nul_byte_in_a_manifest_path_names_the_row(tmp_path, phase, capsys, cmd):
    m = images_manifest(tmp_path, ("a\x00b.png", "nul"))
    fails_cleanly(capsys, tmp_path, [cmd, str(phase(_set("data", manifest=str(m))))], f"manifest {m}: ", "row 2: ",
                  "a\\x00b.png", "the path contains a NUL byte")


@pytest.mark.parametrize(
    "side, expected",
    [(100_000, "10,000,000,000 pixels is more than Pillow's limit of 89,478,485 pixels"),  # Pillow: an error
     (10_000, "100,000,000 pixels is more than Pillow's limit of 89,478,485 pixels")],  # Pillow: only a warning
)
def test_decompression_bomb_is_one_line_with_the_pixel_count_and_limit(tmp_path, phase, capsys, side, expected):
    (tmp_path / "bomb.png").write_bytes(png_bytes(side, side))  # the header claims it; 80 bytes on disk
    m = images_manifest(tmp_path, ("bomb.png", "bomb"))
    p = phase(_set("data", manifest=str(m)))
    for cmd in ("validate", "prepare"):
        fails_cleanly(capsys, tmp_path, [cmd, str(p)], f"manifest {m}: ", "row 2: ", "bomb.png", expected)
    # in a real process Pillow's DecompressionBombWarning would reach the terminal: it must not
    fails_in_a_process(tmp_path, ["prepare", str(p)], expected)


# ---------------------------------------------------------------------------------------------------------
# Strict types and bounded values in the schema


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_set("training", epochs=True), "p.yaml: training.epochs: true is a boolean, not a number"),
        (_set("training", lr=False), "p.yaml: training.lr: false is a boolean, not a number"),
        (lambda p: p.update(seeds=[True]), "p.yaml: seeds: true is a boolean, not a number"),
        (lambda p: p.update(seeds=[1, False]), "p.yaml: seeds: false is a boolean, not a number"),
        (_set("data", image_size=True), "p.yaml: data.image_size: true is a boolean"),
        (lambda p: p["experiments"]["F3"].update(training={"batch_size": True}), "experiments.F3.training: batch_size: true is a boolean"),
        (_set("cluster", defaults={"cores": True}), "p.yaml: cluster.defaults.cores: true is a boolean"),
        (_set("decision", handoff={"seeds": [True]}), "p.yaml: decision.handoff.seeds: true is a boolean"),
    ],
)
def test_booleans_are_not_numbers(tmp_path, phase, capsys, mutate, expected):
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(mutate))], expected)


def test_booleans_are_not_numbers_in_a_set(tmp_path, phase, capsys):
    fails_cleanly(capsys, tmp_path, ["validate", str(phase()), "--set", "training.epochs=true"],
                  "--set training.epochs=true (on ", "training.epochs: true is a boolean, not a number")


@pytest.mark.parametrize("seeds, expected", [([-1], "seeds.0: Input should be greater than or equal to 0"),
                                             ([1, 2**32], "seeds.1: Input should be less than or equal to 4294967295")])
def test_seeds_a_run_cannot_use_are_refused_before_anything_is_written(tmp_path, phase, capsys, seeds, expected):
    p = phase(lambda p: p.update(seeds=seeds))
    for cmd in ("validate", "run"):
        fails_cleanly(capsys, tmp_path, [cmd, str(p)], f"p.yaml: {expected}")  # run: no index.json, no logs
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("data", split_seed=-3)))], "p.yaml: data.split_seed: Input should be greater")


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def test_deep_nesting_in_a_params_file_or_a_set_is_one_line(tmp_path, phase, capsys):
    p = tmp_path / "deep.yaml"
    p.write_text(phase().read_text() + f"description: {_nested(5000)}\n")
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], f"{p}: invalid YAML at line", "nested deeper than 20 levels")
    fails_cleanly(capsys, tmp_path, ["validate", str(phase()), "--set", f"data.filters.is_empty={_nested(5000)}"],
                  "--set data.filters.is_empty=[[[", "value: invalid YAML at line 1, column 21: nested deeper than 20 levels")
    deep_key = ".".join(["training"] * 5000)
    fails_cleanly(capsys, tmp_path, ["validate", str(phase()), "--set", f"{deep_key}=1", "--set", "training.epochs=2"],
                  "=1: the key path is deeper than 20 levels")
    p.write_text(phase().read_text() + "description: &a [*a]\n")  # an alias of itself: infinitely deep
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], f"{p}: invalid YAML at line", "recursive node")


ALIAS_BOMB = """
data:
  manifest: {manifest}
  filters:
    is_empty: &j [&i [&h [&g [&f [&e [&d [&c [&b [&a [x, x, x, x, x, x, x, x, x],
      *a, *a, *a, *a, *a, *a, *a, *a], *b, *b, *b, *b, *b, *b, *b, *b], *c, *c, *c, *c, *c, *c, *c, *c],
      *d, *d, *d, *d, *d, *d, *d, *d], *e, *e, *e, *e, *e, *e, *e, *e], *f, *f, *f, *f, *f, *f, *f, *f],
      *g, *g, *g, *g, *g, *g, *g, *g], *h, *h, *h, *h, *h, *h, *h, *h], *i, *i, *i, *i, *i, *i, *i, *i]
"""


def test_yaml_alias_bomb_is_refused_in_a_readable_line(tmp_path, phase, capsys, labelled_manifest):
    good = yaml.safe_load(phase().read_text())
    p = tmp_path / "bomb.yaml"
    p.write_text(yaml.safe_dump({k: v for k, v in good.items() if k != "data"}) + ALIAS_BOMB.format(manifest=labelled_manifest))
    line = fails_cleanly(capsys, tmp_path, ["validate", str(p)], f"{p}: more than 100,000 values once its aliases are expanded")
    assert len(line) < 300


def test_error_lines_are_cut_to_a_readable_length(tmp_path, phase, capsys):
    line = fails_cleanly(capsys, tmp_path, ["validate", str(phase()), "--set", "phase=" + "x" * 1_000_000],
                         "is not a usable folder name", "characters left out)... ")
    assert len(line) < 2100


def test_image_size_the_cache_cannot_hold(tmp_path, phase, capsys, monkeypatch):
    fails_cleanly(capsys, tmp_path, ["prepare", str(phase(_set("data", image_size=2**40)))],
                  "p.yaml: data.image_size: Input should be less than or equal to 8192")
    free = shutil.disk_usage(tmp_path).free  # a legal size on a disk too small for the cache: before any write
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(free, free - 2**30, 2**30))
    fails_cleanly(capsys, tmp_path, ["prepare", str(phase(_set("data", image_size=4096)))], "data.cache_dir: ",
                  "the cache of 54 images at 4096x4096 px needs 3.4 GiB, 1.0 GiB free")


@pytest.fixture
def read_only(tmp_path):
    """A function making a folder read-only: a read-only bind mount as root (root ignores permissions), else chmod."""
    mounts = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return folder
        r = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"root without a read-only bind mount: {r.stderr.strip()}")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", str(folder)], check=True)
    for p in tmp_path.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)


def test_prepare_into_a_read_only_cache_folder(tmp_path, phase, capsys, read_only):
    (tmp_path / "ro").mkdir()
    read_only(tmp_path / "ro")
    for cache in (tmp_path / "ro", tmp_path / "ro" / "sub"):
        fails_cleanly(capsys, tmp_path, ["prepare", str(phase(_set("data", cache_dir=str(cache))))],
                      "data.cache_dir: cannot create or write", "is not writable")


# ---------------------------------------------------------------------------------------------------------
# Validation checks what the runs will need


def test_names_that_share_a_folder_after_unicode_normalisation(tmp_path, phase, capsys):
    p = phase(lambda p: p["experiments"].update({"caf\u00e9": {}, "cafe\u0301": {}}))  # NFC and NFD
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "p.yaml: experiments: 'caf\\xe9' and 'cafe\\u0301' differ only "
                  "in Unicode normalisation (NFC/NFD) or case")
    p = phase(lambda p: p["experiments"].update({"CAF\u00c9": {}, "cafe\u0301": {}}))
    fails_cleanly(capsys, tmp_path, ["validate", str(p)], "differ only in Unicode normalisation (NFC/NFD) or case")


def test_manifest_with_one_usable_row_cannot_be_split(tmp_path, phase, capsys):
    m = images_manifest(tmp_path, n=1)
    for cmd in ("validate", "run"):
        fails_cleanly(capsys, tmp_path, [cmd, str(phase(_set("data", manifest=str(m))))],
                      "data: 1 image after data.filters split into 1 for training and 0 for validation")


@pytest.mark.parametrize("split", ["fixed", "per_seed"])
def test_val_fraction_leaving_no_training_image_is_refused_before_anything_is_written(tmp_path, phase, capsys, split):
    p = phase(_set("data", val_fraction=0.995, split=split))  # 54 non-empty real layouts: all 54 for validation
    for cmd in ("validate", "run"):
        line = fails_cleanly(capsys, tmp_path, [cmd, str(p)], "data: 54 images after data.filters split into 0 for "
                             "training and 54 for validation with val_fraction 0.995")
        assert ("(seed 1, split: per_seed)" in line) == (split == "per_seed")


def test_the_same_image_listed_twice(tmp_path, phase, capsys):
    Image.fromarray(layout_rgb(0)).save(tmp_path / "a.png")
    m = _manifest(tmp_path / "m.csv", [("a.png", "room", "false"), ("b.png", "room", "false"), ("./a.png", "scene", "true")])
    for cmd in ("validate", "prepare"):
        fails_cleanly(capsys, tmp_path, [cmd, str(phase(_set("data", manifest=str(m))))],
                      f"manifest {m}: rows 2 and 4 list the same image {tmp_path / 'a.png'}")


def test_a_column_given_twice(tmp_path, phase, capsys):
    m = tmp_path / "m.csv"
    m.write_text("layout_path,type,is_empty,type\nok0.png,room,false,scene\n")
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("data", manifest=str(m))))],
                  f"manifest {m}: column 'type' appears twice in the header")


def test_validate_refuses_a_missing_image_unless_skipped(tmp_path, phase, capsys):
    m = images_manifest(tmp_path, ("gone.png", "missing"))
    fails_cleanly(capsys, tmp_path, ["validate", str(phase(_set("data", manifest=str(m))))], "row 2: ", "gone.png: file not found")
    capsys.readouterr()
    assert run_main(["validate", str(phase(_set("data", manifest=str(m), on_bad_image="skip")))]) == 0
    assert "1 of them unusable, skipped (on_bad_image: skip)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------
# Run folders: a damaged run.json or index.json is one line (run) or an unreadable row (status, report), never a crash


DAMAGED = [(b"[1, 2]", "a JSON list, not an object"), (bytes(range(256)), "not UTF-8 text"), (b"{", "not JSON"),
           (b"[" * 100_000, "nested too deeply"), (b'{"status": "done", "epoch": [1], "best_val_mse": "x"}', None)]


@pytest.mark.parametrize("content, expected", DAMAGED)
def test_status_lists_a_run_with_a_damaged_run_json(tmp_path, phase, capsys, content, expected):
    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1, 2), epochs=2, sample_interval=1)
    index = json.loads((runs / "index.json").read_text())
    (Path(index["runs"][0]["run_dir"]) / "run.json").write_bytes(content)
    capsys.readouterr()
    assert run_main(["status", str(runs)]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    row = next(line for line in out.splitlines() if line.startswith("1 "))
    if expected:
        assert "unreadable" in row and "damaged record: " + expected in out, out
    else:  # an object with values of the wrong types: shown without them
        assert "done" in row and "0/?" in row, out


def test_status_lists_a_run_json_that_is_a_fifo(tmp_path, phase, capsys):
    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=2, sample_interval=1)
    run_json = Path(json.loads((runs / "index.json").read_text())["runs"][0]["run_dir"]) / "run.json"
    run_json.unlink()
    os.mkfifo(run_json)
    capsys.readouterr()
    assert run_main(["status", str(runs)]) == 0
    assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().out


@pytest.mark.parametrize("content, expected", DAMAGED[:4])
def test_run_refuses_a_damaged_run_json(tmp_path, phase, capsys, content, expected):
    p = phase()
    cfg = yaml.safe_load(p.read_text())
    run_dir = Path(cfg["runs_root"]) / "tiny" / "F1" / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_bytes(content)
    fails_cleanly(capsys, tmp_path, ["run", str(p)], f"{run_dir / 'run.json'}: damaged record: {expected}")


@pytest.mark.parametrize(
    "content, expected",
    [(b"[1, 2]", "a JSON list, not an object"), (bytes(range(256)), "not UTF-8 text"),
     (None, "runs entry 1 is not {experiment, seed, run_dir}"), (b"[" * 100_000, "nested too deeply")],
)
@pytest.mark.parametrize("cmd", ["status", "run-one"])
def test_a_damaged_index_json_is_one_line(tmp_path, phase, capsys, content, expected, cmd):
    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=2, sample_interval=1)
    index = json.loads((runs / "index.json").read_text())
    if content is None:  # entries without run_dir
        content = json.dumps({**index, "runs": [{k: v for k, v in r.items() if k != "run_dir"} for r in index["runs"]]}).encode()
    (runs / "index.json").write_bytes(content)
    argv = ["status", str(runs)] if cmd == "status" else ["run-one", str(runs / "index.json"), "1"]
    fails_cleanly(capsys, tmp_path, argv, f"{runs / 'index.json'}: ", expected)


def test_report_lists_a_run_with_a_damaged_run_json(tmp_path, phase):
    from imginav_lib.analysis.phase import load_phase_runs

    runs = S.write_synthetic_phase(tmp_path / "runs", seeds=(1, 2), epochs=2, sample_interval=1)
    index = json.loads((runs / "index.json").read_text())
    for entry, content in zip(index["runs"], (b"[1]", b"[" * 100_000, bytes(range(256)))):
        (Path(entry["run_dir"]) / "run.json").write_bytes(content)
    got = load_phase_runs(runs).runs.set_index(["experiment", "seed"])
    assert (got["state"].iloc[:3] == "unreadable").all(), got[["state", "error"]]


def test_status_after_the_phase_folder_was_moved(tmp_path, phase, capsys):
    runs = S.write_synthetic_phase(tmp_path / "cluster" / "runs", seeds=(1, 2), epochs=2, sample_interval=1)
    moved = tmp_path / "here" / runs.name
    moved.parent.mkdir()
    shutil.move(runs, moved)  # index.json still names the cluster paths, which are gone
    capsys.readouterr()
    assert run_main(["status", str(moved)]) == 0
    out = capsys.readouterr().out
    n = len(json.loads((moved / "index.json").read_text())["runs"])
    assert f"{n} done" in out and "queued" not in out, out


# ---------------------------------------------------------------------------------------------------------
# make-layouts never overwrites a user's files


def test_make_layouts_refuses_a_folder_that_is_not_empty(tmp_path, phase, capsys):
    out = tmp_path / "data"
    (out / "images").mkdir(parents=True)
    (out / "manifest.csv").write_text("layout_path,type,is_empty\nimages/layout_00001.png,room,false\n")
    (out / "images" / "layout_00001.png").write_bytes(b"the user's image")
    fails_cleanly(capsys, tmp_path, ["make-layouts", str(out), "--n", "2", "--size", "32"],
                  f"make-layouts: {out} is not empty (it holds images, manifest.csv)", "--force")
    capsys.readouterr()
    assert run_main(["make-layouts", str(out), "--n", "2", "--size", "32", "--force"]) == 0
    assert (out / "images" / "layout_00001.png").read_bytes()[:4] == b"\x89PNG"


# ---------------------------------------------------------------------------------------------------------
# The odd but valid counterparts still work


def test_gif_webp_and_16_bit_images_decode_like_the_png(tmp_path, phase, capsys):
    from imginav_lib.data.dataset import load_cache

    rgb = layout_rgb(7)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(tmp_path / "a.gif")
    Image.fromarray(rgb).save(tmp_path / "a.webp", lossless=True)
    wide = rgb.astype(">u2") * 257  # 16 bits a channel
    (tmp_path / "a16.png").write_bytes(png_bytes(32, 32, b"".join(b"\x00" + row.tobytes() for row in wide), depth=16))
    m = _manifest(tmp_path / "m.csv", [(f, "room", "false") for f in ("a.png", "a.gif", "a.webp", "a16.png")])
    p = phase(_set("data", manifest=str(m)))
    assert run_main(["validate", str(p)]) == 0
    assert run_main(["prepare", str(p)]) == 0
    cache = capsys.readouterr().out.strip().splitlines()[-1].removeprefix("cache: ")
    images = load_cache(cache).images.numpy()
    for k in range(1, 4):
        assert (images[k] == images[0]).all(), m.read_text().splitlines()[k + 1]
    assert (images[0] == rgb.transpose(2, 0, 1)).all()


def test_yaml_anchors_and_merge_keys(tmp_path, phase, capsys):
    cfg = yaml.safe_load(phase().read_text())
    p = tmp_path / "anchors.yaml"
    p.write_text(f"""
phase: tiny
runs_root: {cfg['runs_root']}
data: {json.dumps(cfg['data'])}
architecture: {json.dumps(cfg['architecture'])}
training: &shared {{epochs: 2, batch_size: 4, log_every: 2, lr: 1e-3, sample_interval: 1}}
seeds: [1]
experiments:
  F1: {{}}
  F2: {{training: {{<<: *shared, lr: 2.0e-3}}, loss: &aux {{seg: 0.05}}}}
  F3: {{loss: {{<<: *aux, cls: 0.01}}}}
cluster:
  defaults: &res {{cores: 2, walltime: "1:00", gpus: 0}}
  experiments:
    F3: {{<<: *res, cores: 4}}
""")
    capsys.readouterr()
    assert run_main(["validate", str(p)]) == 0, capsys.readouterr().err
    assert "3 experiments x 1 seed" in capsys.readouterr().out


def test_a_batch_larger_than_the_data_set(tmp_path, phase, capsys):
    p = phase(_set("training", batch_size=1000))  # 79 layouts: one batch an epoch
    assert run_main(["validate", str(p)]) == 0
    assert run_main(["run", str(p), "--dry-run"]) == 0


def test_a_read_only_finished_cache_is_used(tmp_path, phase, capsys, read_only):
    m = images_manifest(tmp_path)
    p = phase(_set("data", manifest=str(m), cache_dir=str(tmp_path / "cache")))
    assert run_main(["prepare", str(p)]) == 0
    read_only(tmp_path / "cache")
    capsys.readouterr()
    assert run_main(["prepare", str(p)]) == 0
    assert run_main(["validate", str(p)]) == 0, capsys.readouterr().err
    # another image size is another key: that one cannot be built there
    fails_cleanly(capsys, tmp_path, ["prepare", str(phase(_set("data", manifest=str(m), cache_dir=str(tmp_path / "cache"), image_size=64)))],
                  "data.cache_dir: cannot create or write")
