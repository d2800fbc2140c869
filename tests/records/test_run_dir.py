"""The run directory: atomic writes, finished trials, tables rebuilt from saved records."""

import os
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

import bench.files as files
import bench.records.run_dir as results
from bench.errors import DrbenchError
from bench.files import atomic_write
from bench.records.run_dir import RunDir
from bench.report.tables import write_tables


def test_atomic_write_never_leaves_a_half_written_file(tmp_path, monkeypatch):
    target = tmp_path / "trials.csv"
    atomic_write(target, "old complete content\n")

    def crash(_):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "fsync", crash)
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
    frame = write_tables(run)
    assert sorted(frame["key"]) == ["d__a__seed0", "d__b__seed0"] and "history" not in frame.columns
    assert (run.path / "trials.csv").is_file() and "b (seed 0: failed)" in (run.path / "results.md").read_text()
    assert run.trial_arrays("d__a__seed0")["test_ranks"].tolist() == [1, 2]
    reopened = RunDir.open(run.path)
    assert reopened.finished_keys() == {"d__a__seed0"}


def test_runs_started_in_the_same_second_get_distinct_folders(tmp_path, monkeypatch):
    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(results, "datetime", FrozenClock)
    first, second, third = (RunDir.create(tmp_path, "s", {"suite": "s", "n": n}) for n in range(3))
    assert [run.path.name for run in (first, second, third)] == ["20260102-030405", "20260102-030405-2", "20260102-030405-3"]
    assert [RunDir.open(run.path).metadata()["n"] for run in (first, second, third)] == [0, 1, 2]


def test_latest_run_without_any_run_is_a_clear_error(tmp_path):
    with pytest.raises(DrbenchError, match="found no earlier run of suite 'smoke'"):
        RunDir.latest(tmp_path, "smoke")


def test_steps_sweeps_become_their_own_table(tmp_path):
    run = RunDir.create(tmp_path, "s", {"suite": "s"})
    for seed, ndcg in ((0, 0.2), (1, 0.4)):
        trial = record(f"d__diff__seed{seed}")
        trial["steps_sweep"] = [
            {"inference_steps": 1, "test_ndcg@10": ndcg / 2, "test_hr@10": 0.5, "latency_p50_ms": 1.0, "latency_p95_ms": 2.0, "users_per_s": 900.0},
            {"inference_steps": 8, "test_ndcg@10": ndcg, "test_hr@10": 0.7, "latency_p50_ms": 4.0, "latency_p95_ms": 6.0, "users_per_s": 200.0},
        ]
        run.write_trial(trial)
    run.write_trial(record("d__pop__seed0"))
    frame = write_tables(run)
    assert "steps_sweep" not in frame.columns
    steps = run.steps_frame()
    assert len(steps) == 4 and set(steps["inference_steps"]) == {1, 8}
    assert (run.path / "steps.csv").is_file()
    markdown = (run.path / "results.md").read_text()
    assert "per number of denoising steps" in markdown
    assert "| diff    |       1 |       2 | 0.1500 ± 0.0707 |" in markdown  # mean ± sample std of 0.1 and 0.2


def test_metrics_beyond_a_generated_list_read_not_applicable_in_the_results_table(tmp_path):
    run = RunDir.create(tmp_path, "s", {"suite": "s"})
    generator = {**record("d__gen__seed0", ndcg=0.3), "ranking": "generated", "list_length": 10, "test_ndcg@20": float("nan")}
    run.write_trial(generator)
    run.write_trial({**record("d__pop__seed0"), "test_ndcg@20": 0.2})
    frame = write_tables(run)
    assert np.isnan(RunDir.open(run.path).trials_frame().set_index("model").loc["gen", "test_ndcg@20"])  # NaN survives JSON and CSV
    assert frame.set_index("model").loc["gen", "list_length"] == 10
    markdown = (run.path / "results.md").read_text()
    gen = next(line for line in markdown.splitlines() if line.startswith("| gen"))
    pop = next(line for line in markdown.splitlines() if line.startswith("| pop"))
    assert gen.split("|")[3].strip() == "**0.3000**" and gen.split("|")[4].strip() == "n/a" and "nan" not in markdown.lower()
    assert pop.split("|")[4].strip() == "0.2000"  # the only measured NDCG@20: not marked best
    assert "n/a = not applicable (K beyond the model's generated list)" in markdown


def test_a_record_from_before_stop_reasons_that_ran_every_epoch_reads_as_the_epoch_cap(tmp_path):
    from bench.records.run_dir import RunDir

    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "models": []}})
    base = {"dataset": "toy", "model": "m", "seed": 0, "status": "ok"}
    trained = base | {"training": {"epochs": 40}, "epochs_run": 40}
    run.write_trial(trained | {"key": "a", "stopped_early": False}, None)
    run.write_trial(trained | {"key": "b", "stopped_early": True}, None)  # patience or time budget: not told apart
    run.write_trial(base | {"key": "pop", "stopped_early": False, "training": {"epochs": 40}, "epochs_run": 1}, None)  # no epochs to run
    run.write_trial(base | {"key": "c", "stop_reason": "patience", "converged": True}, None)
    frame = run.trials_frame().set_index("key")
    assert frame.loc["a", "stop_reason"] == "epoch cap" and frame.loc["a", "converged"] == False  # noqa: E712
    assert pd.isna(frame.loc["b", "converged"]) and pd.isna(frame.loc["pop", "converged"])
    assert frame.loc["c", "converged"] == True  # noqa: E712
    assert "stopped_early" not in frame
