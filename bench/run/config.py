"""Configuration: plain dataclasses with their defaults, and the suite file format.

Every knob has exactly one default, here or in the model's own config
dataclass. Suite YAML files are checked key by key: an unknown key, a
duplicate key or a value of the wrong type is an error that names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from bench.checked import _type_ok, build_config, load_yaml
from bench.errors import DrbenchError
from bench.plugins import load_plugins, merged
from bench.report.settings import ReportConfig, default_report_metrics
from bench.run.spaces import search_space

SUITES_DIR = Path(__file__).resolve().parents[1] / "suites"


@dataclass
class ProtocolConfig:
    """How data is split and how rankings are judged; shared by every model of a suite."""

    split: str = "loo"  # "loo" (leave-one-out) or "temporal" (global temporal, DiffSASRec)
    temporal_quantile: float = 0.95
    ks: tuple[int, ...] = (5, 10, 20)
    # False, as in the DiffuRec, TIGER and RecBole sequential protocols: the
    # next item may be one the user already consumed (see README).
    exclude_history: bool = False
    monitor: str = "ndcg@10"  # validation metric for early stopping and model selection
    eval_batch_size: int = 256
    min_rating: float | None = None  # preprocessing: keep ratings >= this (None keeps all)
    core: int = 0  # preprocessing: iterative k-core filter (0 = off)
    # preprocessing: a repeated (user, item) pair keeps its "first" or "last" occurrence, or "keep" keeps
    # every repeat; None = the source's default ("first" for registered sources and csv:, "keep" for seq:)
    dedup: str | None = None

    def validate(self) -> None:
        from bench.protocol.splits import SPLITS
        from bench.data.interactions import DEDUP_POLICIES

        if self.split not in SPLITS:
            raise DrbenchError(f"protocol.split must be one of {', '.join(SPLITS)}, got '{self.split}'")
        if not 0.0 < self.temporal_quantile < 1.0:
            raise DrbenchError(f"protocol.temporal_quantile must be in (0, 1), got {self.temporal_quantile}")
        if not self.ks or any(k < 1 for k in self.ks):
            raise DrbenchError(f"protocol.ks must be positive cut-offs, got {list(self.ks)}")
        metric, _, k = self.monitor.partition("@")
        if metric not in ("ndcg", "hr", "mrr") or not k.isdigit() or int(k) not in self.ks:
            raise DrbenchError(f"protocol.monitor must be ndcg@K, hr@K or mrr@K with K in protocol.ks, got '{self.monitor}'")
        if self.eval_batch_size < 1:
            raise DrbenchError(f"protocol.eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.core < 0:
            raise DrbenchError(f"protocol.core must be >= 0, got {self.core}")
        if self.dedup is not None and self.dedup not in DEDUP_POLICIES:
            raise DrbenchError(f"protocol.dedup must be one of {', '.join(DEDUP_POLICIES)}, got '{self.dedup}'")


PRECISIONS = ("fp32", "bf16")
CHECKPOINT_RULES = ("monitor", "any_metric")


@dataclass
class TrainConfig:
    """Optimisation and early stopping, shared by every neural model."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 1  # validate every N epochs
    patience: int = 10  # validation rounds without improvement before stopping
    max_minutes: float | None = None  # wall-clock budget for training (None = no limit)
    # Batches of users with similar history length, trimmed to their longest history (bench.models.batching);
    # false = uniformly random batches, as the models' source codes draw them.
    bucket_by_length: bool = True
    # "bf16": the training forward pass under bfloat16 autocast (fp32 weights, optimiser and loss reduction);
    # validation, test and latency always run in fp32.
    precision: str = "fp32"
    # A step schedule (DiffuRec's official StepLR): the learning rate times lr_step_factor every lr_step_every
    # epochs; 0 keeps it constant.
    lr_step_every: int = 0
    lr_step_factor: float = 0.1
    # Which validation keeps a checkpoint and resets patience: "monitor" when protocol.monitor improves;
    # "any_metric" when any HR@K or NDCG@K of protocol.ks beats its own best so far (DiffuRec's official trainer).
    checkpoint: str = "monitor"

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise DrbenchError(f"training.precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.checkpoint not in CHECKPOINT_RULES:
            raise DrbenchError(f"training.checkpoint must be one of {', '.join(CHECKPOINT_RULES)}, got '{self.checkpoint}'")
        if self.lr_step_every < 0:
            raise DrbenchError(f"training.lr_step_every must be >= 0 (0 = constant learning rate), got {self.lr_step_every}")
        if not 0.0 < self.lr_step_factor <= 1.0:
            raise DrbenchError(f"training.lr_step_factor must be in (0, 1], got {self.lr_step_factor}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise DrbenchError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise DrbenchError(f"training.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise DrbenchError(f"training.weight_decay must be >= 0, got {self.weight_decay}")
        if self.patience < 0:
            raise DrbenchError(f"training.patience must be >= 0, got {self.patience}")


@dataclass
class ResourcesConfig:
    """Ray resources of one trial."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.5  # used only when the Ray cluster has GPUs
    max_concurrent_trials: int = 0  # 0 = as many as resources allow
    # How often a trial is started again from scratch when its Ray worker dies
    # (OOM-killed, node lost); an exception inside the model is never retried.
    max_retries: int = 1

    def validate(self) -> None:
        if self.cpus_per_trial <= 0:
            raise DrbenchError(f"resources.cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial < 0:
            raise DrbenchError(f"resources.gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        if self.max_retries < 0:
            raise DrbenchError(f"resources.max_retries must be >= 0, got {self.max_retries}")


SWEEP_SEARCHES = ("random", "tpe")
SWEEP_SCHEDULERS = ("asha", "fifo")


@dataclass
class SweepConfig:
    """The ``tune:`` section of a suite: how ``--tune`` searches hyperparameters per model x dataset."""

    search: str = "tpe"  # "random" or "tpe" (Optuna's Tree-structured Parzen Estimator)
    num_samples: int = 20  # configurations tried per model x dataset
    time_budget_min: float | None = None  # wall-clock cap per model x dataset (None = none)
    scheduler: str = "asha"  # "asha" stops weak configurations early; "fifo" runs all to the end
    grace_period: int = 2  # validation rounds before ASHA may stop a configuration
    reduction_factor: int = 3  # ASHA keeps the top 1/reduction_factor at each rung
    seed: int = 0  # seed of the search and of every configuration it tries
    seeds: list[int] = field(default_factory=list)  # seeds to retrain the best configuration with (default: the suite's)
    spaces: dict = field(default_factory=dict)  # model label -> {"params.x" | "training.y": {sampler: args}}

    def validate(self) -> None:
        if self.search not in SWEEP_SEARCHES:
            raise DrbenchError(f"tune.search must be one of {', '.join(SWEEP_SEARCHES)}, got '{self.search}'")
        if self.scheduler not in SWEEP_SCHEDULERS:
            raise DrbenchError(f"tune.scheduler must be one of {', '.join(SWEEP_SCHEDULERS)}, got '{self.scheduler}'")
        if self.num_samples < 1 or self.grace_period < 1 or self.reduction_factor < 2:
            raise DrbenchError("tune.num_samples and tune.grace_period must be >= 1 and tune.reduction_factor >= 2")
        if self.time_budget_min is not None and self.time_budget_min <= 0:
            raise DrbenchError(f"tune.time_budget_min must be > 0, got {self.time_budget_min}")


@dataclass
class ModelSpec:
    """One model entry of a suite: a registered model with its hyperparameters."""

    label: str  # the name shown in tables, e.g. "sasrec-ce"
    model: str  # registry name, e.g. "sasrec"
    params: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)  # dataset name -> {"params": {...}, "training": {...}}
    # Diffusion models: after training once, also test with each of these numbers of denoising steps.
    steps_sweep: list = field(default_factory=list)
    datasets: list = field(default_factory=list)  # only these of the suite's datasets (empty = all)

    def runs_on(self, dataset: str) -> bool:
        return not self.datasets or dataset in self.datasets

    def for_dataset(self, dataset: str) -> tuple[dict, dict]:
        override = self.overrides.get(dataset, {})
        return {**self.params, **override.get("params", {})}, {**self.training, **override.get("training", {})}


@dataclass
class SuiteConfig:
    name: str
    datasets: list[str]
    seeds: list[int]
    models: list[ModelSpec]
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    training: dict = field(default_factory=dict)  # suite-wide TrainConfig values
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    description: str = ""
    source: str = ""  # the file it was read from
    tune: SweepConfig = field(default_factory=SweepConfig)  # used by --tune only
    report: ReportConfig = field(default_factory=ReportConfig)
    # dataset -> dataset used instead, with a notice, when the first one's files are absent
    # (lets a demo suite run on a fresh machine; never silent)
    fallbacks: dict = field(default_factory=dict)
    # bench.plugins.Plugin: the user's model code, imported before the models are checked and by every trial's worker
    plugins: list = field(default_factory=list)


SUITE_KEYS = {"name", "description", "datasets", "seeds", "models", "protocol", "training", "resources", "fallbacks", "tune", "report",
              "plugins"}
MODEL_KEYS = {"model", "params", "training", "overrides", "steps_sweep", "datasets"}


def _require_list(value, where: str, item_type: type) -> list:
    if not isinstance(value, list) or not value or not all(_type_ok(v, item_type) for v in value):
        raise DrbenchError(f"{where} must be a non-empty list of {item_type.__name__}, got {value!r}")
    return value


def suite_path(name_or_file: str) -> Path:
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DrbenchError(f"suite file {path} does not exist")
        return path
    candidate = SUITES_DIR / f"{name_or_file}.yaml"
    if not candidate.is_file():
        available = sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
        raise DrbenchError(f"unknown suite '{name_or_file}'; available suites: {', '.join(available)} (or pass a .yaml file)")
    return candidate


def parse_suite(raw: dict, source: str = "<dict>", folder: Path | None = None, plugins: list | None = None) -> SuiteConfig:
    """A checked suite. ``plugins`` (already loaded, e.g. by ``--plugin``) come first; the suite's own ``plugins:``
    files are read relative to ``folder``, the suite file's folder (default: the current folder)."""
    from bench.models.base import model_entry

    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise DrbenchError(f"unknown key(s) {', '.join(unknown)} in suite {source}; valid keys: {', '.join(sorted(SUITE_KEYS))}")
    for required in ("name", "datasets", "models"):
        if required not in raw:
            raise DrbenchError(f"suite {source} is missing the required key '{required}'")
    own_plugins = raw.get("plugins") or []
    if not isinstance(own_plugins, list) or not all(isinstance(p, str) for p in own_plugins):
        raise DrbenchError(f"plugins in suite {source} must be a list of .py files (relative to the suite file) or module names, "
                           f"got {own_plugins!r}")
    # the plugins register their models now: the models below are checked against their config dataclasses
    plugins = merged(plugins or [], load_plugins(own_plugins, folder, where=f"suite {source}"))
    datasets = _require_list(raw["datasets"], "datasets", str)
    seeds = _require_list(raw.get("seeds", [0]), "seeds", int)
    if not isinstance(raw["models"], dict) or not raw["models"]:
        raise DrbenchError(f"models in suite {source} must be a mapping of label -> {{model: NAME, params: {{...}}}}")
    fallbacks = raw.get("fallbacks") or {}
    if not isinstance(fallbacks, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in fallbacks.items()):
        raise DrbenchError(f"fallbacks in suite {source} must map dataset names to dataset names, got {fallbacks!r}")
    training = dict(raw.get("training") or {})
    build_config(TrainConfig, training, "training")
    models = []
    for label, entry in raw["models"].items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise DrbenchError(f"models.{label} must be a mapping with at least 'model: NAME'")
        bad = sorted(set(entry) - MODEL_KEYS)
        if bad:
            raise DrbenchError(f"unknown key(s) {', '.join(bad)} in models.{label}; valid keys: {', '.join(sorted(MODEL_KEYS))}")
        spec = ModelSpec(
            label=str(label),
            model=entry.get("model", str(label)),
            params=dict(entry.get("params") or {}),
            training=dict(entry.get("training") or {}),
            overrides=dict(entry.get("overrides") or {}),
            steps_sweep=list(entry.get("steps_sweep") or []),
            datasets=_require_list(entry["datasets"], f"models.{label}.datasets", str) if "datasets" in entry else [],
        )
        outside = sorted(set(spec.datasets) - set(datasets))
        if outside:
            raise DrbenchError(f"models.{label}.datasets: {', '.join(outside)} not among the suite's datasets ({', '.join(datasets)})")
        config_class = model_entry(spec.model).config_class
        if spec.steps_sweep:
            _check_steps_sweep(spec, config_class, label)
        for dataset in [None, *spec.overrides]:
            where = f"models.{label}" + (f".overrides.{dataset}" if dataset else "")
            if dataset is not None:
                override = spec.overrides[dataset]
                if not isinstance(override, dict) or set(override) - {"params", "training"}:
                    raise DrbenchError(f"{where} may only contain 'params' and 'training'")
            params, model_training = spec.for_dataset(dataset) if dataset else (spec.params, spec.training)
            build_config(config_class, params, f"{where}.params")
            build_config(TrainConfig, {**training, **model_training}, f"{where}.training")
        models.append(spec)
    sweep = build_config(SweepConfig, raw.get("tune"), "tune")
    labels = {spec.label for spec in models}
    unknown_spaces = sorted(set(sweep.spaces) - labels)
    if unknown_spaces:
        raise DrbenchError(f"tune.spaces: {', '.join(unknown_spaces)} not among the suite's models ({', '.join(sorted(labels))})")
    report = build_config(ReportConfig, raw.get("report"), "report")
    protocol = build_config(ProtocolConfig, raw.get("protocol"), "protocol")
    report = _check_report(report, protocol, labels)
    for spec in models:
        _check_monitor_reachable(spec, protocol)
        # every space there is, checked now, before anything runs; a model without one is refused by --tune only
        search_space(spec, sweep, set(TrainConfig.__dataclass_fields__), required=False)
    return SuiteConfig(
        name=str(raw["name"]),
        description=str(raw.get("description", "")),
        datasets=datasets,
        seeds=seeds,
        models=models,
        protocol=protocol,
        training=training,
        resources=build_config(ResourcesConfig, raw.get("resources"), "resources"),
        source=source,
        fallbacks=dict(fallbacks),
        tune=sweep,
        report=report,
        plugins=plugins,
    )


def _check_report(report: ReportConfig, protocol: ProtocolConfig, labels: set[str]) -> ReportConfig:
    if not report.metrics:
        report = dataclasses.replace(report, metrics=default_report_metrics(protocol.ks))
    missing_k = sorted({m for m in report.metrics if int(m.partition("@")[2]) not in protocol.ks})
    if missing_k:
        raise DrbenchError(f"report.metrics {', '.join(missing_k)}: their K is not in protocol.ks {list(protocol.ks)}")
    unknown = sorted(set(report.published_models) - labels)
    if unknown:
        raise DrbenchError(f"report.published_models: {', '.join(unknown)} not among the suite's models ({', '.join(sorted(labels))})")
    if report.published:
        from bench.report.published import load_source

        load_source(report.published)
    return report


def _check_monitor_reachable(spec: ModelSpec, protocol: ProtocolConfig) -> None:
    """A model that validates by generating lists (beam search over semantic IDs) must list at least the monitor's K items."""
    from bench.models.base import model_entry

    k = int(protocol.monitor.partition("@")[2])
    config_class = model_entry(spec.model).config_class
    for dataset in [None, *spec.overrides]:
        params = spec.for_dataset(dataset)[0] if dataset else spec.params
        beam = getattr(build_config(config_class, params, f"models.{spec.label}.params"), "beam_size", None)
        if beam is not None and beam < k:
            where = f"models.{spec.label}" + (f".overrides.{dataset}" if dataset else "")
            raise DrbenchError(f"{where}.params.beam_size {beam} is below the K of protocol.monitor ({protocol.monitor}): its "
                               f"validation lists would be too short to score; use beam_size >= {k} or a monitor at K <= {beam}")


def _check_steps_sweep(spec: ModelSpec, config_class: type, label: str) -> None:
    where = f"models.{label}.steps_sweep"
    if "steps" not in {f.name for f in dataclasses.fields(config_class)}:
        raise DrbenchError(f"{where}: model '{spec.model}' has no denoising steps; remove steps_sweep or use a diffusion model")
    _require_list(spec.steps_sweep, where, int)
    if len(set(spec.steps_sweep)) != len(spec.steps_sweep):
        raise DrbenchError(f"{where} lists a step count twice: {spec.steps_sweep}")
    for dataset in [None, *spec.overrides]:
        params = spec.for_dataset(dataset)[0] if dataset else spec.params
        for steps in spec.steps_sweep:
            build_config(config_class, {**params, "steps": steps}, f"{where} (steps={steps})")


def load_suite(name_or_file: str, plugins: list[str] | None = None) -> SuiteConfig:
    """The suite, with ``plugins`` (files relative to the current folder, or module names: ``--plugin``) loaded first."""
    path = suite_path(name_or_file)
    return parse_suite(load_yaml(path), source=str(path.name if path.parent == SUITES_DIR else path), folder=path.parent,
                       plugins=load_plugins(plugins or []))
