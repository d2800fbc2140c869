#!/usr/bin/env python
"""Benchmark: full-ranking evaluation throughput with users batched in their order vs. by history length.

Evaluates an untrained SASRec (max_len 50, hidden 64, as the Amazon
defaults) on the test users of Amazon Beauty (leave-one-out) through the
``evaluate`` every trial uses, at batch 256, once with the users batched in
their order (``by_length=False``, the evaluator before length batching: most
batches are padded to the model's full max_len by one long history) and
once batched by history length (the default: each batch padded to its own
longest history), and with a verbatim copy of the evaluator as it was before
length batching (users in their order, the slower finiteness check): the
baseline. The runs alternate, ``--repeats`` times each; the best time of each
is reported, and their ranks are compared with the baseline's.

    python -m bench.perf.eval_throughput [--dataset amazon-beauty] [--batch-size 256] [--repeats 3] [--threads 1]

Prints a table and writes results/benchmarks/eval-throughput.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def evaluate_before(model, eval_set, n_items, ks=(5, 10, 20), batch_size=256):
    """The scoring path of ``evaluate`` before length batching: users in their order, isfinite check (it shares today's ranks_from_scores, so the speed-up it shows is if anything understated)."""
    import numpy as np
    import torch

    from bench.protocol.evaluation import EvalResult, TrialDiverged, left_padded
    from bench.protocol.metrics import ranks_from_scores, summarize

    with torch.no_grad():
        ks = sorted(ks)
        model.eval()
        n_users = len(eval_set)
        ranks = np.zeros(n_users, dtype=np.int32)
        top_items = np.zeros((n_users, ks[-1]), dtype=np.int32)
        for start in range(0, n_users, batch_size):
            rows = np.arange(start, min(start + batch_size, n_users))
            histories = left_padded(eval_set.histories, rows)
            targets = torch.from_numpy(eval_set.targets[rows])
            scores = model.score(histories).float()
            if not torch.isfinite(scores[:, 1:]).all():
                raise TrialDiverged("the model produced NaN or infinite scores")
            scores[:, 0] = -torch.inf
            ranks[rows] = ranks_from_scores(scores, targets).cpu().numpy()
            top_items[rows] = torch.topk(scores, ks[-1], dim=1).indices.cpu().numpy()
        return EvalResult(ranks, top_items, summarize(ranks, top_items, ks, n_items, None), None)


def batch_widths(histories, order, batch_size: int, max_len: int) -> list[int]:
    """Per batch, the width the model works on: the batch's longest history, cut at max_len."""
    lengths = histories.lengths[order]
    return [int(min(max(1, lengths[s : s + batch_size].max()), max_len)) for s in range(0, len(lengths), batch_size)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared machine)")
    parser.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "eval-throughput.json"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from tabulate import tabulate

    from baselines.sasrec import SASRec, SASRecConfig
    from bench.data import load_dataset
    from bench.files import atomic_write
    from bench.protocol.evaluation import evaluate, length_order
    from bench.protocol.splits import make_split
    from bench.provenance import code_version, hardware

    torch.set_num_threads(args.threads)
    data = load_dataset(args.dataset)
    test = make_split(data, "loo").test
    n_users, n_items = len(test), data.n_items
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(max_len=args.max_len, hidden_size=args.hidden_size), n_items).eval()

    runs = {
        "before (old evaluator)": lambda: evaluate_before(model, test, n_items, batch_size=args.batch_size),
        "user order": lambda: evaluate(model, test, n_items, batch_size=args.batch_size, by_length=False),
        "by length": lambda: evaluate(model, test, n_items, batch_size=args.batch_size),
    }
    orders = {"before (old evaluator)": np.arange(n_users), "user order": np.arange(n_users), "by length": length_order(test.histories)}
    seconds = {mode: [] for mode in runs}
    results = {}
    runs["by length"]()  # warm-up (allocator, kernels)
    for _ in range(args.repeats):
        for mode, run in runs.items():
            started = time.perf_counter()
            results[mode] = run()
            seconds[mode].append(time.perf_counter() - started)
    baseline = results["before (old evaluator)"]
    rows = []
    for mode in runs:
        widths = batch_widths(test.histories, orders[mode], args.batch_size, args.max_len)
        best = min(seconds[mode])
        rows.append({
            "evaluator": mode, "users": n_users, "items": n_items, "batch_size": args.batch_size,
            "mean_batch_width": float(np.mean(widths)), "seconds_best": best, "seconds_median": statistics.median(seconds[mode]),
            "seconds_all": seconds[mode], "users_per_s": n_users / best, "ndcg@10": results[mode].metrics["ndcg@10"],
            "ranks_differing_from_before": int((results[mode].ranks != baseline.ranks).sum()),
            "top_items_identical_to_before": bool(np.array_equal(results[mode].top_items, baseline.top_items)),
            "metrics_identical_to_before": results[mode].metrics == baseline.metrics,
        })
    speedup = rows[-1]["users_per_s"] / rows[0]["users_per_s"]
    table = [[r["evaluator"], r["users"], r["batch_size"], f"{r['mean_batch_width']:.1f}", f"{r['seconds_best']:.2f}",
              f"{r['seconds_median']:.2f}", f"{r['users_per_s']:,.0f}", r["ranks_differing_from_before"],
              r["metrics_identical_to_before"]] for r in rows]
    print(f"{args.dataset} test set, untrained SASRec (max_len {args.max_len}, hidden {args.hidden_size}), "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(tabulate(table, headers=["evaluator", "users", "batch", "mean width", "best s", "median s", "users/s",
                                   "ranks != before", "metrics == before"], tablefmt="github"))
    print(f"speed-up over the old evaluator: {speedup:.2f}x")
    record = {
        "dataset": args.dataset, "model": "sasrec", "max_len": args.max_len, "hidden_size": args.hidden_size,
        "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "hardware": hardware("cpu"), **code_version(), "rows": rows, "speedup_over_before": speedup,
    }
    out = Path(args.out)
    atomic_write(out, json.dumps(record, indent=2))
    print(f"written: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
