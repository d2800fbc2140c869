"""The latency phase: every trained model timed after all training, one at a time, nothing else running.

Trials hand their trained model back as bytes (``snapshot``); the engine
keeps it in the run folder (``<run>/pending-latency/``) beside a record
marked ``latency: "pending"``. Once every trial has trained, each model is
restored where the back-end places the job (this process, or a Ray task
with one trial's resources) and timed by ``bench.protocol.latency``; its
record is updated and the pickle deleted. A run interrupted before this
phase finishes it on ``--resume``, without retraining.
"""

from __future__ import annotations

import io

import torch

from bench.protocol.latency import timed_record
from bench.protocol.splits import EvalSet
from bench.report.tables import write_tables
from bench.run.trial import pick_device


def snapshot(model) -> bytes:
    """The trained model as bytes (the whole object: generators keep tries and codebooks outside the state dict)."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def restore(payload: bytes, device):
    model = torch.load(io.BytesIO(payload), map_location=device, weights_only=False)
    return model.to(device)


def latency_threads(suite) -> int:
    """Torch threads for timing inference: the cores one trial is given (at least one)."""
    return max(1, int(suite.resources.cpus_per_trial))


def latency_job(payload: bytes, record: dict, eval_set: EvalSet, threads: int) -> dict:
    """One trial's latency phase: restore its model where this runs (a Ray task or the driver) and time it."""
    device = pick_device()
    return timed_record(record, restore(payload, device), eval_set, device, threads)


def pending_latency(run) -> list[dict]:
    """Records of finished trials whose model still waits to be timed (its pickle is in the run folder)."""
    return [r for r in run.records() if r.get("status") == "ok" and r.get("latency") == "pending"]


def measure_pending(run, splits: dict, threads: int, job=latency_job, echo=print) -> int:
    """The latency phase: time every pending trial, one after another, and update its record.

    ``job(payload, record, eval_set, threads) -> record`` runs one
    measurement (in this process, or as a Ray task placed on the cluster).
    A trial whose model pickle is gone (a run folder copied without it)
    is marked ``latency: "not measured"``. Returns the number timed.
    """
    pending = [r for r in pending_latency(run) if r["dataset"] in splits]
    if not pending:
        return 0
    echo(f"latency: timing {len(pending)} trained model(s) one at a time, nothing else running, {threads} torch thread(s)")
    timed = 0
    for position, record in enumerate(pending, start=1):
        payload = run.pending_model(record["key"])
        if payload is None:
            run.write_trial({**record, "latency": "not measured"})
            echo(f"    [{position}/{len(pending)}] {record['key']}: its saved model is missing; latency not measured")
            continue
        updated = job(payload, record, splits[record["dataset"]].test, threads)
        run.write_trial(updated)
        run.drop_pending_model(record["key"])
        timed += 1
        echo(f"    [{position}/{len(pending)}] {record['key']}: p50 {updated['latency_p50_ms']:.2f} ms/user, "
             f"p99 {updated['latency_p99_ms']:.2f} ms, {updated['users_per_s']:,.0f} users/s at batch {updated['latency_batch_size']}")
    write_tables(run)
    return timed
