"""The types of every setting: one dataclass per config of noderun/conf, registered in Hydra's ConfigStore
as schema_GROUP_NAME, which the config's own YAML extends (its defaults list names it). Composition
itself then refuses a key the dataclass lacks and a value of the wrong type; a field's `rule` says
the values it takes beyond its type (checked by `rule_problem`, and shown in every message about it).

The YAML files keep the defaults and the comments; a dataclass here holds exactly the keys of its YAML,
so that typing a config changed no run's key (noderun.run.identity)."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


@dataclass(frozen=True)
class Rule:
    """The values a number takes: whole or not, its least (or, `above`, a bound it must exceed) and
    largest value, and whether null is allowed."""

    whole: bool = False
    least: float | None = None
    above: float | None = None
    most: float | None = None
    nullable: bool = False

    def valid(self) -> str:
        """Return what the rule allows, as a message says it ("a whole number >= 1 or null")."""
        kind = "a whole number" if self.whole else "a number"
        if self.least is not None and self.most is not None:
            text = f"{kind} from {self.least} to {self.most}"
        elif self.above is not None:
            text = f"{kind} > {self.above}"
        elif self.least is not None:
            text = f"{kind} >= {self.least}"
        else:
            text = kind
        return text + (" or null" if self.nullable else "")

    def allows(self, value: Any) -> bool:
        """Return whether `value` is one the rule allows."""
        if value is None:
            return self.nullable
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.whole and not isinstance(value, int):
            return False
        return ((self.least is None or value >= self.least) and (self.above is None or value > self.above)
                and (self.most is None or value <= self.most))


# The largest whole number a run can take: torch holds numbers as 64-bit integers; a seed is combined
# with an epoch's number (seed x 100,003 + epoch: noderun.data.batches), so seeds stop far below that.
LARGEST_WHOLE = 2**63 - 1


def _ruled(default: Any, rule: Rule) -> Any:
    return field(default=default, metadata={"rule": rule})


def whole(default: Any, least: int, most: int = LARGEST_WHOLE, nullable: bool = False) -> Any:
    """A whole-number field of at least `least` (and at most `most`)."""
    return _ruled(default, Rule(whole=True, least=least, most=None if most == LARGEST_WHOLE else most,
                                nullable=nullable))


def positive(default: Any, nullable: bool = False) -> Any:
    """A number field above zero."""
    return _ruled(default, Rule(above=0, nullable=nullable))


def non_negative(default: Any) -> Any:
    """A number field of zero or more."""
    return _ruled(default, Rule(least=0))


# --- solver -------------------------------------------------------------------------------------------

@dataclass
class FixedStepSolver:
    """A fixed-grid method (euler, rk4, ...): step_size, or null for the output times' grid."""

    method: str = MISSING
    rtol: float = positive(1e-3)
    atol: float = positive(1e-3)
    step_size: Optional[float] = positive(None, nullable=True)
    adjoint_norm: str = "default"
    path: str = "torchdiffeq"


@dataclass
class AdaptiveSolver(FixedStepSolver):
    """An adaptive method (dopri5, ...): at most max_num_steps steps per solve, or unlimited (null)."""

    max_num_steps: Optional[int] = whole(None, 1, nullable=True)


@dataclass
class ScipySolver(FixedStepSolver):
    """SciPy's solve_ivp through torchdiffeq (scipy_method: RK45, LSODA, ...)."""

    scipy_method: str = "RK45"


# --- model --------------------------------------------------------------------------------------------

@dataclass
class MLPModel:
    name: str = "mlp"


@dataclass
class ResNetModel:
    name: str = "resnet"
    downsampling: str = "res"


@dataclass
class RKNetModel:
    name: str = "rknet"
    downsampling: str = "conv"
    t1: float = 1.0


@dataclass
class ODENetModel(RKNetModel):
    name: str = "odenet"
    adjoint: bool = True


@dataclass
class DownsampleHeadModel:
    name: str = "downsample_head"
    downsampling: str = "conv"


@dataclass
class RNNModel:
    name: str = "rnn"
    hidden: int = whole(25, 1)
    cell: str = "rnn"
    adjoint: bool = False
    plot_spirals: int = whole(4, 0)


@dataclass
class LatentODEModel:
    name: str = "latent_ode"
    latent: int = whole(4, 1)
    rec_hidden: int = whole(25, 1)
    dyn_hidden: int = whole(20, 1)
    dec_hidden: int = whole(20, 1)
    cell: str = "rnn"
    obs_std: float = 0.1
    adjoint: bool = False
    plot_spirals: int = whole(4, 0)



@dataclass
class PlanarModel:
    """Section 4's planar flow: `units` layers of one planar unit each (depth K)."""

    name: str = "planar"
    units: int = whole(8, 1)


@dataclass
class CNFModel:
    """Section 4's continuous normalizing flow: `units` gated planar units (width M)."""

    name: str = "cnf"
    units: int = whole(8, 1)
    trace: str = "exact"
    hyper_hidden: int = whole(32, 1)
    adjoint: bool = False

# --- dataset ------------------------------------------------------------------------------------------

@dataclass
class ImageDataset:
    """MNIST or Fashion-MNIST."""

    name: str = MISSING
    root: str = MISSING
    sources: List[str] = field(default_factory=lambda: ["cache", "torchvision", "registry"])
    download_timeout_s: float = 10
    val_size: int = whole(5000, 0)
    train_size: Optional[int] = whole(None, 1, nullable=True)
    test_size: Optional[int] = whole(None, 1, nullable=True)
    augment: bool = True
    crop_padding: int = whole(4, 0)


@dataclass
class SpiralWindows:
    """What every spiral family has: how many spirals, each one's window of n_points times of which n_obs are
    observed, the test and validation splits, the noise, and the curve's parameters a and b."""

    name: str = MISSING
    n_spirals: int = 1000
    n_points: int = 100
    n_obs: int = 100
    test_fraction: float = 0.2
    val_size: int = whole(100, 0)
    noise_std: float = non_negative(0.1)
    a: float = 0.0
    b: float = 0.3


@dataclass
class ArchimedeanSpirals(SpiralWindows):
    name: str = "spirals_archimedean"
    a: float = 0.5
    b: float = 0.2
    turns: float = 0.5


@dataclass
class Spirals(SpiralWindows):
    name: str = "spirals"
    n_grid: int = 1000
    train_starts_to_end: bool = True
    t_end_pi: float = 6.0
    cw_scale: float = 50.0
    centre: float = 5.0


@dataclass
class EnergyTarget:
    """Density matching's target: exp(-U) of one of Rezende and Mohamed's energies (u1-u4)."""

    name: str = "energy"
    target: str = "u1"


@dataclass
class PlaneSamples:
    """Maximum likelihood's data: samples of a set on the plane, their noise, and how many to train and
    test on."""

    name: str = MISSING
    n_train: int = whole(10000, 1)
    n_test: int = whole(5000, 1)
    noise: float = non_negative(0.1)


@dataclass
class CubicData:
    name: str = "cubic"
    n_train: int = 10
    low: float = -2.5
    high: float = 2.5
    noise_std: float = non_negative(1.0)
    n_test: int = 100


@dataclass
class ECGData:
    name: str = "ecg"
    path: str = MISSING
    test_path: Optional[str] = None


# --- trainer ------------------------------------------------------------------------------------------

@dataclass
class Regularize:
    """A penalty on the dynamics of adaptive solves (noderun.regularize): method none, error_estimate or kinetic."""

    method: str = "none"
    weight: float = non_negative(0.0)


@dataclass
class ClassifierTrainer:
    """SGD with momentum and step decay (Table 1)."""

    epochs: int = whole(160, 1)
    batch_size: int = whole(128, 1)
    lr: float = positive(0.1)
    momentum: float = non_negative(0.9)
    weight_decay: float = non_negative(0.0)
    lr_decay_fractions: List[float] = field(default_factory=lambda: [0.375, 0.625, 0.875])
    lr_decay_factor: float = positive(0.1)
    lr_decay_min_epochs: int = whole(10, 0)
    eval_batch_size: int = whole(500, 1)
    progress: bool = True
    measure_step: bool = True
    regularize: Regularize = field(default_factory=Regularize)


@dataclass
class SequenceTrainer:
    """Adam with exponential decay (Table 2)."""

    epochs: int = whole(100, 1)
    passes_per_epoch: int = whole(1, 1)
    batch_size: int = whole(50, 1)
    lr: float = positive(0.005)
    lr_final: float = positive(1.0)
    eval_batch_size: int = whole(200, 1)
    progress: bool = False
    objective: str = "extrapolate"
    regularize: Regularize = field(default_factory=Regularize)



@dataclass
class FlowTrainer:
    """Section 4's flows: `iterations` optimizer steps of `batch_size` samples, evaluated every `eval_every`."""

    optimizer: str = "adam"
    lr: float = positive(1e-3)
    iterations: int = whole(1000, 1)
    batch_size: int = whole(512, 1)
    eval_every: int = whole(100, 1)
    lr_final: float = positive(1.0)
    weight_decay: float = non_negative(0.0)

# --- task settings (conf/task/NAME.yaml, under the task's name) ----------------------------------------

@dataclass
class MemorySettings:
    models: List[str] = field(default_factory=lambda: ["resnet", "rknet", "odenet"])
    steps: List[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    method: str = "rk4"
    batch_size: int = whole(32, 1)
    downsampling: str = "conv"


@dataclass
class GradcheckSettings:
    batch_size: int = whole(16, 1)
    dtype: str = "float64"
    downsampling: str = "conv"
    # each {name, method, tol} (adaptive) or {name, method, step_size} (fixed grid)
    cases: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class ToleranceSettings:
    method: str = "dopri5"
    tolerances: List[float] = field(default_factory=list)
    batch_size: int = whole(128, 1)
    reference_method: str = "dopri5"
    reference_tol: float = positive(1e-9)


@dataclass
class SolverAccuracySettings:
    t_end: float = positive(5.0)
    output_points: int = whole(51, 2)
    methods: List[str] = field(default_factory=list)
    step_sizes: List[float] = field(default_factory=list)
    tolerances: List[float] = field(default_factory=list)
    figure_methods: List[str] = field(default_factory=list)
    figure_step_size: float = positive(0.1)


@dataclass
class DensitySettings:
    """cnf_density: the samples its KL is estimated from, and the grid its density figure is drawn on."""

    eval_samples: int = whole(10000, 2)
    grid_points: int = whole(60, 2)


@dataclass
class LikelihoodSettings:
    """cnf_mle: the samples and grid its figure draws at each of `figure_times` (0: noise, 1: data)."""

    figure_samples: int = whole(2000, 1)
    grid_points: int = whole(60, 2)
    figure_times: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])


@dataclass
class CubicFit:
    """One model's fits in the cubic task: its learning rate, iterations and learning-rate sweep."""

    lr: float = positive(0.01)
    iterations: int = whole(1000, 1)
    lr_sweep: List[float] = field(default_factory=list)


@dataclass
class CubicRandomSets:
    count: int = whole(5, 0)
    n_train: int = whole(20, 1)
    low: float = -3.0
    high: float = 3.0


@dataclass
class CubicSettings:
    width: int = whole(20, 1)
    adjoint: bool = True
    resnet: CubicFit = field(default_factory=CubicFit)
    odenet: CubicFit = field(default_factory=CubicFit)
    random_sets: CubicRandomSets = field(default_factory=CubicRandomSets)
    seed_document: Dict[str, float] = field(default_factory=dict)


@dataclass
class ECGSettings:
    models: List[str] = field(default_factory=lambda: ["resnet", "odenet"])
    channels: int = whole(32, 1)
    epochs: int = whole(25, 1)
    batch_size: int = whole(128, 1)
    eval_batch_size: int = whole(1000, 1)
    lr: float = positive(0.01)
    momentum: float = non_negative(0.9)
    adjoint: bool = True
    test_fraction: float = 0.2
    train_size: Optional[int] = whole(None, 1, nullable=True)
    test_size: Optional[int] = whole(None, 1, nullable=True)
    seed_document: Dict[str, Any] = field(default_factory=dict)


# --- logger and the primary config -------------------------------------------------------------------

@dataclass
class Logger:
    backends: List[str] = field(default_factory=list)
    tracking_uri: Optional[str] = None


@dataclass
class Speed:
    compile: bool = False


@dataclass
class Paths:
    output_root: str = "outputs"


@dataclass
class RunConfig:
    """The primary config's own keys (noderun/conf/config.yaml) and the blocks a preset may add: a caption
    and the figures of a reference. `Config`, the primary config's type, adds each task's settings."""

    task: str = "train"
    ckpt: Optional[str] = None
    seed: int = whole(0, 0, 2**32 - 1)
    tags: List[Any] = field(default_factory=list)
    note: Optional[str] = None
    device: str = "auto"
    resume: Any = False
    threads: Optional[int] = whole(None, 1, nullable=True)
    deterministic: bool = True
    speed: Speed = field(default_factory=Speed)
    paths: Paths = field(default_factory=Paths)
    model: Any = MISSING
    solver: Any = MISSING
    dataset: Any = MISSING
    trainer: Any = MISSING
    logger: Any = MISSING
    caption: Optional[str] = None
    reference: Optional[Dict[str, Any]] = None


def primary_config() -> type:
    """Return the primary config's type, Config: RunConfig with a block per task that has settings
    (SCHEMAS["task"]), under the task's name and null unless its task YAML sets it."""
    fields = [(name, Optional[kind], None) for name, kind in SCHEMAS["task"].items()]
    return dataclasses.make_dataclass("Config", fields, bases=(RunConfig,), namespace={"__module__": __name__})


def preset_blocks() -> tuple[str, ...]:
    """Return the blocks of Config only some presets set: null elsewhere, which says what their absence
    said before the configs were typed (noderun.run.identity leaves them out of the run key when null)."""
    return ("caption", "reference", *SCHEMAS["task"])


# The keys every run reads, whatever its task, and what each task (noderun.experiments.EXPERIMENTS) reads
# besides: a dotted key stands for itself and every key under it. A key no task of the run reads is
# refused when set on the command line (noderun.config) and left out of the run key (noderun.run.identity):
# `experiment=ecg trainer.lr=0.05` would otherwise be accepted, ignored, and make another run.
ALWAYS_READ = ("task", "seed", "tags", "note", "device", "resume", "threads", "deterministic", "paths", "logger",
               "caption", "reference")
TASK_READS = {
    "train": ("model", "solver", "dataset", "trainer", "speed"),
    "timeseries": ("model", "solver", "dataset", "trainer"),
    "cubic": ("cubic", "solver", "dataset"),
    "ecg": ("ecg", "solver", "dataset", "trainer.progress"),
    # the measurement tasks build their own solvers from their settings, on the run's solve path
    "memory": ("memory", "solver.path", "dataset"),
    "gradcheck": ("gradcheck", "solver.path", "dataset"),
    "tolerance": ("tolerance", "ckpt", "solver.path", "dataset"),
    "solver_accuracy": ("solver_accuracy", "solver.path"),
    "cnf_density": ("model", "solver", "dataset", "trainer", "cnf_density"),
    "cnf_mle": ("model", "solver", "dataset", "trainer", "cnf_mle"),
}

# The paper's table whose models (the model group) a task trains (4: section 4's flows): a model of
# another is refused in one line saying how it is run (noderun.checks), before anything starts.
TASK_TABLE = {"train": 1, "timeseries": 2, "cnf_density": 4, "cnf_mle": 4}  # 4: section 4


def _covers(read: str, dotted_key: str) -> bool:
    return dotted_key == read or dotted_key.startswith(read + ".")


def reads_whole(task: str, dotted_key: str) -> bool:
    """Return whether a run of `task` reads all of `dotted_key` (a group choice replaces all of it); an
    unknown task reads everything (the lifecycle refuses it by name)."""
    return task not in TASK_READS or any(_covers(r, dotted_key) for r in ALWAYS_READ + TASK_READS[task])


def reads(task: str, dotted_key: str) -> bool:
    """Return whether a run of `task` reads the key `dotted_key`, or some key inside it."""
    return reads_whole(task, dotted_key) or any(_covers(dotted_key, r) for r in TASK_READS[task])


def read_part(plain: dict, task: str) -> dict:
    """Return a plain config with only the keys a run of `task` reads (a copy of the parts kept)."""
    if task not in TASK_READS:
        return plain
    kept: dict = {}
    for key in ALWAYS_READ + TASK_READS[task]:
        *parents, last = key.split(".")
        source, target = plain, kept
        for part in parents:
            if not isinstance(source.get(part), dict):
                break
            source, target = source[part], target.setdefault(part, {})
        else:
            if last in source:
                target[last] = source[last]
    known = {k.split(".")[0] for k in ALWAYS_READ + tuple(k for ks in TASK_READS.values() for k in ks)}
    kept.update({k: v for k, v in plain.items() if k not in known})  # a key no schema knows: kept as it was
    return kept


SCHEMAS: Dict[str, Dict[str, type]] = {
    "solver": {"fixed": FixedStepSolver, "adaptive": AdaptiveSolver, "scipy": ScipySolver},
    "model": {"mlp": MLPModel, "resnet": ResNetModel, "rknet": RKNetModel, "odenet": ODENetModel,
              "downsample_head": DownsampleHeadModel,
              "rnn": RNNModel, "latent_ode": LatentODEModel, "planar": PlanarModel, "cnf": CNFModel},
    "dataset": {"image": ImageDataset, "spirals": Spirals, "spirals_archimedean": ArchimedeanSpirals,
                "cubic": CubicData, "ecg": ECGData, "energy": EnergyTarget, "plane": PlaneSamples},
    "trainer": {"classifier": ClassifierTrainer, "sequence": SequenceTrainer, "flow": FlowTrainer},
    "logger": {"logger": Logger},
    # a task's settings (conf/task/NAME.yaml's block NAME:), keyed by the task; a task without settings
    # (train, timeseries: they read the groups) has none
    "task": {"memory": MemorySettings, "gradcheck": GradcheckSettings, "tolerance": ToleranceSettings,
             "solver_accuracy": SolverAccuracySettings, "cubic": CubicSettings, "ecg": ECGSettings,
             "cnf_density": DensitySettings, "cnf_mle": LikelihoodSettings},
}


def register() -> None:
    """Store every schema in Hydra's ConfigStore as schema_GROUP_NAME (schema_config for the primary,
    `Config`, built anew so that a task a plugin added has its block), outside any config group, so that
    no schema appears among a group's options (noderun --help). A plugin calls it after adding to SCHEMAS."""
    global Config
    # a module attribute: a pickled config (a joblib job's) names its type as noderun.schema.Config
    Config = primary_config()
    store = ConfigStore.instance()
    store.store(name="schema_config", node=Config)
    for group, schemas in SCHEMAS.items():
        if group == "task":  # blocks of the primary config, not configs of their own
            continue
        for name, node in schemas.items():
            store.store(name=f"schema_{group}_{name}", node=node)


_KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def valid_values(config: DictConfig, dotted_key: str) -> str:
    """Return what a key of a composed config takes, as a message says it: its rule's values, else
    its type's ("a whole number or null", "a list, e.g. [a, b]"); "a value" where no schema says."""
    *parents, last = dotted_key.split(".")
    node = OmegaConf.select(config, ".".join(parents)) if parents else config
    kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
    if not dataclasses.is_dataclass(kind) or last not in {f.name for f in dataclasses.fields(kind)}:
        return "a value"
    rule = next(f for f in dataclasses.fields(kind) if f.name == last).metadata.get("rule")
    if rule is not None:
        return rule.valid()
    hint = typing.get_type_hints(kind)[last]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    nullable = typing.get_origin(hint) is typing.Union and len(args) < len(typing.get_args(hint))
    base = typing.get_origin(args[0] if nullable else hint) or (args[0] if nullable else hint)
    text = {list: "a list, e.g. [a, b]", dict: "a mapping, e.g. {key: value}"}.get(base, _KINDS.get(base, "a value"))
    return text + (" or null" if nullable else "")


def rule_problem(config: DictConfig, prefix: str = "") -> tuple[str, Any, Rule] | None:
    """Return the first (key, value, rule) of a composed config whose value its rule refuses, or None."""
    kind = OmegaConf.get_type(config)
    for f in dataclasses.fields(kind) if dataclasses.is_dataclass(kind) else ():
        rule = f.metadata.get("rule")
        # an interpolation copies a key that is checked itself (and may not resolve in this config)
        if rule is not None and not OmegaConf.is_interpolation(config, f.name) and not rule.allows(config[f.name]):
            return prefix + f.name, config[f.name], rule
    for key in config:
        if key == "hydra" or OmegaConf.is_missing(config, key) or OmegaConf.is_interpolation(config, key):
            continue
        child = config[key]
        if isinstance(child, DictConfig):
            found = rule_problem(child, f"{prefix}{key}.")
            if found:
                return found
    return None


register()  # on import: whatever composes noderun's configs has imported this module first
