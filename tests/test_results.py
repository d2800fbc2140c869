"""The run directory: atomic writes, finished trials, tables rebuilt from saved records."""

import os

import numpy as np
import pytest

import bench.results as results
from bench.errors import DrbenchError
from bench.results import RunDir, atomic_write


def test_atomic_write_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    target = tmp_path / "trials.csv"
    atomic_write(target, "old complete content\n")

    def crash(_):
        raise OSError("disk full")

    monkeypatch.setattr(results.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, "new content that never lands\n")
    assert target.read_text() == "old complete content\n"
    assert os.listdir(tmp_path) == ["trials.csv"]


def record(key, status="ok", ndcg=0.1):
    dataset, model, seed = key.split("__")
    return {"key": key, "dataset": dataset, "model": model, "model_type": model, "seed": int(seed[4:]), "status": status,
            "error": "" if status == "ok" else "boom", "test_ndcg@10": ndcg, "history": [{"epoch": 1}],
            "split": "loo", "split_fingerprint": "abc", "ranking": "full", "n_items": 10, "n_test_users": 2,
            "exclude_history": False}


def test_only_successful_trials_count_as_finished_and_tables_rebuild(tmp_path):
    run = RunDir.create(tmp_path, "s", {"suite": "s"})
    run.write_trial(record("d__a__seed0"), {"test_ranks": np.array([1, 2], dtype=np.int32)})
    run.write_trial(record("d__b__seed0", status="failed"))
    assert run.finished_keys() == {"d__a__seed0"}
    frame = run.write_tables()
    assert sorted(frame["key"]) == ["d__a__seed0", "d__b__seed0"] and "history" not in frame.columns
    assert (run.path / "trials.csv").is_file() and "b (seed 0: failed)" in (run.path / "results.md").read_text()
    assert run.trial_arrays("d__a__seed0")["test_ranks"].tolist() == [1, 2]
    reopened = RunDir.open(run.path)
    assert reopened.finished_keys() == {"d__a__seed0"}


def test_latest_run_without_any_run_is_a_clear_error(tmp_path):
    with pytest.raises(DrbenchError, match="found no earlier run of suite 'smoke'"):
        RunDir.latest(tmp_path, "smoke")
