#!/usr/bin/env python
"""Benchmark: SASRec on MovieLens-1M, leave-one-out, full ranking, max_len 200.

Checks the spine against published numbers (CE-trained SASRec on ML-1M:
NDCG@10 about 0.18-0.20, Klenitskiy & Vasilev, RecSys 2023) and measures
time per epoch and evaluation throughput. Not a test: it takes an hour or
more on a laptop CPU, minutes on a GPU.

    python -m bench.perf.sasrec_ml1m [--loss ce|bce] [--epochs 200] [--max-minutes M]

Prints a table and writes results/benchmarks/sasrec-ml1m-<loss>-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tabulate import tabulate  # noqa: E402

from bench.run.config import ProtocolConfig  # noqa: E402
from bench.files import atomic_write  # noqa: E402
from bench.protocol.splits import make_split  # noqa: E402
from bench.run.trial import make_trial_spec, run_trial  # noqa: E402
from bench.data import load_dataset, resolve_data_root  # noqa: E402

# Klenitskiy & Vasilev, RecSys 2023 (ML-1M, leave-one-out, full ranking, the user's
# rated items filtered out of the ranking: compare with the "seen filtered" columns).
PUBLISHED = {
    "ce": {"ndcg@10": 0.1821, "hr@10": 0.3152},
    "bce": {"ndcg@10": 0.1341, "hr@10": 0.2500},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=("ce", "bce"), default="ce")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root")
    args = parser.parse_args()

    protocol = ProtocolConfig(split="loo")
    data = load_dataset("ml-1m", resolve_data_root(args.data_root))
    split = make_split(data, protocol.split)
    params = {"max_len": 200, "hidden_size": 64, "n_blocks": 2, "n_heads": 1, "dropout": 0.1, "loss": args.loss}
    training = {"epochs": args.epochs, "batch_size": 128, "lr": 1e-3, "eval_every": 5, "patience": 3,
                "max_minutes": args.max_minutes}
    spec = make_trial_spec("ml-1m", f"sasrec-{args.loss}", "sasrec", args.seed, params, training, protocol)
    started = time.monotonic()

    def progress(record: dict) -> None:
        elapsed = time.monotonic() - started
        eta = elapsed / record["epoch"] * (args.epochs - record["epoch"])
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  valid NDCG@10 {record['valid_ndcg@10']:.4f}  "
              f"HR@10 {record['valid_hr@10']:.4f}  (best {record['best_valid']:.4f}; {elapsed / 60:.1f} min, "
              f"ETA <= {eta / 60:.0f} min)", flush=True)

    print(f"ml-1m: {data.n_users} users, {data.n_items} items; split {split.fingerprint}; source {data.source}", flush=True)
    record, _ = run_trial(spec, split, progress)
    result = {key: value for key, value in record.items() if key != "history"}
    result["published"] = PUBLISHED[args.loss]
    result["history"] = record["history"]
    out = ROOT / "results" / "benchmarks" / f"sasrec-ml1m-{args.loss}-{record['device']}.json"
    atomic_write(out, json.dumps(result, indent=2, default=float))

    rows = [[f"SASRec-{args.loss.upper()}", f"{record['test_ndcg@10']:.4f}", f"{record['test_hr@10']:.4f}",
             f"{record['test_filtered_ndcg@10']:.4f}", f"{record['test_filtered_hr@10']:.4f}",
             f"{PUBLISHED[args.loss]['ndcg@10']:.4f}", f"{PUBLISHED[args.loss]['hr@10']:.4f}",
             record["best_epoch"], record["epochs_run"], f"{record['epoch_time_s']:.1f}",
             f"{record['users_per_s']:,.0f}", f"{record['latency_p50_ms']:.2f}", record["device"]]]
    print(tabulate(rows, headers=["model", "NDCG@10", "HR@10", "NDCG@10 seen filtered", "HR@10 seen filtered", "published NDCG@10", "published HR@10", "best epoch",
                                  "epochs", "s/epoch", "eval users/s", "ms/user p50", "device"], tablefmt="github"))
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
