#!/usr/bin/env python
"""Benchmark: peak memory and speed of full-ranking evaluation on a large catalogue.

Scores every item of a synthetic catalogue (default 100,000 items) for 10,000
users with an untrained SASRec, through the same ``evaluate`` every trial
uses, and reports the process's peak resident memory. The evaluator holds one
batch of scores at a time, so memory grows with batch size x catalogue, not
with the number of users. Each configuration runs in a fresh process so that
peaks do not mix.

    python -m bench.perf.eval_memory [--items 100000] [--users 10000] [--batch-sizes 64 256 1024]

Prints a table and writes results/benchmarks/eval-memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def measure(n_items: int, n_users: int, batch_size: int, max_len: int = 50, seed: int = 0) -> dict:
    """Run one evaluation in this process; returns timings and peak RSS."""
    import numpy as np
    import torch

    from bench.protocol.evaluation import evaluate
    from bench.models.base import build_model
    from bench.protocol.splits import EvalSet
    from baselines.sasrec import SASRecConfig
    from bench.data.sequences import Sequences

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, max_len + 1, n_users)
    histories = Sequences.from_lengths(lengths, rng.integers(1, n_items + 1, int(lengths.sum())))
    eval_set = EvalSet(np.arange(n_users), histories, rng.integers(1, n_items + 1, n_users))
    model = build_model("sasrec", SASRecConfig(max_len=max_len), n_items)
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    result = evaluate(model, eval_set, n_items, ks=(5, 10, 20), batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {
        "items": n_items, "users": n_users, "batch_size": batch_size,
        "seconds": seconds, "users_per_s": n_users / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_eval_mib": baseline_rss,
        "ndcg@10": result.metrics["ndcg@10"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # child process: one configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.items, args.users, args.batch_sizes[0])))
        return 0

    from tabulate import tabulate

    from bench.files import atomic_write

    rows = []
    for batch_size in args.batch_sizes:
        child = subprocess.run([sys.executable, __file__, "--one", "--items", str(args.items), "--users", str(args.users),
                                "--batch-sizes", str(batch_size)], capture_output=True, text=True, check=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(f"batch {batch_size}: peak {rows[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    table = [[r["items"], r["users"], r["batch_size"], f"{r['rss_before_eval_mib']:.0f}", f"{r['peak_rss_mib']:.0f}",
              f"{r['seconds']:.1f}", f"{r['users_per_s']:,.0f}"] for r in rows]
    print(tabulate(table, headers=["items", "users", "batch", "RSS before eval (MiB)", "peak RSS (MiB)", "seconds", "users/s"],
                   tablefmt="github"))
    out = ROOT / "results" / "benchmarks" / "eval-memory.json"
    atomic_write(out, json.dumps(rows, indent=2))
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
