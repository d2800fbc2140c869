"""Hyperparameter sweeps (``run_bench.py --tune``): search on validation, then retrain the best with seeds.

For every (dataset, model) of a suite, a Ray Tune experiment samples
configurations from the model's search space (``bench/spaces.yaml``, or the
suite's ``tune.spaces``), trains each with early stopping and reports the
validation metric after every validation round, so ASHA can stop weak
configurations early. The test set is never evaluated during the search:
selection reads the best validation score of each configuration only. The
winner is then retrained with every seed and tested through the normal
suite grid, so its rows land in the run like any other trial.

Per (dataset, model) the run keeps ``tune/<dataset>__<label>/``:
``space.json`` (the search space), ``history.csv`` (every configuration with
its validation score), ``best.json`` (the chosen configuration). A finished
search is never redone; an interrupted one continues through Ray Tune's
restore (its experiment lives in Ray's storage, ``~/ray_results`` by default).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from bench.run.config import ModelSpec, SuiteConfig, SweepConfig, TrainConfig
from bench.errors import DrbenchError
from bench.protocol.evaluation import TrialDiverged
from bench.models.base import model_entry
from bench.run.spaces import search_space, tune_space
from bench.files import atomic_write
from bench.records.run_dir import RunDir
from bench.protocol.splits import Split
from bench.run.trial import fit_trial, make_trial_spec
from bench.data import dataset_family
from bench.data.registry import dataset_label

METRIC = "best_valid"  # best validation score so far of the protocol's monitor (e.g. NDCG@10)


def _sweep_trainable(config: dict, base_spec: dict, split: Split) -> None:
    """One configuration: train with early stopping, report validation after every round; never tests."""
    from ray import tune

    spec = {**base_spec, "params": {**base_spec["params"], **config.get("params", {})},
            "training": {**base_spec["training"], **config.get("training", {})}}

    reported = []

    def on_validation(record: dict) -> None:
        reported.append(record["epoch"])
        tune.report({"epoch": record["epoch"], METRIC: record["best_valid"],
                     **{k: v for k, v in record.items() if k.startswith("valid_")}})

    try:
        _, summary, _ = fit_trial(spec, split, on_validation)
    except (TrialDiverged, DrbenchError) as error:  # a bad configuration is a bad score, not a broken sweep
        tune.report({METRIC: 0.0, "error": str(error)})
        return
    if reported:
        return
    # a model that validates without drbench's training loop (no on_validation calls: Pop, a plugin's item-kNN)
    # has its rounds in its summary only; the search needs them reported
    monitor, best = f"valid_{spec['protocol']['monitor']}", -math.inf
    for record in summary.history:
        best = max(best, record[monitor])
        on_validation({**record, "best_valid": best})
    if not summary.history:
        tune.report({METRIC: 0.0, "error": f"model '{spec['model']}' returned no validation round from fit"})


def _searcher(sweep: SweepConfig):
    if sweep.search == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # drbench prints one line per search instead
        return OptunaSearch(seed=sweep.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=sweep.seed)


def _scheduler(sweep: SweepConfig, training: TrainConfig):
    if sweep.scheduler == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    rounds = math.ceil(training.epochs / training.eval_every)
    return ASHAScheduler(time_attr="training_iteration", max_t=max(rounds, sweep.grace_period),
                         grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor)


def sweep_dir(run: RunDir, dataset: str, label: str) -> Path:
    return run.path / "tune" / f"{dataset_label(dataset)}__{label}"


def _history(results) -> pd.DataFrame:
    """Every configuration with its validation score (Ray's own path columns left out)."""
    frame = results.get_dataframe()
    keep = [c for c in frame.columns if c.startswith("config/") or c in (METRIC, "training_iteration", "time_total_s", "error", "trial_id")]
    frame = frame[keep].rename(columns={"training_iteration": "validation_rounds"})
    return frame.sort_values(METRIC, ascending=False)


def run_one_sweep(suite: SuiteConfig, run: RunDir, split: Split, dataset: str, spec: ModelSpec, resume: bool, echo=print) -> dict:
    """Search one (dataset, model); returns and saves the best configuration."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    folder = sweep_dir(run, dataset, spec.label)
    best_file = folder / "best.json"
    if best_file.is_file():
        echo(f"  {dataset} {spec.label}: search already finished, keeping {best_file.relative_to(run.path)}")
        return json.loads(best_file.read_text(encoding="utf-8"))
    sweep = suite.tune
    space = search_space(spec, sweep, set(TrainConfig.__dataclass_fields__))
    params, training = spec.for_dataset(dataset)
    params = {**model_entry(spec.model).defaults_for(dataset_family(dataset)), **params}
    training = {**suite.training, **training}
    base = make_trial_spec(dataset, spec.label, spec.model, sweep.seed, params, training, suite.protocol, plugins=suite.plugins)
    atomic_write(folder / "space.json", json.dumps(space, indent=2) + "\n")
    if not space:
        best = {"params": params, "training": training, METRIC: None, "configurations": 0, "note": "nothing to tune"}
        atomic_write(best_file, json.dumps(best, indent=2) + "\n")
        echo(f"  {dataset} {spec.label}: no hyperparameters to tune")
        return best

    trainable = tune.with_resources(tune.with_parameters(_sweep_trainable, base_spec=base, split=split),
                                    {"cpu": suite.resources.cpus_per_trial})
    name = f"drbench-tune-{suite.name}-{run.path.name}-{dataset_label(dataset)}__{spec.label}"
    experiment = Path("~/ray_results").expanduser() / name
    started = time.monotonic()
    if resume and tune.Tuner.can_restore(str(experiment)):
        echo(f"  {dataset} {spec.label}: continuing the interrupted search")
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=tune_space(space),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", search_alg=_searcher(sweep),
                scheduler=_scheduler(sweep, TrainConfig(**training)), num_samples=sweep.num_samples,
                time_budget_s=sweep.time_budget_min * 60 if sweep.time_budget_min else None,
                max_concurrent_trials=suite.resources.max_concurrent_trials or None,
            ),
            # drbench turns Ray's automatic loggers off; a search needs its per-round results on disk
            # (to pick the winner and to survive a restore), so these two are asked for explicitly.
            run_config=tune.RunConfig(name=name, verbose=0, failure_config=tune.FailureConfig(max_failures=suite.resources.max_retries),
                                      callbacks=[CSVLoggerCallback(), JsonLoggerCallback()]),
        )
    results = tuner.fit()
    history = _history(results)
    atomic_write(folder / "history.csv", history.to_csv(index=False))
    scored = history[history[METRIC].notna()] if METRIC in history else history.iloc[0:0]
    if scored.empty:
        raise DrbenchError(f"the search for {spec.label} on {dataset} produced no validation score; "
                           f"see {folder / 'history.csv'} and rerun with --debug")
    winner = results.get_best_result(metric=METRIC, mode="max", scope="all")
    best = {
        "params": {**params, **winner.config.get("params", {})},
        "training": {**training, **winner.config.get("training", {})},
        METRIC: float(winner.metrics_dataframe[METRIC].max()),
        "monitor": suite.protocol.monitor,
        "configurations": len(history),
        "search": sweep.search, "scheduler": sweep.scheduler, "seed": sweep.seed,
        "search_seconds": round(time.monotonic() - started, 1),
    }
    atomic_write(best_file, json.dumps(best, indent=2, default=float) + "\n")
    echo(f"  {dataset} {spec.label}: best valid {suite.protocol.monitor} {best[METRIC]:.4f} of {len(history)} configurations "
         f"({best['search_seconds']:.0f}s): " + ", ".join(f"{k}={v}" for k, v in {**winner.config.get('params', {}), **winner.config.get('training', {})}.items()))
    return best


def check_spaces(suite: SuiteConfig) -> None:
    """Every model of the suite has a search space (``--tune`` calls this before it makes a run folder)."""
    for spec in suite.models:
        search_space(spec, suite.tune, set(TrainConfig.__dataclass_fields__))


def tuned_specs(suite: SuiteConfig, run: RunDir, splits: dict[str, Split], address: str | None, debug: bool,
                resume: bool, echo=print) -> list[dict]:
    """Run (or finish) every search of the suite; returns the retraining grid: best configuration x seeds."""
    import ray

    from bench.run.ray_backend import start_ray

    seeds = suite.tune.seeds or suite.seeds
    searches = [(d, s) for d in suite.datasets for s in suite.models]
    echo(f"searching {len(searches)} model x dataset pair(s): {suite.tune.search} search, {suite.tune.scheduler} scheduler, "
         f"{suite.tune.num_samples} configurations each" + (f", at most {suite.tune.time_budget_min:g} min each" if suite.tune.time_budget_min else ""))
    specs = []
    start_ray(address, debug, suite.plugins)
    try:
        for index, (dataset, spec) in enumerate(searches, 1):
            echo(f"[search {index}/{len(searches)}] {dataset} {spec.label}")
            best = run_one_sweep(suite, run, splits[dataset], dataset, spec, resume, echo)
            for seed in seeds:
                specs.append(make_trial_spec(dataset, spec.label, spec.model, seed, best["params"], best["training"],
                                             suite.protocol, spec.steps_sweep, plugins=suite.plugins))
    finally:
        ray.shutdown()
    return specs
