"""One trial: train one model on one split with one seed, then test it.

This module is Ray-agnostic: ``run_trial`` takes a plain spec and a split
and returns a flat record plus per-user arrays. The Ray Tune driver wraps it;
tests and benchmarks call it directly.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from bench.run.config import ProtocolConfig, TrainConfig, build_config
from bench.errors import DrbenchError
from bench.protocol.evaluation import evaluate, generates_lists
from bench.protocol.latency import timed_record
from bench.models.base import build_model, model_entry
from bench.models.external import EXTERNAL, NO_LATENCY, ExternalLists, ExternalListsConfig, decode_lists
from bench.plugins import import_plugins
from bench.provenance import environment
from bench.protocol.splits import Split
from bench.run.trainer import Trainer
from bench.data.item_text import NO_TEXT_FIX


def trial_key(dataset: str, label: str, seed: int) -> str:
    """``<dataset label>__<model label>__seed<N>``: a file name and a Ray trial name, so a custom spec
    (``seq:/some/path``) is replaced by its safe ``dataset_label``."""
    from bench.data.registry import dataset_label

    return f"{dataset_label(dataset)}__{label}__seed{seed}"


def make_trial_spec(dataset: str, label: str, model: str, seed: int, params: dict, training: dict, protocol: ProtocolConfig,
                    steps_sweep: list[int] | tuple[int, ...] = (), plugins=()) -> dict:
    """A JSON-serialisable description of one trial.

    ``dataset`` (the key of the splits, the name in tables) is the dataset's label;
    ``dataset_spec`` is the name or ``csv:``/``seq:`` spec the suite gave;
    ``plugins`` (``bench.plugins.Plugin``) are imported by the trial's process before its model is built.
    """
    from bench.data.registry import dataset_label

    return {
        "key": trial_key(dataset, label, seed),
        "dataset": dataset_label(dataset),
        "dataset_spec": dataset,
        "label": label,
        "model": model,
        "seed": seed,
        "params": params,
        "training": training,
        "protocol": asdict(protocol),
        "steps_sweep": list(steps_sweep),
        "plugins": [asdict(plugin) for plugin in plugins],
    }


def seed_everything(seed: int) -> None:
    # cuBLAS is deterministic only with a fixed workspace, set before its first use (PyTorch's reproducibility notes)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit_trial(spec: dict, split: Split, on_validation: Callable[[dict], None] | None = None):
    """Build the spec's model and train it with early stopping on validation; the test set is not touched.

    Returns (model, summary, fit_seconds). Hyperparameter sweeps stop here.
    """
    import_plugins(spec.get("plugins", ()))  # on a Ray worker, the user's model registers itself here
    protocol = build_config(ProtocolConfig, spec["protocol"], "protocol")
    training = build_config(TrainConfig, spec["training"], "training")
    seed_everything(spec["seed"])
    device = pick_device()
    model = _spec_model(spec, split).to(device)
    if model.needs_item_text:
        if split.item_text is None:
            raise DrbenchError(f"model '{spec['label']}' reads item texts, but dataset '{spec['dataset']}' came without any: {NO_TEXT_FIX}")
        model.set_item_text(list(split.item_text))

    def validate(candidate) -> dict:
        result = evaluate(candidate, split.valid, split.n_items, protocol.ks, protocol.exclude_history, protocol.eval_batch_size, device)
        return result.metrics

    trainer = Trainer(training, protocol.monitor, device, spec["seed"], on_validation)
    started = time.perf_counter()
    summary = model.fit(split.train, trainer, validate)
    return model, summary, time.perf_counter() - started


def _spec_model(spec: dict, split: Split):
    """The spec's model from the registry; an ``--score`` trial's model replays the lists its spec carries."""
    if spec["model"] == EXTERNAL:
        config = build_config(ExternalListsConfig, spec["params"], f"models.{spec['label']}.params")
        return ExternalLists(config, split.n_items, decode_lists(spec["lists"]), split.test.histories)
    entry = model_entry(spec["model"])
    params = build_config(entry.config_class, spec["params"], f"models.{spec['label']}.params")
    return build_model(spec["model"], params, split.n_items)


def run_trial(spec: dict, split: Split, on_validation: Callable[[dict], None] | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Train, select on validation, test once, and time inference right away. Returns (record, arrays).

    ``record`` is one row for ``trials.csv`` (its ``history`` entry, the
    validation curve, is kept in the trial's JSON only); ``arrays`` holds the
    per-user test ranks (for significance tests and re-computing metrics).
    For tests and benchmarks: the suite runners time a model only once no
    other trial is training (``bench.latency``), through ``train_and_test``.
    """
    record, arrays, model = train_and_test(spec, split, on_validation)
    return timed_record(record, model, split.test, pick_device()), arrays


def train_and_test(spec: dict, split: Split, on_validation: Callable[[dict], None] | None = None):
    """Train, select on validation, test once. Returns (record, arrays, trained model); the record's latency is pending."""
    model, summary, fit_seconds = fit_trial(spec, split, on_validation)
    protocol = build_config(ProtocolConfig, spec["protocol"], "protocol")
    device = pick_device()
    best_valid = next((h for h in summary.history if h["epoch"] == summary.best_epoch), summary.history[-1] if summary.history else {})
    test = evaluate(model, split.test, split.n_items, protocol.ks, protocol.exclude_history, protocol.eval_batch_size, device)
    # Papers differ on whether the user's own items are ranked ("filter seen"); the
    # protocol's choice is the headline, the other convention is kept for comparison.
    filtered, arrays = {}, {"test_users": split.test.users.astype(np.int32), "test_ranks": test.ranks}
    if not protocol.exclude_history:
        # generators generate again with the user's items excluded, so both kinds of model are filtered the same way
        seen_filtered = evaluate(model, split.test, split.n_items, protocol.ks, True, protocol.eval_batch_size, device)
        filtered, arrays["test_filtered_ranks"] = seen_filtered.metrics, seen_filtered.ranks  # ranks: paired tests of that table
    sweep = []
    if spec.get("steps_sweep"):
        sweep = steps_sweep(model, split, protocol, device, spec["steps_sweep"], test, arrays)
    record = {
        "key": spec["key"],
        "dataset": spec["dataset"],
        "model": spec["label"],
        "model_type": spec["model"],
        "seed": spec["seed"],
        "status": "ok",
        "error": "",
        "split": protocol.split,
        "split_fingerprint": split.fingerprint,
        "exclude_history": protocol.exclude_history,
        "protocol": asdict(protocol),
        "ranking": "generated" if generates_lists(model) else "full",
        "n_items": split.n_items,
        "n_test_users": len(split.test),
        "params": asdict(model.config),
        "training": asdict(build_config(TrainConfig, spec["training"], "training")),
        **{k: v for k, v in best_valid.items() if k.startswith("valid_")},
        **{f"test_{k}": v for k, v in test.metrics.items()},
        **{f"test_filtered_{k}": v for k, v in filtered.items() if not k.startswith("coverage")},
        "epochs_run": summary.epochs_run,
        "best_epoch": summary.best_epoch,
        "stop_reason": summary.stop_reason,
        "converged": summary.converged,
        "train_time_s": summary.train_time_s,
        "fit_time_s": fit_seconds,
        "epoch_time_s": summary.epoch_time_s,
        "num_parameters": model.num_parameters(),
        **model.report(),
        "latency": NO_LATENCY if spec["model"] == EXTERNAL else "pending",
        **environment(device),
        "inference_steps": model.inference_steps,
        "steps_sweep": sweep,
        "history": summary.history,
    }
    return record, arrays, model


def steps_sweep(model, split: Split, protocol: ProtocolConfig, device, step_counts, test, arrays) -> list[dict]:
    """Test the trained model again with each number of denoising steps (no retraining).

    Returns one entry per step count (test metrics; latency comes later); per-user ranks
    go into ``arrays`` as ``test_ranks_steps<N>``. The configured step count
    reuses the main test. The model is left at its configured steps.
    """
    configured = model.inference_steps
    results = []
    for steps in step_counts:
        if steps == configured:
            result = test
        else:
            model.set_inference_steps(steps)
            result = evaluate(model, split.test, split.n_items, protocol.ks, protocol.exclude_history, protocol.eval_batch_size, device)
        results.append({"inference_steps": steps, **{f"test_{k}": v for k, v in result.metrics.items()}})
        arrays[f"test_ranks_steps{steps}"] = result.ranks
    model.set_inference_steps(configured)
    return results
