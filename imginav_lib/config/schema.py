"""The phase params schema: every section of a phase YAML as a strict pydantic model, and the resolved config
of one run (`RunConfig`).

Unknown keys are errors, every float is finite and no number field takes a boolean (`Strict`), `Name` checks
every name that becomes a folder and `Seeds` keeps every run folder a function of (phase, experiment, seed).
Reading a file, applying `--set` overrides and resolving the runs is `params.py`.
"""
from __future__ import annotations

import types
import typing
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imginav_lib.heads import HEADS

# The cluster schedulers by name (launch/schedulers/ implements one module each and checks itself against this
# list, so that reading a params file never imports the scheduler code); `local` runs on this machine.
SCHEDULER_NAMES = ("lsf", "slurm")
BACKENDS = ("local", *SCHEDULER_NAMES)  # what `--backend` and `cluster.backend` accept


def _takes_number(annotation) -> bool:
    """Whether a field's type takes an int or a float but not a bool (`int`, `float | None`, `list[int]`, ...)."""
    if annotation not in _TAKES_NUMBER:
        _TAKES_NUMBER[annotation] = _leaves_take_number(annotation)
    return _TAKES_NUMBER[annotation]


_TAKES_NUMBER: dict = {}  # annotation -> _leaves_take_number: the schema's few types, walked once each


def _leaves_take_number(annotation) -> bool:
    leaves, todo = set(), [annotation]
    while todo:
        t = todo.pop()
        if typing.get_origin(t) is Annotated:
            todo.append(typing.get_args(t)[0])
        elif typing.get_origin(t) in (typing.Union, types.UnionType, list, tuple):
            todo.extend(typing.get_args(t))
        else:
            leaves.add(t)
    return bool(leaves & {int, float}) and bool not in leaves


def _first_boolean(value) -> bool | None:
    """`value` if it is a bool, else the first bool in a list of values, else None."""
    for v in (value if isinstance(value, (list, tuple)) else [value]):
        if isinstance(v, bool):
            return v
    return None


class Strict(BaseModel):
    # allow_inf_nan=False: `lr: .inf` or `seg: .nan` is an error in every float field, present and future.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value, info):
        # pydantic's lax mode reads `epochs: true` as 1 and `seeds: [true]` as [1]; strict mode would also refuse
        # `lr: 1e-4` (a string to PyYAML). So only booleans are refused, in every number field, present and future.
        found = _first_boolean(value)
        if found is not None and _takes_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(found).lower()} is a boolean, not a number")
        return value


def check_name(name: str) -> str:
    """The rules for a name that becomes a folder (phase, experiment): the one place they are checked.

    Not empty, at most 100 characters, no `/` or `\\`, no control character, not starting with `.` (`..`, hidden
    folders) or `-` (read as an option by `--only` and shell tools).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{name!r} is not a usable folder name: empty")
    why = ("longer than 100 characters" if len(name) > 100
           else "contains / or \\" if "/" in name or "\\" in name
           else "contains a control character" if any(ord(c) < 32 or ord(c) == 127 for c in name)
           else "starts with . or -" if name[0] in ".-" else None)  # fmt: skip
    if why:
        raise ValueError(f"{name!r} is not a usable folder name: {why}")
    return name


def _unique_seeds(seeds: list[int]) -> list[int]:
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ValueError(f"seed {twice[0]} is listed twice: two runs would share the folder seed{twice[0]}")
    return seeds


Name = Annotated[str, AfterValidator(check_name)]
PHASE_RE = r"^[A-Za-z0-9_.-]+$"  # phase names also name job arrays and reports/<phase>.html: no spaces or quotes
# A seed seeds numpy (np.random.seed takes 0 .. 2**32 - 1) and names the folder seed<N>.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Seeds = Annotated[list[Seed], AfterValidator(_unique_seeds)]
MAX_IMAGE_SIZE = 8192  # pixels a side: one 8192 px image is 256 MiB in the cache (image + mask)


class Data(Strict):
    manifest: str  # CSV in the researchers' format; relative paths are relative to the params file
    image_size: int = Field(512, ge=16, le=MAX_IMAGE_SIZE)  # pixels; other sizes are resized (nearest) in the cache
    filters: dict[str, list] = {"is_empty": [False]}  # manifest column -> allowed values
    val_fraction: float = Field(0.2, gt=0, lt=1)
    # A held-out test split: selection (early stopping, best.pt, the best epoch) uses validation only; the selected
    # checkpoint is evaluated once on the test images (eval.json "test"). 0: no test split.
    test_fraction: float = Field(0.0, ge=0, lt=1)
    # The manifest column whose groups never straddle a split (a scene and the rooms cut from it show the same
    # furniture). "auto": scene_id when the manifest has that column, else no grouping; null: no grouping.
    # Rows with an empty cell are groups of their own.
    group_by: str | None = "auto"
    split_seed: Seed = 42
    # fixed: every run uses the split of split_seed, so the intervals across seeds cover initialisation and data
    # order only; per_seed: seed s uses the split of split_seed + s (the same for every experiment of that seed,
    # so runs stay paired), and the intervals include the split's variance too.
    split: Literal["fixed", "per_seed"] = "fixed"
    on_bad_image: Literal["error", "skip"] = "error"
    cache_dir: str = ".cache/imginav"  # decoded arrays; relative to the params file
    mask_tolerance: float = Field(30.0, gt=0)  # RGB distance beyond which a pixel is ignored in seg targets
    workers: int | None = Field(None, ge=1)  # decoding processes of prepare; None: the job's cores (cache.default_workers)
    num_samples: int = Field(8, ge=1)  # fixed validation images shown in samples/

    @model_validator(mode="after")
    def _fractions(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction {self.val_fraction} + test_fraction {self.test_fraction} leave no training images")
        return self


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
    # An improvement counts when val_mse < best * (1 - min_delta): a fraction of the best so far (0.001 = 0.1%),
    # so the rule means the same at an MSE of 0.04 and of 0.004.
    min_delta: float = Field(1e-3, ge=0, lt=1)
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
    # auto: bf16 on a GPU of compute capability >= 8.0 (native bf16 units), fp16 with the grad scaler below that
    # (a V100 would run bf16 emulated), fp32 on the CPU. A resumed run must resolve to the precision it started in.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # cuDNN's deterministic mode and torch.use_deterministic_algorithms (and the cuBLAS workspace they need):
    # repeatable on one GPU model and software stack, at a cost (bench/gpu_check.py measures it).
    deterministic: bool = False
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

    phase: Name = Field("phase1_5", pattern=PHASE_RE)
    # Overrides of the winner's training settings; validated against Training, so a typo is an error.
    training: dict = {
        "epochs": 50,
        "batch_size": 16,
        "optimizer": "adamw",
        "lr": 1e-4,
        "weight_decay": 0.01,
        "early_stopping": {"patience": 5, "min_delta": 1e-3, "restore_best": True},
    }
    seeds: Seeds | None = None  # default: the first seed of this phase

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
    # Order of preference between winner candidates that cannot be told apart (head to head, paired by seed);
    # default: fewest auxiliary losses first ("if F1 wins clearly, simplify"), then the order of `experiments`.
    preference: list[str] | None = None
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
    backend: Literal[BACKENDS] = "local"  # type: ignore[valid-type]
    defaults: ClusterResources = ClusterResources(cores=8, mem_per_core_gb=8, gpus=1, walltime="6:00")
    experiments: dict[Name, ClusterResources] = {}  # per-experiment overrides, e.g. another queue
    # Which queue a run goes to. by_experiment: defaults.queue, or the experiment's own queue in `experiments`.
    # by_seed: all experiments of one seed on one queue, the seeds dealt round-robin over `queues` in the order of
    # `seeds`, so every comparison paired by seed runs on one GPU type (an experiment may not then set a queue).
    assign: Literal["by_experiment", "by_seed"] = "by_experiment"
    queues: list[str] = []  # by_seed only: the queues the seeds are spread over
    # The report job after all runs: a CPU job; queue None means the scheduler's default queue.
    report: ClusterResources = ClusterResources(cores=1, mem_per_core_gb=8, gpus=0, walltime="1:00")
    # The decode of the images into the cache (`imginav prepare`) when the cache does not exist yet: a CPU job.
    prepare: ClusterResources = ClusterResources(cores=8, mem_per_core_gb=1, gpus=0, walltime="2:00")
    # LSF -gpu mode: exclusive_process keeps other jobs off our GPU (LSF's default is shared). SLURM: unused.
    gpu_mode: Literal["exclusive_process", "shared"] = "exclusive_process"
    # LSF memory: per_slot writes rusage[mem=XGB], per slot only where the site reserves per task (DTU); per_task
    # writes rusage[mem=XGB/task] (LSF >= 10.1.0.9), per slot anywhere. SLURM's --mem-per-cpu is per core always.
    mem_reserve: Literal["per_slot", "per_task"] = "per_slot"
    setup: list[str] = []  # shell lines before the run: module loads, conda activation
    # runs_root and logs_dir may use environment variables ($SCRATCH, $USER), expanded when the jobs are written.
    runs_root: str | None = None  # scratch space on the cluster; default: the phase's runs_root
    logs_dir: str | None = None  # default: <runs root>/<phase>/logs
    max_parallel: int | None = Field(None, ge=1)  # array slot limit (%K)
    warning_minutes: int = Field(10, ge=1)  # warning signal this long before the walltime
    requeue_exit_code: int = Field(99, ge=1, le=255)

    @model_validator(mode="after")
    def _queues_for_assign(self):
        if self.assign == "by_seed":
            if not self.queues:
                raise ValueError("assign by_seed needs queues: the queues the seeds are spread over")
            own = [n for n, r in self.experiments.items() if r.queue is not None]
            if own:
                raise ValueError(f"assign by_seed puts every experiment of a seed on one queue: experiments.{own[0]}.queue "
                                 f"would split it (use assign: by_experiment for per-experiment queues)")
        elif self.queues:
            raise ValueError("queues is used by assign: by_seed only (by_experiment: defaults.queue and experiments.<name>.queue)")
        return self

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
    phase: Name = Field(pattern=PHASE_RE)
    description: str = ""
    runs_root: str = "runs"  # relative to the params file's folder, or absolute
    architecture_from: str | None = None  # a previous phase's winner.yaml; its architecture replaces ours
    # A latent scale (diffusers scaling_factor, 1 / std of the latent) noted by hand; it does not change training.
    # The report no longer writes it into the next phase's params: a retrained model measures its own (eval.json).
    latent_scale: float | None = Field(None, gt=0)
    data: Data
    architecture: Architecture = Architecture()
    training: Training = Training()
    loss: Loss = Loss()
    seeds: Seeds = Field([42], min_length=1)
    experiments: dict[Name, ExperimentOverrides] = Field(min_length=1)
    decision: Decision = Decision()
    cluster: Cluster = Cluster()

    @field_validator("experiments")
    @classmethod
    def _distinct_folders(cls, v):
        # F1 and f1 are one folder on macOS and Windows file systems; so are "é" composed (NFC) and decomposed
        # (NFD): macOS normalises file names. Compared after NFC and case folding (ß and ss too).
        seen: dict[str, str] = {}
        for name in v:
            key = unicodedata.normalize("NFC", name).casefold()
            if key in seen:
                other = seen[key]
                if other.casefold() == name.casefold():
                    raise ValueError(f"{other!r} and {name!r} differ only in case: they would share a folder")
                raise ValueError(f"{ascii(other)} and {ascii(name)} differ only in Unicode normalisation (NFC/NFD) or "
                                 "case: they would share a folder")  # ascii: the two look the same when printed
            seen[key] = name
        return v


class WinnerFile(Strict):
    """A previous phase's winner.yaml (written by `imginav report`), as `architecture_from:` reads it."""

    architecture: Architecture  # the one section used; the others are the record of the decision
    phase: str | None = None
    winner: str | None = None
    status: str | None = None
    verdict: str | None = None
    how_sure: str | None = None
    loss: dict = {}
    metrics: dict = {}
    best_seed: int | None = None
    best_checkpoint: str | None = None
    latent_scale: float | None = Field(None, gt=0)  # 1 / std of the best checkpoint's latents (diffusers scaling_factor)
    latent: dict | None = None  # measured_on, scaling_factor, shift_factor, channel_shift, channel_scale of that checkpoint
    params_file: str | None = None
    params_hash: str | None = None
    git_commit: str | None = None
    date: Any = None
    next_params: str | None = None


class RunConfig(Strict):
    """Everything one run needs: saved as config.yaml in the run folder and inside every checkpoint."""

    phase: Name
    experiment: Name
    seed: Seed
    run_dir: str
    params_file: str
    params_hash: str  # of the file and the --set overrides together
    overrides: list[str] = []  # the --set key.path=value items applied to the params file, in order
    data: Data
    architecture: Architecture
    training: Training
    loss: Loss
