"""bench.perf.suite_cost: a suite's per-trial cost, measured as its trials would train and validate."""

import json
import sys

import pytest

from bench.perf import suite_cost

SUITE = """
name: tiny-cost
datasets: [synthetic]
seeds: [0, 1]
training: {epochs: 30, eval_every: 2, max_minutes: 1}
models:
  pop: {model: pop}
  sasrec: {model: sasrec, params: {max_len: 20, hidden_size: 16, n_blocks: 1}}
  diffsasrec-multi: {model: diffsasrec, params: {max_len: 20, hidden_size: 16, n_blocks: 1, inference: multi, n_masks: 5}}
"""


def test_projection_counts_validation_into_the_epoch_and_stops_at_the_first_cap():
    cost = {"trained": True, "setup_s": 5.0, "train_s_per_epoch": 10.0, "valid_s": 4.0, "eval_every": 2, "epochs": 200,
            "max_minutes": 1.0}
    projected = suite_cost.projection(cost)
    assert projected["epoch_s"] == 12.0 and projected["epochs_in_cap"] == 5  # 60 s / (10 + 4 / 2)
    assert projected["first_validation_s"] == 24.0 and projected["capped_s"] == 65.0
    few_epochs = suite_cost.projection({**cost, "epochs": 3, "max_minutes": None})
    assert few_epochs["epochs_in_cap"] is None and few_epochs["capped_s"] == 5.0 + 3 * 12.0
    untrained = suite_cost.projection({**cost, "trained": False})
    assert untrained["capped_s"] == 9.0 and untrained["epochs_in_cap"] is None


def test_a_tiny_suite_is_measured_model_by_model_and_written(tmp_path, monkeypatch, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "cost.json"
    monkeypatch.setattr(sys, "argv", ["suite_cost", "--suite", str(suite), "--seconds", "0.5", "--out", str(out)])
    assert suite_cost.main() == 0
    record = json.loads(out.read_text())
    results = record["results"]
    assert set(results) == {"synthetic/pop", "synthetic/sasrec", "synthetic/diffsasrec-multi"}
    assert not results["synthetic/pop"]["trained"] and results["synthetic/pop"]["train_s_per_epoch"] == 0.0
    for label in ("sasrec", "diffsasrec-multi"):
        r = results[f"synthetic/{label}"]
        assert r["trained"] and r["train_s_per_epoch"] > 0 and r["valid_s"] > 0 and r["batches_per_epoch"] > 0
        assert r["epochs_in_cap"] == int(60 // r["epoch_s"])
    assert record["seeds"] == 2 and "2 seeds" in record["summary"]
    assert "diffsasrec-multi" in capsys.readouterr().out


def test_validation_goes_through_the_models_own_callback(tmp_path, monkeypatch):
    """DiffSASRec validates with one-step scores inside fit; the timing must see that path, not its multi-step test."""
    from bench.data import load_dataset
    from bench.protocol.splits import make_split
    from bench.run.config import load_suite
    from bench.run.engine import trial_specs

    seen = []  # whether the model was generating lists when validated
    fit = suite_cost.TimedFit.fit

    def spy(self, model, train, validate):
        return fit(self, model, train, lambda candidate: seen.append(model.generates_lists) or validate(candidate))

    monkeypatch.setattr(suite_cost.TimedFit, "fit", spy)
    path = tmp_path / "tiny.yaml"
    path.write_text(SUITE)
    spec = next(s for s in trial_specs(load_suite(str(path))) if s["label"] == "diffsasrec-multi" and s["seed"] == 0)
    suite_cost.measure(spec, make_split(load_dataset("synthetic", tmp_path), "loo"), 0.2)
    assert seen == [False]  # validated once, while fitting: one-step scores
