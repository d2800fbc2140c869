"""Latency: every model timed doing the same job, after training, alone, with its threads recorded."""

import numpy as np
import torch

import bench.run.engine as engine
import bench.run.local_backend as local_backend
from bench.run.config import ProtocolConfig, parse_suite
from bench.protocol.latency import _ranked_list, measure_latency
from bench.run.latency_phase import pending_latency, restore, snapshot
from bench.records.run_dir import RunDir
from bench.protocol.splits import make_split
from bench.data import synthetic_dataset

SUITE = {
    "name": "latency",
    "datasets": ["synthetic"],
    "seeds": [0, 1],
    "training": {"epochs": 2, "batch_size": 128, "patience": 1},
    "models": {"sasrec": {"model": "sasrec", "params": {"max_len": 20, "hidden_size": 16, "n_blocks": 1}}},
}


class Scorer:
    """A scoring model whose scores are the item ids: its top-K is the K largest ids."""

    generates_lists = False
    inference_steps = None

    def __init__(self, n_items):
        self.n_items = n_items

    def eval(self):
        return self

    def score(self, histories):
        return torch.arange(self.n_items + 1, dtype=torch.float32).expand(len(histories), -1).clone()


class Generator(Scorer):
    generates_lists = True

    def __init__(self, n_items):
        super().__init__(n_items)
        self.calls = []

    def generate(self, histories, k, exclude_seen=False):
        self.calls.append(exclude_seen)
        return torch.arange(1, k + 1).expand(len(histories), -1)


def test_both_kinds_of_model_are_timed_from_host_histories_to_a_host_top_k_list():
    histories = torch.tensor([[0, 5, 9], [3, 4, 7]])
    scored = _ranked_list(Scorer(9), exclude_history=True, k=3)(histories, "cpu")
    # the scoring model's job includes masking the history and picking the top K
    assert scored.device.type == "cpu" and scored.tolist() == [[8, 7, 6], [9, 8, 6]]
    generator = Generator(9)
    listed = _ranked_list(generator, exclude_history=True, k=3)(histories, "cpu")
    assert listed.shape == (2, 3) and generator.calls == [True]


def test_latency_reports_percentiles_at_batch_one_and_the_batch_size_of_the_throughput():
    split = make_split(synthetic_dataset(n_users=60), "loo")
    timing = measure_latency(Scorer(split.n_items), split.test, "cpu", k=10, n_single=20, n_warmup=2, batch_size=16)
    assert timing["latency_p50_ms"] <= timing["latency_p95_ms"] <= timing["latency_p99_ms"]
    assert timing["latency_batch_size"] == 16 and timing["users_per_s"] > 0


def test_a_trained_model_survives_the_trip_to_the_latency_phase():
    from bench.run.trial import make_trial_spec, train_and_test

    split = make_split(synthetic_dataset(n_users=80), "loo")
    spec = make_trial_spec("synthetic", "s", "sasrec", 0, {"max_len": 20, "hidden_size": 16, "n_blocks": 1}, {"epochs": 1},
                           ProtocolConfig())
    record, _, model = train_and_test(spec, split)
    assert record["latency"] == "pending" and "latency_p50_ms" not in record
    again = restore(snapshot(model), "cpu")
    histories = torch.tensor([[0, 1, 2, 3]])
    torch.testing.assert_close(again.score(histories), model.score(histories))


def test_runner_times_models_only_after_every_trial_has_trained_and_records_how(tmp_path, monkeypatch):
    events = []
    real_train = local_backend.train_and_test

    def spy_train(spec, *args, **kwargs):
        events.append(("train", spec["key"]))
        return real_train(spec, *args, **kwargs)

    import bench.protocol.latency as latency_module

    real_measure = latency_module.measure_trial

    def spy_measure(*args, **kwargs):
        events.append(("time", torch.get_num_threads()))
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(local_backend, "train_and_test", spy_train)
    monkeypatch.setattr(latency_module, "measure_trial", spy_measure)
    suite = parse_suite(SUITE)
    split = make_split(synthetic_dataset(n_users=80), "loo")
    run = RunDir.create(tmp_path, "latency", {})
    assert engine.run_suite(suite, run, {"synthetic": split}, local_backend.LocalBackend(), echo=lambda line: None) == 0
    assert [kind for kind, _ in events] == ["train", "train", "time", "time"]
    assert all(threads == 1 for kind, threads in events if kind == "time")  # resources.cpus_per_trial
    for record in run.records():
        assert record["latency"] == "measured alone" and record["latency_threads"] == 1
        assert "no other trial running" in record["latency_method"] and record["latency_batch_size"] == 256
        assert record["latency_p99_ms"] >= record["latency_p50_ms"] > 0
    assert not run.pending_dir.exists()  # the models kept for timing are deleted once timed


def test_an_interrupted_latency_phase_is_finished_on_resume_without_retraining(tmp_path, monkeypatch):
    suite = parse_suite(SUITE)
    split = make_split(synthetic_dataset(n_users=80), "loo")
    run = RunDir.create(tmp_path, "latency", {})
    import bench.run.latency_phase as latency_phase

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "measure_pending", interrupted)
    try:
        engine.run_suite(suite, run, {"synthetic": split}, local_backend.LocalBackend(), echo=lambda line: None)
    except KeyboardInterrupt:
        pass
    assert len(pending_latency(run)) == 2 and len(list(run.pending_dir.glob("*.pt"))) == 2
    monkeypatch.setattr(engine, "measure_pending", latency_phase.measure_pending)
    trained = []
    monkeypatch.setattr(local_backend, "train_and_test", lambda *a, **k: trained.append(1))
    lines = []
    assert engine.run_suite(suite, run, {"synthetic": split}, local_backend.LocalBackend(), echo=lines.append) == 0
    assert not trained and not pending_latency(run)
    assert any(line.startswith("latency: timing 2 trained model(s)") for line in lines)
    assert np.isfinite([r["latency_p50_ms"] for r in run.records()]).all()
