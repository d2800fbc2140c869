"""Inference latency, measured the same way for every model and alone on its device.

The job timed is the same for every model: a batch of users' histories on
the host goes in, a ranked top-K list on the host comes out. A scoring model
is timed scoring the catalogue, masking padding (and the user's history when
the protocol excludes it) and picking the top K; a list-generating model is
timed generating its list (with the history excluded the same way). Both
include the copy to and from the device.

Fairness needs the device to itself: a latency measured while another trial
trains on the same cores or GPU is the other trial's noise (SASRec's p50 was
0.98 ms in a busy Ray run, 0.53 ms alone). So the execution core
(``bench.run.engine``) does not time a trial when it finishes training: it
keeps the trained model and times every model in a latency phase once all
training is done, one after another, with a fixed number of torch threads.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bench.protocol.evaluation import generates_lists, left_padded
from bench.protocol.splits import EvalSet
from bench.provenance import hardware

N_SINGLE, N_WARMUP, BATCH_SIZE, N_BATCHES = 100, 10, 256, 4

METHOD = ("host histories to a host top-{k} list, measured after training with no other trial running, "
          "{threads} torch thread(s), on {hardware}; per user at batch 1 (p50/p95/p99 over {n_single} users after "
          "{n_warmup} warm-up), users/s at batch {batch_size}")


def _ranked_list(model, exclude_history: bool, k: int):
    """The timed job: [B, L] host histories -> [B, <= k] host item ids."""
    if generates_lists(model):
        options = {"exclude_seen": True} if exclude_history else {}
        return lambda histories, device: model.generate(histories.to(device), k, **options).cpu()

    def score_top_k(histories, device):
        on_device = histories.to(device)
        scores = model.score(on_device)
        scores[:, 0] = -torch.inf
        if exclude_history:
            scores.scatter_(1, on_device, -torch.inf)
        return torch.topk(scores, k, dim=1).indices.cpu()

    return score_top_k


@torch.no_grad()
def measure_latency(model, eval_set: EvalSet, device, k: int = 20, exclude_history: bool = False, n_single: int = N_SINGLE,
                    n_warmup: int = N_WARMUP, batch_size: int = BATCH_SIZE, n_batches: int = N_BATCHES) -> dict[str, float]:
    """Per-user latency at batch size 1 (p50/p95/p99, ms) and users/s at ``batch_size``."""
    model.eval()
    job = _ranked_list(model, exclude_history, k)
    n_users = len(eval_set)
    timings = []
    for i in range(min(n_single + n_warmup, n_users)):
        history = left_padded(eval_set.histories, np.array([i]))
        start = time.perf_counter()
        job(history, device)  # ends with a copy to the host, which waits for the device
        if i >= n_warmup:
            timings.append(time.perf_counter() - start)
    batches = [left_padded(eval_set.histories, np.arange(s, min(s + batch_size, n_users)))
               for s in range(0, min(n_users, batch_size * n_batches), batch_size)]
    job(batches[0], device)
    start = time.perf_counter()
    for batch in batches:
        job(batch, device)
    elapsed = time.perf_counter() - start
    timings_ms = np.array(timings or [np.nan]) * 1000.0
    return {
        "latency_p50_ms": float(np.percentile(timings_ms, 50)),
        "latency_p95_ms": float(np.percentile(timings_ms, 95)),
        "latency_p99_ms": float(np.percentile(timings_ms, 99)),
        "users_per_s": float(sum(len(b) for b in batches) / elapsed) if elapsed > 0 else float("nan"),
        "latency_batch_size": batch_size,
    }


def measure_trial(model, eval_set: EvalSet, device, k: int, exclude_history: bool, steps_sweep: list[int],
                  threads: int | None = None) -> tuple[dict, dict[int, dict]]:
    """Latency of a trained model at its configured steps, and per swept number of denoising steps.

    With ``threads`` torch uses that many intra-op threads while timing (the
    previous setting is restored). Returns (fields for the record, {steps: fields}).
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        used = torch.get_num_threads()
        main = measure_latency(model, eval_set, device, k, exclude_history)
        per_steps = {}
        configured = model.inference_steps
        for steps in steps_sweep:
            if steps == configured:
                per_steps[steps] = main
                continue
            model.set_inference_steps(steps)
            per_steps[steps] = measure_latency(model, eval_set, device, k, exclude_history)
        if steps_sweep:
            model.set_inference_steps(configured)
    finally:
        torch.set_num_threads(previous)
    described = METHOD.format(k=k, threads=used, hardware=hardware(device), n_single=N_SINGLE, n_warmup=N_WARMUP,
                              batch_size=BATCH_SIZE)
    return {**main, "latency_threads": used, "latency_device": str(device), "latency_method": described,
            "latency": "measured alone"}, per_steps


def timed_record(record: dict, model, eval_set: EvalSet, device, threads: int | None = None) -> dict:
    """``record`` with the latency of its trained ``model`` filled in (also in each steps-sweep entry)."""
    protocol = record["protocol"]
    sweep = record.get("steps_sweep") or []
    main, per_steps = measure_trial(model, eval_set, device, max(protocol["ks"]), protocol["exclude_history"],
                                    [entry["inference_steps"] for entry in sweep], threads)
    return {**record, **main, "steps_sweep": [{**entry, **per_steps[entry["inference_steps"]]} for entry in sweep]}
