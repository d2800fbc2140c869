"""The example plugin, examples/item_knn.py: its scores, its suite, and a run from a folder outside the repository."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import run_bench
from bench.data.registry import REPO_ROOT
from bench.data.sequences import Sequences
from bench.plugins import load_plugins

pytestmark = pytest.mark.usefixtures("plugin_sandbox")
EXAMPLES = REPO_ROOT / "examples"


def item_knn(**params):
    load_plugins([str(EXAMPLES / "item_knn.py")])
    from item_knn import ItemKNN, ItemKNNConfig

    return ItemKNN(ItemKNNConfig(**params), n_items=5)


def fitted(model, rows):
    summary = model.fit(Sequences.from_lists(rows), trainer=None, validate=lambda m: {"ndcg@10": 0.5})
    assert summary.history == [{"epoch": 1, "valid_ndcg@10": 0.5}]
    return model


def test_scores_are_cosine_co_occurrence_summed_over_the_last_items_most_recent_first():
    # items 1 and 2 always together, 3 with 1 once, 4 and 5 together
    model = fitted(item_knn(history=2, decay=0.5, neighbours=0), [[1, 2], [2, 1, 3], [4, 5], [1, 2, 1]])
    assert model.similarity[1, 2] == pytest.approx(1.0)  # 1 and 2: the same 3 users
    assert model.similarity[1, 3] == pytest.approx(1 / np.sqrt(3))  # 1 of 1's 3 users, 3's only user
    assert torch.all(model.similarity.diagonal() == 0) and torch.all(model.similarity[0] == 0)
    scores = model.score(torch.tensor([[0, 0, 4, 1], [0, 0, 0, 3]]))
    assert scores.shape == (2, 6)
    # the last item (1) weighs 1, the one before (4) weighs decay = 0.5
    assert scores[0, 5] == pytest.approx(0.5) and scores[0, 2] == pytest.approx(1.0)
    # a history shorter than `history` (padding, item 0) scores as its items alone
    assert scores[1, 1] == pytest.approx(1 / np.sqrt(3)) and scores[1, 2] == pytest.approx(1 / np.sqrt(3)) and scores[1, 4] == 0


def test_neighbours_keeps_each_items_most_similar_items_only():
    model = fitted(item_knn(neighbours=1), [[1, 2], [2, 1, 3], [4, 5], [1, 2, 1]])
    assert (model.similarity[1:] > 0).sum(dim=1).tolist() == [1, 1, 1, 1, 1]
    assert model.similarity[1, 2] == pytest.approx(1.0) and model.similarity[1, 3] == 0


def test_the_example_suite_names_its_plugin_relative_to_itself_and_falls_back_to_synthetic(tmp_path):
    from bench.run.config import load_suite

    suite = run_bench.apply_fallbacks(load_suite(str(EXAMPLES / "item_knn.yaml")), tmp_path, echo=lambda line: None)
    assert suite.datasets == ["synthetic"]
    assert [m.model for m in suite.models] == ["pop", "item_knn", "sasrec"]
    assert [(p.module, p.source) for p in suite.plugins] == [("item_knn", "examples/item_knn.py")]


def copy_example_outside_the_repository(tmp_path):
    """The example plugin and its suite in a folder of their own, shrunk to seconds: synthetic data, 2 epochs, a small SASRec."""
    folder = tmp_path / "my-project"
    folder.mkdir()
    shutil.copy(EXAMPLES / "item_knn.py", folder / "item_knn.py")
    suite = yaml.safe_load((EXAMPLES / "item_knn.yaml").read_text())
    suite.update(datasets=["synthetic"], training={"epochs": 2, "eval_every": 1})
    del suite["fallbacks"]
    suite["models"]["sasrec-ce"]["params"].update(max_len=20, hidden_size=16, n_blocks=1)
    (folder / "item_knn.yaml").write_text(yaml.safe_dump(suite))
    assert suite["plugins"] == ["item_knn.py"]  # found next to the suite file, wherever that is
    return folder / "item_knn.yaml"


def check_run(results, tmp_path, models):
    [run_dir] = (results / "item-knn").iterdir()
    records = {p.stem.split("__")[1]: json.loads(p.read_text()) for p in (run_dir / "trials").glob("*.json")}
    assert sorted(records) == sorted(models)
    assert all(r["status"] == "ok" for r in records.values()), {k: r.get("error") for k, r in records.items()}
    knn = records["item-knn"]
    assert knn["model_type"] == "item_knn" and knn["params"] == {"history": 5, "decay": 0.8, "neighbours": 100}
    assert 0.3 < knn["test_ndcg@10"] <= 1 and knn["test_hr@10"] >= knn["test_ndcg@10"]
    assert knn["test_ndcg@10"] > 3 * records["pop"]["test_ndcg@10"]  # the synthetic data's sequences are learnable
    assert knn["latency"] == "measured alone" and knn["latency_p50_ms"] > 0  # its pickle was read back to time it
    metadata = (run_dir / "suite.json").read_text()
    assert str(tmp_path) not in metadata  # no absolute path of this machine
    assert json.loads(metadata)["config"]["plugins"][0]["source"] == "item_knn.py"
    return pd.read_csv(run_dir / "trials.csv")


def test_the_example_runs_through_ray_from_a_folder_outside_the_repository(tmp_path, capsys, monkeypatch):
    import bench.run.ray_backend as ray_backend

    suite = copy_example_outside_the_repository(tmp_path)
    results = tmp_path / "results"
    real_start_ray = ray_backend.start_ray

    def start_ray_then_delete_the_plugin(*args, **kwargs):
        # once Ray has its copy, the driver's file is gone: the workers can only use what Ray ships (no shared file system)
        real_start_ray(*args, **kwargs)
        shutil.rmtree(suite.parent)

    monkeypatch.setattr(ray_backend, "start_ray", start_ray_then_delete_the_plugin)
    code = run_bench.main(["--suite", str(suite), "--results-dir", str(results)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "on Ray" in out and not suite.parent.exists()
    trials = check_run(results, tmp_path, ["pop", "item-knn", "sasrec-ce"])
    assert (trials["status"] == "ok").all()


def test_the_example_runs_without_ray_from_a_folder_outside_the_repository(tmp_path, capsys):
    suite = copy_example_outside_the_repository(tmp_path)
    results = tmp_path / "results"
    code = run_bench.main(["--suite", str(suite), "--results-dir", str(results), "--no-ray", "--models", "pop", "item-knn"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "in this process" in out
    check_run(results, tmp_path, ["pop", "item-knn"])
