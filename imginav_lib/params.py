"""The phase params file: schema, validation and resolution into one config per run.

A phase YAML holds shared defaults (data, architecture, training, loss), the experiments with only their
overrides, the seeds, the decision rules and the cluster settings. Unknown keys are errors; every error is
reported on one line naming the field (`InputError`), before anything runs.
"""
from __future__ import annotations

import copy
import hashlib
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import InputError
from .heads import HEADS
from .schedulers import BACKENDS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Data(Strict):
    manifest: str  # CSV in the researchers' format; relative paths are relative to the params file
    image_size: int = Field(512, ge=16)  # pixels; other sizes are resized (nearest) in the cache
    filters: dict[str, list] = {"is_empty": [False]}  # manifest column -> allowed values
    val_fraction: float = Field(0.2, gt=0, lt=1)
    split_seed: int = 42
    on_bad_image: Literal["error", "skip"] = "error"
    cache_dir: str = ".cache/imginav"  # decoded arrays; relative to the params file
    mask_tolerance: float = Field(30.0, gt=0)  # RGB distance beyond which a pixel is ignored in seg targets
    num_samples: int = Field(8, ge=1)  # fixed validation images shown in samples/


class Architecture(Strict):
    latent_channels: int = Field(8, ge=1)
    base_channels: int = Field(32, ge=1)
    downsampling_steps: int = Field(4, ge=1, le=8)
    variational: bool = False
    activation: Literal["silu", "relu", "gelu"] = "silu"
    norm_groups: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _groups_divide(self):
        if self.base_channels % self.norm_groups:
            raise ValueError(f"base_channels {self.base_channels} is not divisible by norm_groups {self.norm_groups}")
        return self


class EarlyStopping(Strict):
    patience: int = Field(3, ge=1)  # epochs without improvement of val_mse
    min_delta: float = Field(1e-4, ge=0)
    restore_best: bool = True


class Training(Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=1)
    optimizer: Literal["adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    early_stopping: EarlyStopping | None = EarlyStopping()
    checkpoint_interval: int = Field(5, ge=1)  # epochs between kept epoch_XXX.pt (latest/best every epoch)
    sample_interval: int = Field(5, ge=1)  # epochs between saved samples (the last epoch always)
    log_every: int = Field(10, ge=1)  # steps between rows of steps.csv
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA if supported, else fp16; fp32 on CPU
    heartbeat_s: float = Field(30.0, gt=0)  # seconds between run.json heartbeats


class Loss(Strict):
    """Loss weights. A head whose weight is 0 is not computed during training."""

    mse: float = Field(1.0, ge=0)
    seg: float = Field(0.0, ge=0)
    cls: float = Field(0.0, ge=0)
    kl: float = Field(1e-6, ge=0)  # only used by a variational encoder

    @model_validator(mode="after")
    def _not_all_zero(self):
        weights = [h.loss_weight for h in HEADS]
        if not any(getattr(self, w) for w in weights):
            raise ValueError(f"{', '.join(weights[:-1])} and {weights[-1]} weights are all zero")
        return self


class Handoff(Strict):
    """The next phase that the winner is handed to (`params/<phase>.yaml`, written by `imginav report`)."""

    phase: str = Field("phase1_5", pattern=r"^[A-Za-z0-9_.-]+$")
    # Overrides of the winner's training settings; validated against Training, so a typo is an error.
    training: dict = {
        "epochs": 50,
        "batch_size": 16,
        "optimizer": "adamw",
        "lr": 1e-4,
        "weight_decay": 0.01,
        "early_stopping": {"patience": 5, "min_delta": 1e-4, "restore_best": True},
    }
    seeds: list[int] | None = None  # default: the first seed of this phase

    @model_validator(mode="after")
    def _training_valid(self):
        base = Training().model_dump()
        merged = {**base, **self.training}
        if isinstance(self.training.get("early_stopping"), dict):
            merged["early_stopping"] = {**(base["early_stopping"] or {}), **self.training["early_stopping"]}
        try:
            Training.model_validate(merged)
        except ValidationError as e:
            err = e.errors()[0]
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            raise ValueError(f"training.{'.'.join(str(x) for x in err['loc'])}: {msg}") from None
        return self


class Decision(Strict):
    """The researchers' decision rules (defaults are theirs); evaluated by analysis.decide."""

    primary_metric: Literal["val_mse"] = "val_mse"  # compared at each run's best epoch (best val MSE)
    baseline: str | None = None  # experiment the others are compared to; default: the first one
    similar_tolerance: float = Field(0.02, ge=0)  # |relative change of val MSE vs baseline| within this is "similar"
    alpha: float = Field(0.05, gt=0, lt=1)  # significance level; intervals are (1 - alpha) confidence intervals
    # bonferroni: each of the m comparisons with the baseline uses alpha / m, so that with many experiments the
    # chance of any false "worse"/"better" stays near alpha (none: alpha per comparison, the researchers' default)
    correction: Literal["none", "bonferroni"] = "none"
    power: float = Field(0.8, gt=0, lt=1)  # for "needs more seeds (~N)": chance that N seeds decide
    min_seg_miou: float = Field(0.5, ge=0, le=1)
    min_cls_accuracy: float = Field(0.8, ge=0, le=1)
    stability_not_worse: bool = True  # if false, the stability rows are shown but do not decide
    max_extra_spikes: float = Field(1.0, ge=0)  # loss spikes per run allowed above the baseline's mean
    stability_ratio: float = Field(2.0, ge=1)  # late val wobble allowed, as a multiple of the baseline's
    max_extra_epochs: float = Field(2.0, ge=0)  # epochs to within 10% of best allowed above the baseline's
    # Step comparisons [earlier, later]: each added loss on its own, e.g. [[F1, F2], [F2, F3]]: F3 against F2 is the
    # classification loss alone. Paired by seed, same statistics as the baseline comparison. Default: each
    # experiment against the baseline.
    steps: list[tuple[str, str]] | None = None
    # Boundary F as a pass/fail criterion (not worse than the baseline beyond similar_tolerance); false: an
    # informative row of the criteria table.
    boundary_not_worse: bool = False
    handoff: Handoff | None = Handoff()  # null: write winner.yaml only (e.g. a phase whose next params are hand-written)


class ClusterResources(Strict):
    """What one job asks the scheduler for. A field left out (None) is not requested: the queue's default applies."""

    queue: str | None = None  # LSF queue / SLURM partition
    cores: int | None = Field(None, ge=1)
    mem_per_core_gb: float | None = Field(None, gt=0)  # LSF rusage[mem=..] per slot / SLURM --mem-per-cpu
    gpus: int | None = Field(None, ge=0)
    walltime: str | None = Field(None, pattern=r"^\d{1,3}:[0-5]\d$")  # "H:MM" (LSF -W); SLURM gets H:MM:00
    project: str | None = None  # LSF project / SLURM account

    def minutes(self) -> int | None:
        if self.walltime is None:
            return None
        h, m = self.walltime.split(":")
        return int(h) * 60 + int(m)


class Cluster(Strict):
    backend: Literal[BACKENDS] = "local"  # type: ignore[valid-type] (schedulers.BACKENDS)
    defaults: ClusterResources = ClusterResources(cores=8, mem_per_core_gb=8, gpus=1, walltime="6:00")
    experiments: dict[str, ClusterResources] = {}  # per-experiment overrides, e.g. another queue
    # The report job after all runs: a CPU job; queue None means the scheduler's default queue.
    report: ClusterResources = ClusterResources(cores=1, mem_per_core_gb=8, gpus=0, walltime="1:00")
    setup: list[str] = []  # shell lines before the run: module loads, conda activation
    # runs_root and logs_dir may use environment variables ($SCRATCH, $USER), expanded when the jobs are written.
    runs_root: str | None = None  # scratch space on the cluster; default: the phase's runs_root
    logs_dir: str | None = None  # default: <runs root>/<phase>/logs
    max_parallel: int | None = Field(None, ge=1)  # array slot limit (%K)
    warning_minutes: int = Field(10, ge=1)  # warning signal this long before the walltime
    requeue_exit_code: int = Field(99, ge=1, le=255)

    @model_validator(mode="after")
    def _warning_before_walltime(self):
        for name, res in [("defaults", self.defaults), *self.experiments.items()]:
            minutes = res.minutes() or self.defaults.minutes()
            if minutes is not None and self.warning_minutes >= minutes:
                where = "defaults" if name == "defaults" else f"experiments.{name}"
                raise ValueError(f"warning_minutes {self.warning_minutes} is not shorter than {where}.walltime {res.walltime or self.defaults.walltime}")
        return self


class ExperimentOverrides(Strict):
    note: str = ""  # why this experiment exists (shown in the report)
    architecture: dict = {}
    training: dict = {}
    loss: dict = {}


class Phase(Strict):
    phase: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    runs_root: str = "runs"  # relative to the params file's folder, or absolute
    architecture_from: str | None = None  # a previous phase's winner.yaml; its architecture replaces ours
    # The previous phase winner's latent scale (diffusers scaling_factor, 1 / std of its latent), carried along
    # for the diffusion stage; it does not change training. Written into the next phase's params by the report.
    latent_scale: float | None = Field(None, gt=0)
    data: Data
    architecture: Architecture = Architecture()
    training: Training = Training()
    loss: Loss = Loss()
    seeds: list[int] = Field([42], min_length=1)
    experiments: dict[str, ExperimentOverrides] = Field(min_length=1)
    decision: Decision = Decision()
    cluster: Cluster = Cluster()

    @field_validator("experiments")
    @classmethod
    def _names(cls, v):
        for name in v:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"invalid experiment name {name!r}")
        return v


class RunConfig(Strict):
    """Everything one run needs: saved as config.yaml in the run folder and inside every checkpoint."""

    phase: str
    experiment: str
    seed: int
    run_dir: str
    params_file: str
    params_hash: str  # of the file and the --set overrides together
    overrides: list[str] = []  # the --set key.path=value items applied to the params file, in order
    data: Data
    architecture: Architecture
    training: Training
    loss: Loss


# ---------------------------------------------------------------------------------------------------------


def _one_line(e: ValidationError, source: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return f"{source}: " + "; ".join(parts)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def params_hash(path: str | Path, overrides: list[str] | tuple = ()) -> str:
    """What identifies a phase's configuration: the params file's bytes and the --set overrides (in order)."""
    h = hashlib.sha256(Path(path).read_bytes())
    if overrides:  # without overrides the hash stays what it was before --set existed
        h.update(b"\0" + "\n".join(overrides).encode())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------
# --set key.path=value overrides


def parse_set(item: str) -> tuple[list[str], object]:
    """`training.epochs=2` -> (["training", "epochs"], 2): the value is read as YAML (2, 0.1, true, [42, 43], text);
    its type is then checked by the same schema as the file's."""
    key, sep, text = item.partition("=")
    path = key.strip().split(".")
    if not sep or not all(p.strip() for p in path):
        raise InputError(f"--set {item}: expected key.path=value, e.g. training.epochs=2")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise InputError(f"--set {item}: invalid value: {str(e).splitlines()[0]}") from None
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


def _validate(raw: dict, source: str) -> Phase:
    """Schema checks of a raw params mapping; raises InputError whose message starts with `source`."""
    try:
        phase = Phase.model_validate(raw)
        # Each experiment's overrides must validate too, so a typo in F3 fails before F1 starts.
        for name, over in phase.experiments.items():
            for section in ("architecture", "training", "loss"):
                merged = _deep_merge(getattr(phase, section).model_dump(), getattr(over, section))
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


def load_phase(path: str | Path, check_files: bool = True, overrides: list[str] | tuple = ()) -> Phase:
    """Read and validate a phase params file with its --set overrides; paths in it become absolute. Raises InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    base = path.parent.resolve()

    def absolute(p: str, field: str) -> str:
        # ${VAR} lets a cluster user keep paths out of the file (IMGINAV_DATA, SCRATCH, ...). Without
        # check_files (dry runs on a login node) an unset variable stays as it is, for the job to expand.
        for var in re.findall(r"\$\{?(\w+)\}?", p):
            if var not in os.environ:
                if check_files:
                    raise InputError(f"{path}: {field}: environment variable {var} is not set (in {p!r})")
                return p
        p = os.path.expandvars(p)
        return str(Path(p) if Path(p).is_absolute() else (base / p).resolve())

    overrides = list(overrides)
    winner_from = apply_sets(raw, overrides).get("architecture_from")
    if winner_from:
        # The winner's architecture replaces the file's (the file's is what runs until a winner exists);
        # --set architecture.* overrides still apply on top of it.
        winner = Path(absolute(str(winner_from), "architecture_from"))
        if not winner.is_file():
            raise InputError(f"{path}: architecture_from: file not found: {winner}")
        arch = (yaml.safe_load(winner.read_text()) or {}).get("architecture")
        if not isinstance(arch, dict):
            raise InputError(f"{path}: architecture_from: {winner} has no architecture mapping")
        raw = {**raw, "architecture": arch}
    phase = _validate_with_sets(raw, overrides, str(path))
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
    unknown = set(phase.cluster.experiments) - set(phase.experiments)
    if unknown:
        raise InputError(f"{path}: cluster.experiments: {sorted(unknown)[0]!r} is not an experiment")
    if check_files and not Path(phase.data.manifest).is_file():
        raise InputError(f"{path}: data.manifest: file not found: {phase.data.manifest}")
    return phase


def run_dir(runs_root: str | Path, phase: str, experiment: str, seed: int) -> Path:
    return Path(runs_root) / phase / experiment / f"seed{seed}"


def resolve_run(params_file: str | Path, experiment: str, seed: int, runs_root: str | None = None,
                overrides: list[str] | tuple = ()) -> RunConfig:  # fmt: skip
    """The resolved config of one experiment x seed (shared defaults, --set overrides, the experiment's overrides)."""
    phase = load_phase(params_file, overrides=overrides)
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
        architecture=Architecture.model_validate(_deep_merge(phase.architecture.model_dump(), over.architecture)),
        training=Training.model_validate(_deep_merge(phase.training.model_dump(), over.training)),
        loss=Loss.model_validate(_deep_merge(phase.loss.model_dump(), over.loss)),
    )


def runs_of(phase: Phase, runs_root: str | None = None) -> list[dict]:
    """Every experiment x seed of a phase, in a fixed order: the index that all backends execute."""
    root = runs_root or phase.runs_root
    return [
        {"experiment": name, "seed": seed, "run_dir": str(run_dir(root, phase.phase, name, seed))}
        for name in phase.experiments
        for seed in phase.seeds
    ]
