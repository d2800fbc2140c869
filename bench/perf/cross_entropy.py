#!/usr/bin/env python
"""Benchmark: full-softmax cross-entropy over the catalogue, reference vs. chunked (bench.models.losses).

Times forward + backward (the loss and its gradients wrt the states and the
item table) on one CPU thread at the shapes the models train at: SASRec on
Amazon Beauty (842 positions of a 128-user batch, d 64, 12,102 items), an
ML-1M-like batch (6,000 positions, d 64, 3,707 items) and DiffuRec on Beauty
(512 users, d 128), in float32 and under bfloat16 autocast, the chunked loss
at several chunk sizes. The runs alternate, after two warm-up calls each, and
the median (and best) of the repeats is reported: another process may share
the machine. Each row also gives its largest relative error (norm of the
difference over norm) of the loss and both gradients against the float32
reference.

    python -m bench.perf.cross_entropy

Prints a table and writes results/benchmarks/cross-entropy.json.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench.files import atomic_write  # noqa: E402
from bench.models.losses import CHUNK_ELEMENTS, CHUNK_ROWS, catalogue_cross_entropy  # noqa: E402
from bench.provenance import code_version, hardware  # noqa: E402

SHAPES = [("sasrec-beauty", 842, 64, 12102), ("ml-1m-like", 6000, 64, 3707), ("diffurec-beauty", 512, 128, 12102)]
PRECISIONS = {  # autocast dtype: (chunk sizes, repeats); bfloat16 matmuls are slow on CPUs without native bfloat16
    None: ((16, 32, 64, 128, 256), 11),
    torch.bfloat16: ((32, 64, 128), 5),
}
WARM_UP = 2


def reference(states, items, targets):
    logits = states @ items.T  # [N, V]
    logits[:, 0] = -torch.inf
    return F.cross_entropy(logits, targets)


def loss_and_grads(loss_fn, states, items, targets, autocast_dtype):
    with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        loss = loss_fn(states, items, targets)
    return (loss.detach(), *torch.autograd.grad(loss, (states, items)))


def relative_error(got, want) -> float:
    return max(((g.float() - w).norm() / w.norm()).item() for g, w in zip(got, want))


def measure(shape, autocast_dtype, chunk_sizes, repeats) -> list[dict]:
    name, n, d, v = shape
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(n, d, generator=generator).requires_grad_()
    items = (0.1 * torch.randn(v, d, generator=generator)).requires_grad_()
    targets = torch.randint(1, v, (n,), generator=generator)
    exact = loss_and_grads(reference, states, items, targets, None)
    methods = {"reference": reference} | {
        f"chunked {chunk}": lambda s, i, t, chunk=chunk: catalogue_cross_entropy(s, i, t, chunk_size=chunk)
        for chunk in chunk_sizes}
    errors = {method: relative_error(loss_and_grads(fn, states, items, targets, autocast_dtype), exact)
              for method, fn in methods.items()}
    seconds = {method: [] for method in methods}
    for round_ in range(WARM_UP + repeats):
        for method, fn in methods.items():
            started = time.perf_counter()
            loss_and_grads(fn, states, items, targets, autocast_dtype)
            if round_ >= WARM_UP:
                seconds[method].append(time.perf_counter() - started)
    baseline = statistics.median(seconds["reference"])
    precision = "float32" if autocast_dtype is None else f"autocast {str(autocast_dtype).removeprefix('torch.')}"
    return [{"shape": name, "n": n, "d": d, "v": v, "precision": precision, "method": method,
             "chunk_size": None if method == "reference" else int(method.split()[1]),
             "ms_median": 1000 * statistics.median(seconds[method]), "ms_best": 1000 * min(seconds[method]),
             "ms_all": [1000 * s for s in seconds[method]], "speedup": baseline / statistics.median(seconds[method]),
             "max_relative_error": errors[method]} for method in methods]


def main() -> int:
    torch.set_num_threads(1)
    rows = []
    for autocast_dtype, (chunk_sizes, repeats) in PRECISIONS.items():
        for shape in SHAPES:
            rows += measure(shape, autocast_dtype, chunk_sizes, repeats)
            print(f"measured {shape[0]} ({autocast_dtype or 'float32'})", flush=True)
    table = [[r["shape"], f"{r['n']}x{r['d']}, V {r['v']}", r["precision"], r["method"], f"{r['ms_median']:.1f}",
              f"{r['ms_best']:.1f}", f"{r['speedup']:.2f}x", f"{r['max_relative_error']:.1e}"] for r in rows]
    print(f"forward + backward, 1 thread, median of {PRECISIONS[None][1]} (float32) / "
          f"{PRECISIONS[torch.bfloat16][1]} (bfloat16) repeats; {hardware('cpu')}")
    print(tabulate(table, headers=["shape", "N x d, V", "precision", "loss", "median ms", "best ms", "speed-up",
                                   "rel. error vs fp32 ref"], tablefmt="github"))
    record = {"threads": 1, "warm_up": WARM_UP, "torch": torch.__version__, "hardware": hardware("cpu"),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), **code_version(),
              "default_chunk_rows": CHUNK_ROWS, "chunk_elements": CHUNK_ELEMENTS, "rows": rows}
    out = ROOT / "results" / "benchmarks" / "cross-entropy.json"
    atomic_write(out, json.dumps(record, indent=2))
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
