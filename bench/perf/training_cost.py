#!/usr/bin/env python
"""Benchmark: training cost per model before and after a code change, side by side in one run.

For each model and dataset, the same measurement runs on two versions of
the code: the working tree ("after") and a baseline commit ("before",
unpacked with ``git archive`` into a temporary folder, never into the
repository). The two versions run at the same time, each pinned to one core
with one torch thread, so that they share the machine's conditions.

- ``cost``: seconds per training epoch and real (non-padding) input tokens
  per second. The model is built and fitted as in a trial (SIDs and noise
  sources included), but its trainer is replaced by one that runs Adam steps
  on the epoch's batches in their order and times them: the whole epoch, or
  its first batches until ``--seconds`` have passed (the epoch's batches come
  in a random order, so these are a random sample) extrapolated to every
  batch of the epoch.
- ``quality`` (``--quality``): SASRec-CE trained as in a trial (validation
  every epoch), until it stops early or ``--quality-minutes`` of training
  time; time-to-quality is the training time (validation excluded) until
  validation NDCG@10 first reaches each threshold.

    python -m bench.perf.training_cost --baseline REV [--datasets amazon-beauty ml-1m] [--models ...] [--quality]

Prints the tables and writes results/benchmarks/training-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# label -> (model, params, training): common sizes, every model at its defaults otherwise (DiffuRec at its official widths)
MODELS = {
    "sasrec-ce": ("sasrec", {"hidden_size": 64, "n_blocks": 2, "n_heads": 1, "dropout": 0.2, "loss": "ce"}, {"batch_size": 128}),
    "sasrec-bce": ("sasrec", {"hidden_size": 64, "n_blocks": 2, "n_heads": 1, "dropout": 0.2, "loss": "bce"}, {"batch_size": 128}),
    "bert4rec": ("bert4rec", {}, {"batch_size": 128}),
    "gru4rec": ("gru4rec", {}, {"batch_size": 128}),
    "diffsasrec": ("diffsasrec", {}, {"batch_size": 128}),
    "uniform-diffusion": ("uniform_diffusion", {}, {"batch_size": 128}),
    "diffurec": ("diffurec", {}, {"batch_size": 512}),
    "tiger": ("tiger", {"sid_source": "collaborative"}, {"batch_size": 256}),
    "sid-diffusion": ("sid_diffusion", {"sid_source": "collaborative"}, {"batch_size": 256}),
}
# validation NDCG@10 thresholds of the time-to-quality runs (SASRec-CE), per dataset
THRESHOLDS = {"amazon-beauty": (0.02, 0.03, 0.04), "ml-1m": (0.08, 0.10, 0.12, 0.14), "ml-100k": (0.03, 0.05)}
SEQUENCE_KEYS = ("inputs", "histories")  # the batch entry whose non-zero entries are the real input tokens


# --- the worker: runs inside one version of the code --------------------------------------------


class TimedSteps:
    """Stands in for the trainer: Adam steps over one epoch's batches, timed; later training stages are skipped."""

    def __init__(self, training: dict, seconds: float, seed: int):
        import numpy as np

        self.training, self.seconds, self.rng = training, seconds, np.random.default_rng(seed)
        self.result: dict | None = None

    def with_epochs(self, epochs):
        return self

    def batching(self):
        try:  # code with length-aware batches takes a Batching, older code the batch size
            from bench.models.batching import Batching
        except ImportError:
            return self.training["batch_size"]
        return Batching(self.training["batch_size"], by_length=self.training.get("bucket_by_length", True))

    def fit(self, model, train, validate):
        import torch

        from bench.models.base import FitSummary

        if self.result is not None:
            return FitSummary()
        precision = self.training.get("precision", "fp32")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        timed_batches = timed_tokens = all_batches = all_tokens = 0
        elapsed, warm_up = 0.0, 2
        for batch in model.training_batches(train, self.batching(), self.rng):
            tokens = int((next(batch[key] for key in SEQUENCE_KEYS if key in batch) > 0).sum())
            all_batches, all_tokens = all_batches + 1, all_tokens + tokens
            if elapsed >= self.seconds and timed_batches >= 10:
                continue  # the rest of the epoch's batches are only counted
            started = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if warm_up:
                warm_up -= 1
                continue
            elapsed += time.perf_counter() - started
            timed_batches, timed_tokens = timed_batches + 1, timed_tokens + tokens
        self.result = {"batches_per_epoch": all_batches, "tokens_per_epoch": all_tokens, "timed_batches": timed_batches,
                       "s_per_batch": elapsed / max(timed_batches, 1), "tokens_per_s": timed_tokens / max(elapsed, 1e-9),
                       "s_per_epoch": elapsed / max(timed_tokens, 1) * all_tokens}
        return FitSummary()


def measure_cost(label: str, dataset: str, split, training: dict, seconds: float) -> dict:
    import torch

    from bench.models.base import build_model, model_entry
    from bench.checked import build_config

    name, params, model_training = MODELS[label.removesuffix("+bf16")]
    entry = model_entry(name)
    params = {**entry.defaults_for(family(dataset)), **params}
    torch.manual_seed(0)
    model = build_model(name, build_config(entry.config_class, params, label), split.n_items)
    if model.needs_item_text:
        model.set_item_text(list(split.item_text))
    trainer = TimedSteps({**model_training, **training}, seconds, seed=0)
    model.fit(split.train, trainer, lambda candidate: {})
    return trainer.result


def measure_quality(dataset: str, split, training: dict, minutes: float, seed: int) -> dict:
    from bench.run.config import ProtocolConfig
    from bench.run.trial import fit_trial, make_trial_spec

    name, params, model_training = MODELS["sasrec-ce"]
    params = {**params, "max_len": 200 if family(dataset) == "movielens" else 50}
    training = {"epochs": 200, "lr": 1e-3, "eval_every": 1, "patience": 5, "max_minutes": minutes, **model_training, **training}
    spec = make_trial_spec(dataset, "sasrec-ce", name, seed, params, training, ProtocolConfig(split="loo"))
    _, summary, _ = fit_trial(spec, split)
    curve = [{"epoch": h["epoch"], "train_time_s": h["train_time_s"], "valid_ndcg@10": h["valid_ndcg@10"]} for h in summary.history]
    best = max(curve, key=lambda h: h["valid_ndcg@10"])
    reached = {f"{t:g}": next((h["train_time_s"] for h in curve if h["valid_ndcg@10"] >= t), None) for t in THRESHOLDS[dataset]}
    return {"curve": curve, "best_valid_ndcg@10": best["valid_ndcg@10"], "best_epoch": best["epoch"],
            "epochs_run": summary.epochs_run, "s_per_epoch": summary.epoch_time_s, "time_to": reached,
            # a baseline commit older than stop reasons has only stopped_early
            "stop_reason": getattr(summary, "stop_reason", None) or ("stopped early" if summary.stopped_early else "epoch cap")}


def family(dataset: str) -> str:
    return "movielens" if dataset.startswith("ml-") else "amazon"


def worker(job: dict) -> dict:
    import torch

    from bench.data import load_dataset
    from bench.protocol.splits import make_split

    torch.set_num_threads(1)
    out = {}
    for dataset in job["datasets"]:
        split = make_split(load_dataset(dataset, Path(job["data_root"])), "loo")
        for label in job["models"]:
            training = {"precision": "bf16"} if label.endswith("+bf16") else {}
            started = time.perf_counter()
            out[f"{dataset}/{label}"] = measure_cost(label, dataset, split, training, job["seconds"])
            print(f"[{job['version']}] {dataset} {label}: {out[f'{dataset}/{label}']['s_per_epoch']:.1f} s/epoch "
                  f"({time.perf_counter() - started:.0f}s)", flush=True)
        if job["quality"]:
            out[f"{dataset}/quality"] = measure_quality(dataset, split, {}, job["quality_minutes"], seed=0)
            print(f"[{job['version']}] {dataset} quality: best {out[f'{dataset}/quality']['best_valid_ndcg@10']:.4f}", flush=True)
    return out


# --- the driver: both versions side by side, then the table ---------------------------------------


def unpack(revision: str, into: Path) -> str:
    """The baseline's files (``git archive``) in ``into``; returns its full commit id."""
    commit = subprocess.run(["git", "rev-parse", revision], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def run_side_by_side(jobs: dict[str, dict], code: dict[str, Path], scratch: Path) -> dict[str, dict]:
    processes = {}
    for core, (version, job) in enumerate(jobs.items()):
        job_file, out_file = scratch / f"{version}.job.json", scratch / f"{version}.out.json"
        job_file.write_text(json.dumps(job))
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(job_file), "--worker-out", str(out_file)]
        pin = ["taskset", "-c", str(core % os.cpu_count())] if shutil_which("taskset") else []
        env = {**os.environ, "PYTHONPATH": str(code[version]), "OMP_NUM_THREADS": "1", "DRBENCH_SID_CACHE": str(scratch / f"sids-{version}")}
        processes[version] = (subprocess.Popen(pin + command, cwd=code[version], env=env), out_file)
    results = {}
    try:
        for version, (process, out_file) in processes.items():
            if process.wait():
                raise SystemExit(f"the {version} measurement failed (exit {process.returncode}); see its output above")
            results[version] = json.loads(out_file.read_text())
    finally:
        for process, _ in processes.values():
            process.kill()  # the other version's, when one failed or the run is interrupted
    return results


def shutil_which(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None


def cost_table(results: dict, datasets, models) -> list[list]:
    rows = []
    for dataset in datasets:
        for label in models:
            key = f"{dataset}/{label}"
            before = results["before"].get(key.replace("+bf16", "")) if "+bf16" in label else results["before"].get(key)
            after = results["after"][key]
            rows.append([dataset, label, f"{before['s_per_epoch']:.1f}", f"{after['s_per_epoch']:.1f}",
                         f"{before['s_per_epoch'] / after['s_per_epoch']:.2f}x", f"{before['tokens_per_s']:,.0f}",
                         f"{after['tokens_per_s']:,.0f}", after["batches_per_epoch"],
                         f"{after['timed_batches']}/{after['batches_per_epoch']}"])
    return rows


def quality_table(results: dict, datasets) -> list[list]:
    rows = []
    for dataset in datasets:
        for version in ("before", "after"):
            quality = results[version][f"{dataset}/quality"]
            times = [quality["time_to"][f"{t:g}"] for t in THRESHOLDS[dataset]]
            rows.append([dataset, version, *("–" if s is None else f"{s:.0f}" for s in times), f"{quality['best_valid_ndcg@10']:.4f}",
                         quality["best_epoch"], quality["epochs_run"], f"{quality['s_per_epoch']:.1f}"])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="commit to compare with (e.g. the commit before a change)")
    parser.add_argument("--datasets", nargs="+", default=["amazon-beauty", "ml-1m"])
    parser.add_argument("--models", nargs="+", default=[*MODELS, "sasrec-ce+bf16"],
                        help=f"labels among {', '.join(MODELS)}; LABEL+bf16 measures the working tree under bf16 autocast")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed training per model and dataset (or the whole epoch)")
    parser.add_argument("--quality", action="store_true", help="also time SASRec-CE to validation NDCG@10 thresholds")
    parser.add_argument("--quality-minutes", type=float, default=15.0, help="training-time cap of each quality run")
    parser.add_argument("--data-root")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "training-cost.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        from bench.files import atomic_write

        atomic_write(Path(args.worker_out), json.dumps(worker(json.loads(Path(args.worker).read_text()))))
        return 0

    sys.path.insert(0, str(ROOT))
    from tabulate import tabulate

    from bench.data import resolve_data_root
    from bench.files import atomic_write
    from bench.provenance import code_version, hardware

    if not args.baseline:
        parser.error("--baseline REV is required (the commit to compare the working tree with)")
    unknown = [m for m in args.models if m.removesuffix("+bf16") not in MODELS]
    if unknown:
        parser.error(f"unknown model label(s) {', '.join(unknown)}; choose among {', '.join(MODELS)}")
    data_root = str(resolve_data_root(args.data_root))
    version = code_version()  # of the working tree measured, before anything can commit over it
    with tempfile.TemporaryDirectory(prefix="drbench-baseline-") as scratch:
        scratch = Path(scratch)
        (scratch / "code").mkdir()
        commit = unpack(args.baseline, scratch / "code")
        job = {"datasets": args.datasets, "data_root": data_root, "seconds": args.seconds, "quality": args.quality,
               "quality_minutes": args.quality_minutes}
        jobs = {"before": {**job, "version": "before", "models": [m for m in args.models if "+bf16" not in m]},
                "after": {**job, "version": "after", "models": args.models}}
        started = time.monotonic()
        results = run_side_by_side(jobs, {"before": scratch / "code", "after": ROOT}, scratch)
    headers = ["dataset", "model", "s/epoch before", "s/epoch after", "speed-up", "tokens/s before", "tokens/s after",
               "batches/epoch", "timed batches"]
    rows = cost_table(results, args.datasets, args.models)
    print(tabulate(rows, headers=headers, tablefmt="github"))
    quality_rows = []
    if args.quality:
        for dataset in args.datasets:
            heads = ["dataset", "version", *(f"s to NDCG@10 {t:g}" for t in THRESHOLDS[dataset]), "best valid NDCG@10",
                     "best epoch", "epochs", "s/epoch"]
            table = quality_table(results, [dataset])
            quality_rows.append({"headers": heads, "rows": table})
            print(tabulate(table, headers=heads, tablefmt="github"))
    out = {"command": " ".join(["python -m bench.perf.training_cost", *sys.argv[1:]]), "baseline_commit": commit,
           "after_commit": version["code_commit"], "after_dirty": version["code_dirty"], "hardware": hardware("cpu"),
           "threads_per_version": 1, "seconds": args.seconds, "wall_s": time.monotonic() - started,
           "cost": {"headers": headers, "rows": rows}, "quality": quality_rows, "results": results}
    atomic_write(Path(args.out), json.dumps(out, indent=2, default=float))
    print(f"written: {Path(args.out).relative_to(ROOT) if Path(args.out).is_relative_to(ROOT) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
