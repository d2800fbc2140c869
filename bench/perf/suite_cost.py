#!/usr/bin/env python
"""Benchmark: what one trial of each model of a suite costs on this machine, and what the suite would cost.

For every (dataset, model) of a suite, seed 0 only, the model is built and
fitted as its trial would build it (the suite's params and training, SIDs and
noise sources included), with the trainer replaced by timed Adam steps on
the first batches of one epoch (``bench.perf.training_cost.TimedSteps``,
extrapolated to the whole epoch). One validation pass (full ranking, the
suite's ks) is then timed on the barely-trained model, through the same
callback the trainer validates with (DiffSASRec validates with one-step
scores even where it tests multi-step lists). One torch thread, as a trial gets on a CPU.

From these, per trial: the epochs that fit into the suite's time cap
(``training.max_minutes``, validation included, as the trainer counts it)
and the cost of running to the epoch cap instead; per suite: the total if
every trial ran to its cap, divided by the trials that run at a time.
Accuracy is not measured: how many epochs a model needs before patience
stops it is only known by training it.

    python -m bench.perf.suite_cost --suite reference [--datasets ml-1m] [--models sasrec-ce diffurec] [--seconds 20] [--parallel 2]

Prints a table and writes results/benchmarks/suite-cost-<suite>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


class TimedFit:
    """``TimedSteps``, then one validation through the model's own callback (as the trainer validates: a model may
    validate differently from how it is tested); the setup before the first batch (SIDs, noise sources) is timed apart."""

    def __init__(self, training: dict, seconds: float):
        from bench.perf.training_cost import TimedSteps

        self.steps = TimedSteps(training, seconds, seed=0)
        self.setup_s: float | None = None
        self.valid_s: float | None = None
        self.created = time.perf_counter()

    def with_epochs(self, epochs):
        return self

    def fit(self, model, train, validate):
        if self.setup_s is not None:  # a later training stage (DiffSASRec's SFT) is not timed
            return self.steps.fit(model, train, validate)
        self.setup_s = time.perf_counter() - self.created
        summary = self.steps.fit(model, train, validate)
        started = time.perf_counter()
        with torch.no_grad():
            validate(model)
        self.valid_s = time.perf_counter() - started
        return summary


def measure(spec: dict, split, seconds: float) -> dict:
    """Seconds of setup, of one training epoch and of one validation pass for one trial spec."""
    from bench.protocol.evaluation import evaluate
    from bench.run.config import ProtocolConfig, TrainConfig, build_config
    from bench.run.trial import _spec_model, seed_everything

    protocol = build_config(ProtocolConfig, spec["protocol"], "protocol")
    training = build_config(TrainConfig, spec["training"], "training")
    seed_everything(spec["seed"])
    model = _spec_model(spec, split)
    if model.needs_item_text:
        model.set_item_text(list(split.item_text))
    def validate(candidate) -> dict:
        return evaluate(candidate, split.valid, split.n_items, protocol.ks, protocol.exclude_history, protocol.eval_batch_size,
                        "cpu").metrics

    timed = TimedFit({"batch_size": training.batch_size, "bucket_by_length": training.bucket_by_length,
                      "precision": training.precision}, seconds)
    model.fit(split.train, timed, validate)
    steps = timed.steps.result  # None: a model without gradient steps (Pop, Markov): validated once, as its trial would
    valid_s = timed.valid_s
    if valid_s is None:
        started = time.perf_counter()
        with torch.no_grad():
            validate(model)
        valid_s = time.perf_counter() - started
    return {"setup_s": timed.setup_s or 0.0, "train_s_per_epoch": steps["s_per_epoch"] if steps else 0.0,
            "batches_per_epoch": steps["batches_per_epoch"] if steps else 0, "valid_s": valid_s,
            "epochs": training.epochs, "eval_every": training.eval_every, "patience": training.patience,
            "max_minutes": training.max_minutes, "trained": steps is not None}


def projection(cost: dict) -> dict:
    """Epochs within the time cap, and the trial's wall-clock at the first cap it meets (epochs or minutes)."""
    if not cost["trained"]:
        return {"epoch_s": 0.0, "epochs_in_cap": None, "first_validation_s": 0.0, "capped_s": cost["setup_s"] + cost["valid_s"]}
    epoch_s = cost["train_s_per_epoch"] + cost["valid_s"] / cost["eval_every"]
    cap_s = cost["max_minutes"] * 60 if cost["max_minutes"] else math.inf
    to_epoch_cap = cost["epochs"] * epoch_s
    return {"epoch_s": epoch_s, "epochs_in_cap": None if math.isinf(cap_s) else int(cap_s // epoch_s),
            "first_validation_s": cost["eval_every"] * cost["train_s_per_epoch"] + cost["valid_s"],
            "capped_s": cost["setup_s"] + min(cap_s, to_epoch_cap)}


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="suite name or YAML file")
    parser.add_argument("--datasets", nargs="+", help="only these datasets of the suite")
    parser.add_argument("--models", nargs="+", help="only these model labels of the suite")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed training per model and dataset")
    parser.add_argument("--parallel", type=int, default=2, help="trials that run at a time, for the suite's total")
    parser.add_argument("--data-root")
    parser.add_argument("--out", help="default: results/benchmarks/suite-cost-<suite>.json")
    args = parser.parse_args()

    from tabulate import tabulate

    from bench.data import resolve_data_root
    from bench.files import atomic_write
    from bench.provenance import code_version, hardware
    from bench.run.config import load_suite
    from bench.run.engine import prepare_splits, trial_specs

    torch.set_num_threads(1)
    suite = load_suite(args.suite)
    if args.datasets:
        suite.datasets = [d for d in suite.datasets if d in args.datasets]
    if args.models:
        suite.models = [m for m in suite.models if m.label in args.models]
    suite.seeds = suite.seeds[:1]
    version = code_version()
    started = time.monotonic()
    splits, _ = prepare_splits(suite, resolve_data_root(args.data_root))
    results = {}
    for spec in trial_specs(suite):
        cost = measure(spec, splits[spec["dataset"]], args.seconds)
        results[f"{spec['dataset']}/{spec['label']}"] = {**cost, **projection(cost)}
        print(f"{spec['dataset']} {spec['label']}: {cost['train_s_per_epoch']:.1f} s/epoch, validation {cost['valid_s']:.1f} s, "
              f"setup {cost['setup_s']:.1f} s", flush=True)
    n_seeds = len(load_suite(args.suite).seeds)
    headers = ["dataset", "model", "setup s", "train s/epoch", "valid s", "first validation min", "epochs in cap",
               "min to cap", "min, all seeds"]
    rows, total_s = [], 0.0
    for key, r in results.items():
        dataset, label = key.split("/", 1)
        total_s += r["capped_s"] * n_seeds
        rows.append([dataset, label, f"{r['setup_s']:.0f}", f"{r['train_s_per_epoch']:.1f}", f"{r['valid_s']:.1f}",
                     minutes(r["first_validation_s"]), "–" if r["epochs_in_cap"] is None else min(r["epochs_in_cap"], r["epochs"]),
                     minutes(r["capped_s"]), minutes(r["capped_s"] * n_seeds)])
    print(tabulate(rows, headers=headers, tablefmt="github"))
    summary = (f"every trial at its first cap, {n_seeds} seeds, {args.parallel} at a time: {total_s / 3600 / args.parallel:.1f} h "
               f"(an upper bound on training and validation; tests and latency not included)")
    print(summary)
    out = Path(args.out) if args.out else ROOT / "results" / "benchmarks" / f"suite-cost-{suite.name}.json"
    record = {"command": " ".join(["python -m bench.perf.suite_cost", *sys.argv[1:]]), "code_commit": version["code_commit"],
              "code_dirty": version["code_dirty"], "hardware": hardware("cpu"), "torch_threads": 1, "seconds": args.seconds,
              "seeds": n_seeds, "parallel": args.parallel, "wall_s": time.monotonic() - started,
              "table": {"headers": headers, "rows": rows}, "summary": summary, "results": results}
    atomic_write(out, json.dumps(record, indent=2, default=float))
    print(f"written: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
