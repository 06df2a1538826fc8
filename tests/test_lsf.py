"""LSF backend without LSF (not installable here): the generated scripts' #BSUB lines, the exact bsub command
lines (a stand-in `bsub` on PATH that records its argv and stdin), and the script bodies executed by bash with
the variables LSF sets, including a warning signal, the requeue exit code and the resumed run.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import gate_reached, gated_notebook, open_gate
from imginav_lib.cli import main
from imginav_lib.launch.runner import NOTEBOOK_ENV, read_index, run_phase

REPO = Path(__file__).resolve().parents[1]
TIMING = ["epoch_time_s", "train_images_per_s"]  # wall-clock columns: differ between any two runs


def eval_without_timing(path) -> dict:
    """eval.json less its one wall-clock field (what the latent statistics took, seconds) and the name of the run
    its latent statistics were measured on (experiments of one config compare equal)."""
    ev = json.loads(path.read_text())
    (ev.get("latent") or {}).pop("seconds", None)
    (ev.get("latent") or {}).pop("measured_on", None)
    return ev


def scripts_of(dry_run_output: str) -> dict[str, str]:
    """'# ---- <path> ...' headed sections of `imginav run --dry-run` -> {file name: text}."""
    parts = re.split(r"^# ---- (\S+).*$", dry_run_output, flags=re.M)
    return {Path(parts[k]).name: parts[k + 1] for k in range(1, len(parts) - 1, 2) if parts[k].endswith(".sh")}


def bsub_lines(script: str) -> list[str]:
    return [line.removeprefix("#BSUB ") for line in script.splitlines() if line.startswith("#BSUB ")]


def test_phase1_4_dry_run_groups_queues_and_chains_the_report(capsys, monkeypatch, tmp_path):
    """The acceptance command: the decode as a CPU job, the seeds' runs in a gpuv100 and a gpul40s array
    (cluster.assign by_seed) that wait for it, the report after both; exclusive GPUs, a log per element, the index
    guard."""
    for var in ("IMGINAV_DATA", "IMGINAV_SCRATCH"):
        monkeypatch.delenv(var, raising=False)  # a laptop without the cluster's variables
    assert main(["run", str(REPO / "params" / "phase1_4.yaml"), "--backend", "lsf", "--dry-run"]) == 0
    out = capsys.readouterr().out
    scripts = scripts_of(out)
    assert set(scripts) == {"prepare.lsf.sh", "phase1_4-gpuv100.lsf.sh", "phase1_4-gpul40s.lsf.sh", "report.lsf.sh"}
    v100, l40s = bsub_lines(scripts["phase1_4-gpuv100.lsf.sh"]), bsub_lines(scripts["phase1_4-gpul40s.lsf.sh"])
    # The index lists F1's seeds, then F2's, then F3's (5 seeds each): array index = index entry. Seeds 42, 44, 46
    # (entries 1, 3, 5 of each experiment) on gpuv100, 43 and 45 on gpul40s.
    assert v100[:2] == ['-J "phase1_4-gpuv100[1,3,5-6,8,10-11,13,15]%4"', "-q gpuv100"]
    assert l40s[:2] == ['-J "phase1_4-gpul40s[2,4,7,9,12,14]%4"', "-q gpul40s"]
    for lines, name in ((v100, "phase1_4-gpuv100"), (l40s, "phase1_4-gpul40s")):
        for expected in ["-n 8", '-R "span[hosts=1]"', '-R "rusage[mem=8GB]"', '-gpu "num=1:mode=exclusive_process"',
                         "-W 6:00", "-wa USR2", "-wt 10", '-Q "99"']:  # fmt: skip
            assert expected in lines, (expected, lines)
        assert any(re.fullmatch(rf'-o "\S+/logs/{name}_%J_%I\.out"', x) for x in lines), lines
        assert any(re.fullmatch(rf'-e "\S+/logs/{name}_%J_%I\.err"', x) for x in lines), lines
        body = scripts[f"{name}.lsf.sh"]
        assert re.search(rf"""^exec >>'\S+/logs'/{name}_"\$\{{LSB_JOBID:-0\}}"_"\$I"\.log 2>&1$""", body, re.M), body
        assert 'if [ "$I" -lt 1 ] || [ "$I" -gt 15 ]; then' in body  # index 0 (not an array) or beyond the phase
        assert body.index("trap on_stop USR2 TERM") < body.index("module load cuda/")  # signals from the first line
    prepare = bsub_lines(scripts["prepare.lsf.sh"])
    assert prepare[0] == "-J phase1_4-prepare" and "-n 8" in prepare and not any("-gpu" in x for x in prepare)
    assert "imginav prepare" in scripts["prepare.lsf.sh"]
    report = bsub_lines(scripts["report.lsf.sh"])
    assert not any("-gpu" in x for x in report) and "-n 1" in report
    commands = out.split("# ---- commands")[1].strip().splitlines()[1:]
    assert commands[0].startswith("bsub < ") and commands[0].split("#")[0].strip().endswith("prepare.lsf.sh'")
    assert commands[1].startswith("bsub -w 'done(<JOBID_prepare>)' < ")
    assert commands[1].split("#")[0].strip().endswith("phase1_4-gpuv100.lsf.sh'")
    assert commands[2].startswith("bsub -w 'done(<JOBID_prepare>)' < ")
    assert commands[3].startswith("bsub -w 'done(<JOBID_prepare>) && ended(<JOBID_phase1_4-gpuv100>) && "
                                  "ended(<JOBID_phase1_4-gpul40s>)' < ")  # fmt: skip
    for name, text in scripts.items():
        assert "module load cuda/" in text and "conda activate imginav" in text
        assert "/home/" not in text and "/work3/" not in text  # no user paths
        (tmp_path / name).write_text(text)
        check = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert check.returncode == 0, (name, check.stderr)
    assert not list(tmp_path.glob("**/index.json"))  # a dry run writes nothing


def _array_entries(directive: str) -> list[int]:
    """'phase1_4-gpuv100[1,3,5-6]%4' (bsub -J or sbatch --array) -> [1, 3, 5, 6]."""
    spec = re.search(r"\[?([0-9,\-]+)\]?(%\d+)?\"?$", directive).group(1)
    out = []
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


@pytest.mark.parametrize("backend", ["lsf", "slurm"])
def test_phase1_4_dry_run_puts_each_seeds_three_runs_on_one_queue(capsys, monkeypatch, backend):
    """cluster.assign by_seed: F1, F2 and F3 of a seed share a queue (one GPU type per paired comparison), and the
    seeds use both queues."""
    for var in ("IMGINAV_DATA", "IMGINAV_SCRATCH"):
        monkeypatch.delenv(var, raising=False)
    params = REPO / "params" / "phase1_4.yaml"
    assert main(["run", str(params), "--backend", backend, "--dry-run"]) == 0
    scripts = scripts_of(capsys.readouterr().out)
    index = [(e, s) for e in yaml.safe_load(params.read_text())["experiments"] for s in yaml.safe_load(params.read_text())["seeds"]]
    queue_of = {}
    for name, text in scripts.items():
        if backend == "lsf":
            lines = bsub_lines(text)
            array = next((x for x in lines if x.startswith("-J ") and "[" in x), None)
            queue = next((x[3:] for x in lines if x.startswith("-q ")), None)
        else:
            lines = [x.removeprefix("#SBATCH ") for x in text.splitlines() if x.startswith("#SBATCH ")]
            array = next((x for x in lines if x.startswith("--array=")), None)
            queue = next((x.split("=", 1)[1] for x in lines if x.startswith("--partition=")), None)
        if array is None:
            continue  # prepare, report
        for i in _array_entries(array):
            assert i not in queue_of, f"entry {i} in two arrays"
            queue_of[i] = queue
    assert sorted(queue_of) == list(range(1, len(index) + 1))  # every run submitted once
    per_seed = {}
    for i, (experiment, seed) in enumerate(index, 1):
        per_seed.setdefault(seed, set()).add(queue_of[i])
    assert all(len(q) == 1 for q in per_seed.values()), per_seed
    assert {q for qs in per_seed.values() for q in qs} == {"gpuv100", "gpul40s"}


def test_by_seed_refuses_an_experiment_queue_and_by_experiment_still_works(tmp_path, capsys):
    params = yaml.safe_load((REPO / "params" / "phase1_4.yaml").read_text())
    params["cluster"]["experiments"] = {"phase1_4_AE_F3_rgb_seg_cls": {"queue": "gpul40s"}}
    path = tmp_path / "phase1_4.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(["run", str(path), "--backend", "lsf", "--dry-run"]) == 2
    assert "experiments.phase1_4_AE_F3_rgb_seg_cls.queue would split it" in capsys.readouterr().err
    # the per-experiment layout the params file's comment shows: F1+F2 on gpuv100, F3 on gpul40s
    params["cluster"].update(assign="by_experiment", defaults={**params["cluster"]["defaults"], "queue": "gpuv100"})
    del params["cluster"]["queues"]
    path.write_text(yaml.safe_dump(params))
    assert main(["run", str(path), "--backend", "lsf", "--dry-run"]) == 0
    scripts = scripts_of(capsys.readouterr().out)
    assert bsub_lines(scripts["phase1_4-gpuv100.lsf.sh"])[0] == '-J "phase1_4-gpuv100[1-10]%4"'
    assert bsub_lines(scripts["phase1_4-gpul40s.lsf.sh"])[0] == '-J "phase1_4-gpul40s[11-15]%4"'


@pytest.mark.parametrize(
    "cluster, expected, absent",
    [
        ({"gpu_mode": "shared"}, '-gpu "num=1:mode=shared"', "exclusive_process"),
        ({"mem_reserve": "per_task"}, '-R "rusage[mem=8GB/task]"', '-R "rusage[mem=8GB]"'),
    ],
)
def test_gpu_mode_and_memory_reservation_options(tmp_path, capsys, cluster, expected, absent):
    params = yaml.safe_load((REPO / "params" / "phase1_4.yaml").read_text())
    params["cluster"].update(cluster)
    path = tmp_path / "phase1_4.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(["run", str(path), "--backend", "lsf", "--dry-run"]) == 0
    v100 = bsub_lines(scripts_of(capsys.readouterr().out)["phase1_4-gpuv100.lsf.sh"])
    assert expected in v100 and not any(absent in x for x in v100), v100


# ---------------------------------------------------------------------------------------------------------
# A submission through a recording `bsub`, then the scripts executed as LSF would


FAKE_BSUB = r"""#!/usr/bin/env python3
# Test double of LSF's bsub: records argv and stdin, answers like bsub.
import json, os, sys
log = os.environ["FAKE_BSUB_LOG"]
n = sum(1 for _ in open(log)) if os.path.exists(log) else 0
with open(log, "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "stdin": sys.stdin.read()}) + "\n")
print(f"Job <{101 + n}> is submitted to queue <normal>.")
"""


EPOCHS = 3
# F1 is the uninterrupted run (its warning comes after `done`); S, E and V compute the same as F1 and get the
# warning at start-up, between epochs and in the final evaluation; F3 runs on another queue.
MOMENTS = {"F1": "done", "S": "startup", "E": "between_epochs", "V": "final_evaluation"}


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """A 5-run phase submitted through the recording bsub, into a runs folder whose name has a space; the cache
    does not exist yet, so the decode is a job of its own that the arrays wait for."""
    from imginav_lib.demo.layouts import make_layouts

    tmp = tmp_path_factory.mktemp("lsf")
    manifest = make_layouts(tmp / "layouts", n=64, size=32, seed=0)
    notebook, gates = gated_notebook(tmp, MOMENTS, EPOCHS)
    params = {
        "phase": "t",
        "runs_root": str(tmp / "my runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 2},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": EPOCHS, "batch_size": 4, "log_every": 2, "lr": 1e-3, "heartbeat_s": 1},
        "seeds": [1],
        "experiments": {"F1": {}, "S": {}, "E": {}, "V": {}, "F3": {"loss": {"seg": 0.05, "cls": 0.01}}},
        "cluster": {
            "defaults": {"queue": "gpuv100", "cores": 1, "mem_per_core_gb": 0.5, "gpus": 0, "walltime": "0:30"},
            "experiments": {"F3": {"queue": "gpul40s"}},
            "prepare": {"cores": 1, "mem_per_core_gb": 1, "walltime": "0:20"},
            "setup": [f'export PATH="{Path(sys.executable).parent}:$PATH"'],  # this test's environment
            "warning_minutes": 1,
            "max_parallel": 2,
        },
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))  # index order: F1, S, E, V, F3
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "bsub").write_text(FAKE_BSUB.replace("python3", sys.executable, 1))
    (bin_dir / "bsub").chmod(0o755)
    log = tmp / "bsub.jsonl"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_BSUB_LOG": str(log)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        rc = run_phase(path, backend="lsf")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return {"rc": rc, "tmp": tmp, "calls": calls, "phase_dir": tmp / "my runs" / "t", "notebook": notebook, "gates": gates}


def test_bsub_command_lines_and_submission_record(submitted):
    phase_dir, calls = submitted["phase_dir"], submitted["calls"]
    jobs = phase_dir / "jobs"
    assert submitted["rc"] == 0
    assert [c["argv"] for c in calls] == [[], ["-w", "done(101)"], ["-w", "done(101)"],
                                          ["-w", "done(101) && ended(102) && ended(103)"]]  # fmt: skip
    for call, name in zip(calls, ["prepare", "t-gpuv100", "t-gpul40s", "report"]):
        assert call["stdin"] == (jobs / f"{name}.lsf.sh").read_text()  # bsub < script
    assert '#BSUB -J "t-gpuv100[1-4]%2"' in calls[1]["stdin"] and '#BSUB -R "rusage[mem=512MB]"' in calls[1]["stdin"]
    assert f'#BSUB -o "{phase_dir / "logs"}/t-gpuv100_%J_%I.out"' in calls[1]["stdin"]  # quoted: "my runs"
    assert '#BSUB -J "t-gpul40s[5]%2"' in calls[2]["stdin"]
    sub = json.loads((phase_dir / "submission.json").read_text())["submissions"][-1]
    assert sub["backend"] == "lsf" and sub["prepare"]["job_id"] == "101"
    assert [(j["job_id"], j["entries"]) for j in sub["jobs"]] == [("102", [1, 2, 3, 4]), ("103", [5])]
    assert sub["report"]["job_id"] == "104"
    assert sub["report"]["command"].startswith("bsub -w 'done(101) && ended(102) && ended(103)' < ")
    assert all(os.access(p, os.X_OK) for p in jobs.iterdir())
    assert (phase_dir / "logs").is_dir()  # LSF does not create the -o folder


def element(submitted, i: int, **env) -> subprocess.Popen:
    """Array element i as LSF runs it: bash on the script, with the variables LSF sets."""
    script = submitted["phase_dir"] / "jobs" / ("t-gpul40s.lsf.sh" if i == 5 else "t-gpuv100.lsf.sh")
    env = {**os.environ, "LSB_JOBID": "103" if i == 5 else "102", "LSB_JOBINDEX": str(i),
           NOTEBOOK_ENV: str(submitted["notebook"]), **env}  # fmt: skip
    return subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def job_processes(pid: int) -> list[int]:
    """pid and all its descendants: LSF signals every process of a job, the kernel in its own session too."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.05)


def test_a_script_refuses_index_0_and_an_index_beyond_the_phase(submitted):
    for i in (0, 6):  # 0: `bsub -J name < script` (not an array element); 6: the phase has 5 entries
        p = element(submitted, i)
        out, _ = p.communicate(timeout=30)
        assert p.returncode == 2 and out.strip().count("\n") == 0, out
        assert out.startswith(f"imginav: error: array index {i} is not an entry of ") and "bsub < " in out
    assert not list((submitted["phase_dir"] / "logs").glob("*_0.log")) and not list((submitted["phase_dir"] / "logs").glob("*_6.log"))


def test_the_prepare_job_decodes_and_then_every_warning_ends_in_a_requeue_or_done(submitted):
    """The prepare job's body builds the cache. Then elements 1-4 run, and each gets LSF's warning (USR2 to every
    process of the job, the kernel included) at its moment: S at start-up (before the run folder is known),
    E in epoch 2's evaluation, V in the final evaluation, F1 after `done`. S, E and V exit 99 (LSF requeues) and
    their rerun (same job id and index) ends with F1's metrics; F1 ends done; no kernel is killed."""
    phase_dir, gates = submitted["phase_dir"], submitted["gates"]
    logs = phase_dir / "logs"
    prep = subprocess.run(["bash", str(phase_dir / "jobs" / "prepare.lsf.sh")], env={**os.environ, "LSB_JOBID": "101"},
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert prep.returncode == 0, (prep.stdout, prep.stderr, (logs / "t-prepare_101.log").read_text())
    assert "cache: " in (logs / "t-prepare_101.log").read_text()

    index = read_index(phase_dir / "index.json")
    run_dirs = {r["experiment"]: Path(r["run_dir"]) for r in index["runs"]}
    order = {"F1": 1, "S": 2, "E": 3, "V": 4}
    procs = {e: element(submitted, i) for e, i in order.items()}
    pending, deadline = dict(MOMENTS), time.monotonic() + 300
    while pending:  # each element at its moment, in the order they get there
        for e in pending:
            assert procs[e].poll() is None, procs[e].communicate()[0][-3000:]
        for e, moment in [(e, m) for e, m in pending.items() if gate_reached(gates, e, m)]:
            for pid in job_processes(procs[e].pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGUSR2)
            wait(lambda: (run_dirs[e] / "STOP").exists(), 60, f"{e}'s STOP file")
            open_gate(gates, e, moment)
            del pending[e]
        assert time.monotonic() < deadline, f"timed out waiting for {sorted(pending)} to reach their moment"
        time.sleep(0.05)
    outs = {e: p.communicate(timeout=300)[0] for e, p in procs.items()}
    codes = {e: p.returncode for e, p in procs.items()}
    assert codes == {"F1": 0, "S": 99, "E": 99, "V": 99}, {e: outs[e][-2000:] for e in outs}
    status = {e: json.loads((d / "run.json").read_text()) for e, d in run_dirs.items() if e != "F3"}
    assert status["F1"]["status"] == "done" and not (run_dirs["F1"] / "STOP").exists()
    assert status["S"]["status"] == "preempted" and status["S"]["epoch"] == 0 and status["S"]["global_step"] == 1
    assert status["E"]["status"] == "preempted" and status["E"]["epoch"] == 2
    assert status["V"]["status"] == "preempted" and status["V"]["epoch"] == EPOCHS
    assert not (run_dirs["V"] / "eval.json").exists()  # the final evaluation is redone by the requeued element

    reruns = {e: element(submitted, order[e]) for e in ("S", "E", "V")}  # LSF's requeue: same job id and index
    for e, p in reruns.items():
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    first = pd.read_csv(run_dirs["F1"] / "metrics.csv").drop(columns=TIMING)
    final = eval_without_timing(run_dirs["F1"] / "eval.json")
    for e in ("S", "E", "V"):
        info = json.loads((run_dirs[e] / "run.json").read_text())
        assert info["status"] == "done" and info["attempts"] == 2 and info["job_id"] == f"102[{order[e]}]", info
        pd.testing.assert_frame_equal(first, pd.read_csv(run_dirs[e] / "metrics.csv").drop(columns=TIMING))
        assert eval_without_timing(run_dirs[e] / "eval.json") == final
        log = (logs / f"t-gpuv100_102_{order[e]}.log").read_text()  # both attempts, appended
        assert log.count(f"imginav: job 102[{order[e]}] on ") == 2 and "run-one exited 99" in log, log[-3000:]
        assert "resuming from" in log
    assert "last cell ran" in (run_dirs["F1"] / "train.ipynb").read_text()  # the kernel outlived the signal
    assert json.loads((run_dirs["F1"] / "run.json").read_text())["attempts"] == 1


def test_resubmitting_skips_runs_that_are_done_and_a_cache_that_exists(tmp_path, monkeypatch, capsys):
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    params = {"phase": "t", "runs_root": str(tmp_path / "runs"), "seeds": [1, 2],
              "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
              "experiments": {"F1": {}}, "cluster": {"defaults": {"walltime": "1:00"}}}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    done = tmp_path / "runs" / "t" / "F1" / "seed1"
    done.mkdir(parents=True)
    (done / "run.json").write_text(json.dumps({"status": "done", "epoch": 10, "epochs": 10}))  # the default 10 epochs
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bsub").write_text(FAKE_BSUB.replace("python3", sys.executable, 1))
    (tmp_path / "bin" / "bsub").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BSUB_LOG", str(tmp_path / "bsub.jsonl"))
    assert main(["prepare", str(path)]) == 0  # the cache exists: no prepare job, and the array waits for nothing
    assert run_phase(path, backend="lsf") == 0
    calls = [json.loads(line) for line in (tmp_path / "bsub.jsonl").read_text().splitlines()]
    assert '#BSUB -J "t-default[2]"' in calls[0]["stdin"] and len(calls) == 2 and calls[0]["argv"] == []
    assert calls[1]["argv"] == ["-w", "ended(101)"]
    assert "skipping 1 finished run: entries 1" in capsys.readouterr().out
    (done.parent / "seed2").mkdir()
    (done.parent / "seed2" / "run.json").write_text(json.dumps({"status": "done", "epoch": 10, "epochs": 10}))
    assert run_phase(path, backend="lsf") == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert len((tmp_path / "bsub.jsonl").read_text().splitlines()) == 2  # no new bsub


@pytest.mark.parametrize("backend", ["lsf", "slurm"])
def test_a_phase_on_two_gpu_queues_states_its_precision(tmp_path, capsys, backend):
    params = yaml.safe_load((REPO / "params" / "phase1_4.yaml").read_text())
    params["training"]["precision"] = "auto"
    path = tmp_path / "phase1_4.yaml"
    path.write_text(yaml.safe_dump(params))
    assert main(["run", str(path), "--backend", backend, "--dry-run"]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.startswith("imginav: error: ")]  # after unset-variable warnings
    assert len(err) == 1 and f"{path}: training.precision: auto" in err[0] and "gpul40s, gpuv100" in err[0]
    params["cluster"]["queues"] = ["gpuv100"]  # one GPU type: auto means one precision
    path.write_text(yaml.safe_dump(params))
    assert main(["run", str(path), "--backend", backend, "--dry-run"]) == 0
