"""The phase params file: reading and validating it (with `--set` overrides) and resolving it into one config
per run. The schema is `schema.py`.

A phase YAML holds shared defaults (data, architecture, training, loss), the experiments with only their
overrides, the seeds, the decision rules and the cluster settings. Every error is reported on one line naming
the file and the field (`InputError`), before anything runs. The classes of bad input are each handled in one
place: `read_yaml` reads every YAML file a user gives (bytes, syntax, top-level type, repeated keys), the schema
checks every field, and `check_output_dir` checks output folders.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from pydantic import ValidationError

from imginav_lib.errors import InputError
from imginav_lib.files import check_output_dir, input_file_problem
from imginav_lib.config.overrides import apply_sets
from imginav_lib.config.paths import expand_path, unset_variables
from imginav_lib.config.schema import Architecture, Loss, Phase, RunConfig, Training, WinnerFile, check_name
from imginav_lib.config.yaml_file import read_yaml


def _one_line(e: ValidationError, source: str) -> str:
    parts = []
    for err in e.errors():
        path = list(err["loc"])
        if path[-1:] == ["[key]"]:  # a bad dict key (an experiment name): the message quotes it
            path = path[:-2]
        loc = ".".join(str(x) for x in path)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, nested dicts merged key by key (an experiment's overrides on the shared section)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def params_hash(path: str | Path, overrides: list[str] | tuple = ()) -> str:
    """What identifies a phase's configuration: the params file's bytes and the --set overrides (in order)."""
    h = hashlib.sha256(Path(path).read_bytes())
    if overrides:  # without overrides the hash stays what it was before --set existed
        h.update(b"\0" + "\n".join(overrides).encode())
    return h.hexdigest()[:12]


def _validate(raw: dict, source: str) -> Phase:
    """Schema checks of a raw params mapping; raises InputError whose message starts with `source`."""
    try:
        phase = Phase.model_validate(raw)
        # Each experiment's overrides must validate too, so a typo in F3 fails before F1 starts.
        for name, over in phase.experiments.items():
            for section in ("architecture", "training", "loss"):
                merged = deep_merge(getattr(phase, section).model_dump(), getattr(over, section))
                try:
                    type(getattr(phase, section)).model_validate(merged)
                except ValidationError as e:
                    raise InputError(_one_line(e, f"{source}: experiments.{name}.{section}")) from None
    except ValidationError as e:
        raise InputError(_one_line(e, source)) from None
    return phase


def _validate_with_sets(raw: dict, overrides: list[str] | tuple, source: str) -> Phase:
    """Validate the file with its overrides; an error that only an override causes is reported as that --set's."""
    try:
        return _validate(apply_sets(raw, overrides), source)
    except InputError:
        if not overrides:
            raise
    _validate(raw, source)  # the file's own error, if it has one
    for n, item in enumerate(overrides, 1):
        _validate(apply_sets(raw, overrides[:n]), f"--set {item} (on {source})")
    raise AssertionError("unreachable: every prefix of the overrides validated")


def _winner_architecture(path: Path, field: str) -> dict:
    """The architecture section of a winner file, validated and named after that file when it is bad."""
    problem = input_file_problem(path)
    if problem:
        raise InputError(f"{field}: {problem}: {path}")
    try:
        raw = read_yaml(path)
    except InputError as e:
        raise InputError(f"{field}: {e}") from None
    try:
        return WinnerFile.model_validate(raw).architecture.model_dump()
    except ValidationError as e:
        raise InputError(f"{field}: " + _one_line(e, str(path))) from None


def _check_image_size(phase: Phase, archs: dict[str, Architecture], path: Path) -> None:
    """The decoder doubles the size `downsampling_steps` times: the image size must divide by 2**steps."""
    for name, arch in archs.items():
        factor = 2**arch.downsampling_steps
        if phase.data.image_size % factor:
            own = "downsampling_steps" in phase.experiments[name].architecture
            source = f"experiments.{name}.architecture" if own else "architecture"
            raise InputError(f"{path}: data.image_size: {phase.data.image_size} px is not divisible by 2**{arch.downsampling_steps} = {factor} "
                             f"({source}.downsampling_steps of {name}): the decoder could not give back that size")  # fmt: skip


def load_params(path: str | Path, check_files: bool = True, base: str | Path | None = None,
               overrides: list[str] | tuple = ()) -> Phase:  # fmt: skip
    """Read and validate a phase params file with its --set overrides; paths in it become absolute, relative to
    `base` (default: the file's folder; a copy in a phase folder passes the original's). Raises InputError.

    check_files: the manifest must exist and the cache and runs folders must be folders (or creatable).
    """
    path = Path(path)
    problem = input_file_problem(path)
    if problem:
        raise InputError(f"params file not found: {path}" if problem == "file not found" else f"params file {path}: {problem}")
    raw = read_yaml(path)
    base = Path(base or path.parent).resolve()

    def absolute(p: str, field: str) -> str:
        # ${VAR} lets a cluster user keep paths out of the file (IMGINAV_DATA, SCRATCH, ...). Without
        # check_files (dry runs on a login node) an unset variable stays as it is, for the job to expand.
        unset = unset_variables(p)
        if unset:
            if check_files:
                raise InputError(f"{path}: {field}: environment variable {unset[0]} is not set (in {p!r})")
            return p
        return str(expand_path(p, base))

    overrides = list(overrides)
    winner_from = apply_sets(raw, overrides).get("architecture_from")  # --set first: it may name the winner file
    if winner_from is not None:
        if not isinstance(winner_from, str) or not winner_from:
            raise InputError(f"{path}: architecture_from: expected the path of a winner.yaml, got {winner_from!r}")
        # The winner's architecture replaces the file's (the file's is what runs until a winner exists);
        # --set architecture.* overrides still apply on top of it.
        winner = Path(absolute(winner_from, "architecture_from"))
        raw = {**raw, "architecture": _winner_architecture(winner, f"{path}: architecture_from")}
    phase = _validate_with_sets(raw, overrides, str(path))
    archs = {name: Architecture.model_validate(deep_merge(phase.architecture.model_dump(), over.architecture))
             for name, over in phase.experiments.items()}  # validated above
    _check_image_size(phase, archs, path)
    phase.data.manifest = absolute(phase.data.manifest, "data.manifest")
    phase.data.cache_dir = absolute(phase.data.cache_dir, "data.cache_dir")
    phase.runs_root = absolute(phase.runs_root, "runs_root")
    if phase.architecture_from:
        phase.architecture_from = absolute(phase.architecture_from, "architecture_from")
    if phase.decision.baseline is not None and phase.decision.baseline not in phase.experiments:
        raise InputError(f"{path}: decision.baseline: {phase.decision.baseline!r} is not an experiment")
    for pair in phase.decision.steps or []:
        for name in pair:
            if name not in phase.experiments:
                raise InputError(f"{path}: decision.steps: {name!r} is not an experiment")
        if pair[0] == pair[1]:
            raise InputError(f"{path}: decision.steps: [{pair[0]}, {pair[1]}] compares an experiment with itself")
    for name in phase.decision.preference or []:
        if name not in phase.experiments:
            raise InputError(f"{path}: decision.preference: {name!r} is not an experiment")
    unknown = set(phase.cluster.experiments) - set(phase.experiments)
    if unknown:
        raise InputError(f"{path}: cluster.experiments: {sorted(unknown)[0]!r} is not an experiment")
    if check_files:
        problem = input_file_problem(phase.data.manifest)
        if problem:
            raise InputError(f"{path}: data.manifest: {problem}: {phase.data.manifest}")
        # Whether they are writable is checked where they are written (a finished cache may be read-only).
        check_output_dir(phase.data.cache_dir, f"{path}: data.cache_dir", writable=False)
        check_output_dir(phase.runs_root, f"{path}: runs_root", writable=False)
    return phase


def run_dir(runs_root: str | Path, phase: str, experiment: str, seed: int) -> Path:
    """The one mapping of (phase, experiment, seed) to a folder; the names are checked again here."""
    return Path(runs_root) / check_name(phase) / check_name(experiment) / f"seed{int(seed)}"


def resolve_run(params_file: str | Path, experiment: str, seed: int, runs_root: str | None = None,
                overrides: list[str] | tuple = (), config: dict | None = None) -> RunConfig:  # fmt: skip
    """The resolved config of one experiment x seed (shared defaults, --set overrides, the experiment's overrides).

    `config`: the config `imginav run-one` resolved and checked before starting the notebook, handed down so that
    the run's params are resolved once; it must be the one of this experiment and seed. None (a notebook run by
    hand): resolved here from the params file."""
    if config is not None:
        cfg = RunConfig.model_validate(config)
        if (cfg.experiment, cfg.seed) != (experiment, seed):
            raise InputError(f"config handed down is {cfg.experiment} seed {cfg.seed}, not {experiment} seed {seed}")
        return cfg
    return run_config(load_params(params_file, overrides=overrides), params_file, experiment, seed, runs_root, overrides)


def run_config(phase: Phase, params_file: str | Path, experiment: str, seed: int, runs_root: str | None = None,
               overrides: list[str] | tuple = ()) -> RunConfig:  # fmt: skip
    """resolve_run for a loaded phase (`params_file`: the file it was loaded from, `overrides`: the --set items it
    was loaded with; they are part of the run's config, so a resume with other overrides is refused)."""
    if experiment not in phase.experiments:
        raise InputError(f"{params_file}: no experiment {experiment!r} (have: {', '.join(phase.experiments)})")
    over = phase.experiments[experiment]
    root = runs_root or phase.runs_root
    return RunConfig(
        phase=phase.phase,
        experiment=experiment,
        seed=seed,
        run_dir=str(run_dir(root, phase.phase, experiment, seed).resolve()),
        params_file=str(Path(params_file).resolve()),
        params_hash=params_hash(params_file, overrides),
        overrides=list(overrides),
        data=phase.data,
        architecture=Architecture.model_validate(deep_merge(phase.architecture.model_dump(), over.architecture)),
        training=Training.model_validate(deep_merge(phase.training.model_dump(), over.training)),
        loss=Loss.model_validate(deep_merge(phase.loss.model_dump(), over.loss)),
    )


def runs_of(phase: Phase, runs_root: str | None = None) -> list[dict]:
    """Every experiment x seed of a phase, in a fixed order: the index that all backends execute."""
    root = runs_root or phase.runs_root
    return [
        {"experiment": name, "seed": seed, "run_dir": str(run_dir(root, phase.phase, name, seed))}
        for name in phase.experiments
        for seed in phase.seeds
    ]
