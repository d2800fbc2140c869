"""One trial: early stopping sees validation only, the test set is scored once, same seed same numbers."""

import numpy as np

import bench.run.trial as trial_module
from bench.run.config import ProtocolConfig
from bench.protocol.splits import make_split
from bench.run.trial import make_trial_spec, run_trial
from bench.data import synthetic_dataset

SPEC = dict(params={"max_len": 20, "hidden_size": 16, "n_blocks": 1}, training={"epochs": 4, "eval_every": 1, "patience": 1})


def tiny_spec(seed=0):
    return make_trial_spec("synthetic", "sasrec", "sasrec", seed, SPEC["params"], SPEC["training"], ProtocolConfig())


def test_early_stopping_reads_validation_only_and_test_is_scored_once(monkeypatch):
    split = make_split(synthetic_dataset(n_users=200), "loo")
    seen = []
    real_evaluate = trial_module.evaluate

    def spying_evaluate(model, eval_set, *args, **kwargs):
        seen.append("valid" if eval_set is split.valid else "test" if eval_set is split.test else "other")
        return real_evaluate(model, eval_set, *args, **kwargs)

    monkeypatch.setattr(trial_module, "evaluate", spying_evaluate)
    record, _ = run_trial(tiny_spec(), split)
    # validation every epoch while training; the test set only after fitting (with and without seen items)
    n_valid = record["epochs_run"]
    assert seen[:n_valid] == ["valid"] * n_valid and seen[n_valid:] == ["test", "test"]
    assert [h["epoch"] for h in record["history"]] == list(range(1, record["epochs_run"] + 1))
    assert not any(key.startswith("test_") for h in record["history"] for key in h)


def test_same_seed_same_metrics_other_seed_other_metrics():
    split = make_split(synthetic_dataset(n_users=200), "loo")
    first, first_arrays = run_trial(tiny_spec(0), split)
    again, again_arrays = run_trial(tiny_spec(0), split)
    other, _ = run_trial(tiny_spec(1), split)
    metrics = [k for k in first if k.startswith(("test_", "valid_"))]
    assert {k: first[k] for k in metrics} == {k: again[k] for k in metrics}
    np.testing.assert_array_equal(first_arrays["test_ranks"], again_arrays["test_ranks"])
    # the seen-filtered ranks are kept too (their own paired tests in the report): filtering moves a target up,
    # or out of reach (rank n_items + 1) where the target is itself one of the user's items
    filtered, ranks = first_arrays["test_filtered_ranks"], first_arrays["test_ranks"]
    assert ((filtered <= ranks) | (filtered == split.n_items + 1)).all() and (filtered < ranks).any()
    assert any(first[k] != other[k] for k in metrics)


def test_steps_sweep_tests_each_step_count_after_one_training_run(monkeypatch):
    split = make_split(synthetic_dataset(n_users=120), "loo")
    params = {"max_len": 20, "hidden_size": 16, "n_blocks": 1, "inference": "multi", "n_masks": 10, "steps": 8}
    spec = make_trial_spec("synthetic", "diffsasrec", "diffsasrec", 0, params, {"epochs": 2, "patience": 1},
                           ProtocolConfig(), steps_sweep=[1, 8, 3])
    fits = []
    real_fit = trial_module.Trainer.fit
    monkeypatch.setattr(trial_module.Trainer, "fit", lambda self, *a: fits.append(1) or real_fit(self, *a))
    record, arrays = run_trial(spec, split)
    assert len(fits) == 1
    assert record["inference_steps"] == 8  # back at the configured count after the sweep
    assert [entry["inference_steps"] for entry in record["steps_sweep"]] == [1, 8, 3]
    configured = record["steps_sweep"][1]
    assert configured["test_ndcg@10"] == record["test_ndcg@10"] and configured["latency_p50_ms"] == record["latency_p50_ms"]
    for entry in record["steps_sweep"]:
        assert 0.0 <= entry["test_hr@10"] <= 1.0 and entry["latency_p50_ms"] > 0 and entry["users_per_s"] > 0
        ranks = arrays[f"test_ranks_steps{entry['inference_steps']}"]  # per-user ranks kept for significance tests
        assert abs((ranks <= 10).mean() - entry["test_hr@10"]) < 1e-12


def test_models_without_steps_record_none():
    record, _ = run_trial(tiny_spec(), make_split(synthetic_dataset(n_users=100), "loo"))
    assert record["inference_steps"] is None and record["steps_sweep"] == []
