"""What else differs between the runs of a comparison: the GPU model, the precision and the torch, CUDA and cuDNN
versions each attempt recorded in run.json (`environments`, train/device.py). A difference between two
experiments must come from their configuration; where their runs of one seed ran on other hardware or software,
the verdict's "how sure we are" names it (Bouthillier et al. 2021, "Accounting for variance").
"""
from __future__ import annotations

from itertools import combinations

from imginav_lib.analysis.phase import PhaseRuns
from imginav_lib.runs.runfolder import RunFolder

# run.json environment field -> how the sentence names it
FIELDS = {"gpu": "GPU model", "precision": "precision", "torch": "torch version", "cuda": "CUDA version", "cudnn": "cuDNN version"}


def run_environments(pr: PhaseRuns) -> dict[tuple[str, int], list[dict]]:
    """(experiment, seed) -> the environments of the attempts of each finished run (an older run.json: its one
    `environment`, else nothing known)."""
    out = {}
    for r in pr.done.itertuples():
        info = RunFolder(r.run_dir).read_info()
        envs = info.get("environments") or ([info["environment"]] if isinstance(info.get("environment"), dict) else [])
        out[(r.experiment, int(r.seed))] = [e for e in envs if isinstance(e, dict)]
    return out


def _values(envs: list[dict], field: str) -> set[str]:
    """The values a run's attempts recorded for `field` (the CPU counts as a GPU model of its own)."""
    if field == "gpu":
        return {str(e.get("gpu") or e.get("device") or "") for e in envs} - {""}
    return {str(e[field]) for e in envs if e.get(field) is not None}


def _show(values: set[str]) -> str:
    return " and ".join(sorted(values))


def confound_sentences(pr: PhaseRuns) -> list[str]:
    """One sentence per pair of experiments whose runs of a seed differ in GPU model, precision or torch/CUDA/cuDNN
    version (or whose own attempts did), naming the seeds and the values; [] when every comparison ran alike."""
    envs = run_environments(pr)
    sentences = []
    for a, b in combinations(pr.experiments, 2):
        seeds = sorted({s for e, s in envs if e == a} & {s for e, s in envs if e == b})
        diffs: dict[str, tuple[set, set, list[int]]] = {}
        for s in seeds:
            for field, name in FIELDS.items():
                va, vb = _values(envs[(a, s)], field), _values(envs[(b, s)], field)
                if va and vb and (va != vb or len(va) > 1):
                    ga, gb, where = diffs.setdefault(name, (set(), set(), []))
                    ga |= va
                    gb |= vb
                    where.append(s)
        if diffs:
            parts = [f"{name} ({a}: {_show(ga)}; {b}: {_show(gb)}; seed{'s' if len(w) > 1 else ''} {', '.join(map(str, w))})"
                     for name, (ga, gb, w) in diffs.items()]  # fmt: skip
            sentences.append(f"{a} and {b} did not run on the same hardware and software: they differ in {'; '.join(parts)}, "
                             f"so part of their difference may come from that rather than from their configuration.")  # fmt: skip
    return sentences
