"""Hyperparameter sweeps: checked search spaces, validation-only search, best configuration retrained, resume."""

import json

import pandas as pd
import pytest

import bench.run.sweep as sweep_module
import run_bench
from bench.run.config import ModelSpec, ProtocolConfig, SweepConfig, TrainConfig, parse_suite
from bench.errors import DrbenchError
from bench.models.base import model_names
from bench.protocol.splits import make_split
from bench.run.spaces import default_spaces, search_space, tune_space
from bench.run.trial import make_trial_spec
from bench.data import synthetic_dataset
from tests.conftest import MIRROR

TRAINING_FIELDS = set(TrainConfig.__dataclass_fields__)


def test_every_registered_model_has_a_valid_default_space():
    assert set(model_names()) <= set(default_spaces())
    for name in model_names():
        space = search_space(ModelSpec(label=name, model=name), SweepConfig(), TRAINING_FIELDS)
        nested = tune_space(space)
        assert set(nested) <= {"params", "training"}


@pytest.mark.parametrize("space, message", [
    ({"params.hidden": {"choice": [8]}}, "cannot tune 'params.hidden'; use params.<one of .*hidden_size"),
    ({"training.epochs": {"choice": [8]}}, "cannot tune 'training.epochs'"),
    ({"lr": {"loguniform": [1e-4, 1e-2]}}, "cannot tune 'lr'"),
    ({"training.lr": {"lognormal": [1e-4, 1e-2]}}, "must be one sampler.*samplers: uniform, loguniform"),
    ({"training.lr": {"loguniform": 0.01}}, "must be one sampler with a list of arguments"),
    ({"training.lr": {"loguniform": [1e-2]}}, "training.lr: bad arguments"),
])
def test_bad_search_spaces_are_named(space, message):
    with pytest.raises(DrbenchError, match=message):
        search_space(ModelSpec(label="s", model="sasrec"), SweepConfig(spaces={"s": space}), TRAINING_FIELDS)


def test_suite_tune_section_is_checked():
    base = {"name": "t", "datasets": ["synthetic"], "models": {"s": {"model": "sasrec"}}}
    with pytest.raises(DrbenchError, match="tune.spaces: x not among the suite's models"):
        parse_suite({**base, "tune": {"spaces": {"x": {}}}})
    with pytest.raises(DrbenchError, match="tune.search must be one of random, tpe"):
        parse_suite({**base, "tune": {"search": "grid"}})
    assert parse_suite({**base, "tune": {"search": "random", "num_samples": 3}}).tune.num_samples == 3


def test_search_trainable_reports_validation_rounds_and_never_touches_the_test_set(monkeypatch):
    split = make_split(synthetic_dataset(n_users=150), "loo")
    base = make_trial_spec("synthetic", "s", "sasrec", 0, {"max_len": 20, "hidden_size": 8, "n_blocks": 1},
                           {"epochs": 3, "eval_every": 1, "patience": 5}, ProtocolConfig())
    reports, evaluated = [], []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reports.append(metrics))
    real_evaluate = sweep_module.fit_trial.__globals__["evaluate"]

    def spy(model, eval_set, *args, **kwargs):
        evaluated.append("test" if eval_set is split.test else "valid")
        return real_evaluate(model, eval_set, *args, **kwargs)

    monkeypatch.setitem(sweep_module.fit_trial.__globals__, "evaluate", spy)
    sweep_module._sweep_trainable({"training": {"lr": 0.005}}, base_spec=base, split=split)
    assert evaluated == ["valid"] * 3
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    assert reports[-1]["best_valid"] == max(r["valid_ndcg@10"] for r in reports)


def test_a_model_that_validates_without_the_training_loop_reports_its_rounds_to_the_search(monkeypatch):
    # Pop, or a plugin's model without a training loop (examples/item_knn.py), validates in its own fit
    split = make_split(synthetic_dataset(n_users=100), "loo")
    base = make_trial_spec("synthetic", "p", "pop", 0, {}, {"epochs": 1}, ProtocolConfig())
    reports = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reports.append(metrics))
    sweep_module._sweep_trainable({}, base_spec=base, split=split)
    assert [r["epoch"] for r in reports] == [1]
    assert reports[0]["best_valid"] == reports[0]["valid_ndcg@10"] > 0


def test_a_diverging_configuration_scores_zero_instead_of_breaking_the_search(monkeypatch):
    split = make_split(synthetic_dataset(n_users=100), "loo")
    base = make_trial_spec("synthetic", "s", "sasrec", 0, {"max_len": 20, "hidden_size": 8, "n_blocks": 1},
                           {"epochs": 1}, ProtocolConfig())
    reports = []
    monkeypatch.setattr("ray.tune.report", lambda metrics: reports.append(metrics))

    def diverge(*args, **kwargs):
        raise sweep_module.TrialDiverged("training loss became nan at epoch 1")

    monkeypatch.setattr(sweep_module, "fit_trial", diverge)
    sweep_module._sweep_trainable({}, base_spec=base, split=split)
    assert reports == [{"best_valid": 0.0, "error": "training loss became nan at epoch 1"}]


SWEEP_SUITE = """
name: sweep
datasets: [ml-100k]
seeds: [0, 1]
training: {epochs: 2, batch_size: 256, eval_every: 1, patience: 1}
tune:
  search: tpe
  num_samples: 3
  grace_period: 1
  spaces:
    sasrec:
      params.hidden_size: {choice: [8, 16]}
      training.lr: {loguniform: [1.0e-3, 1.0e-2]}
models:
  sasrec: {model: sasrec, params: {max_len: 20, n_blocks: 1}}
"""


@pytest.mark.skipif(not (MIRROR / "ml-100k" / "u.data").is_file(), reason="dataset mirror ../shared/data not present")
def test_sweep_on_ml100k_retrains_the_best_configuration_with_every_seed_and_resumes(tmp_path, capsys):
    suite = tmp_path / "sweep.yaml"
    suite.write_text(SWEEP_SUITE)
    results = tmp_path / "results"
    args = ["--suite", str(suite), "--tune", "--results-dir", str(results)]
    assert run_bench.main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "best valid ndcg@10" in out and "retraining the best configurations: 2 trial(s)" in out
    (run,) = (results / "sweep").iterdir()
    folder = run / "tune" / "ml-100k__sasrec"
    best = json.loads((folder / "best.json").read_text())
    history = pd.read_csv(folder / "history.csv")
    assert len(history) == 3 and best["best_valid"] == pytest.approx(history["best_valid"].max())
    assert json.loads((folder / "space.json").read_text())["training.lr"] == {"loguniform": [1.0e-3, 1.0e-2]}
    trials = pd.read_csv(run / "trials.csv")
    assert sorted(trials["seed"]) == [0, 1] and (trials["status"] == "ok").all()
    assert all(json.loads(p)["hidden_size"] == best["params"]["hidden_size"] for p in trials["params"])
    assert all(json.loads(t)["lr"] == best["training"]["lr"] for t in trials["training"])

    # An interrupted search (no best.json yet) continues from Ray Tune's experiment instead of starting over.
    (folder / "best.json").unlink()
    assert run_bench.main(args + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "continuing the interrupted search" in out and "nothing to run" in out
    assert len(pd.read_csv(folder / "history.csv")) == 3
    assert json.loads((folder / "best.json").read_text())["params"] == best["params"]
