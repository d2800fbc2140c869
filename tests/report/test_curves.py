import numpy as np
import pytest

from bench.report.curves import best_by_epoch, compared_epochs, equal_epoch_frame, equal_epoch_markdown


def _trial(model, seed, curve, dataset="toy"):
    return {"dataset": dataset, "model": model, "seed": seed, "status": "ok",
            "history": [{"epoch": e, "valid_ndcg@10": v} for e, v in curve]}


def test_best_by_epoch_is_the_checkpoint_kept_had_training_stopped_there():
    history = [{"epoch": 2, "valid_ndcg@10": 0.1}, {"epoch": 4, "valid_ndcg@10": 0.3}, {"epoch": 6, "valid_ndcg@10": 0.2}]
    assert best_by_epoch(history, "ndcg@10", 1) != best_by_epoch(history, "ndcg@10", 1)  # NaN: nothing validated yet
    assert best_by_epoch(history, "ndcg@10", 3) == 0.1
    assert best_by_epoch(history, "ndcg@10", 6) == 0.3  # a later, worse epoch does not lower it


def test_compared_epochs_are_fractions_of_the_fewest_epochs_any_trial_ran():
    assert compared_epochs([40, 20, 200]) == [5, 10, 20]
    assert compared_epochs([1, 3]) == [1]


def test_equal_epochs_compare_every_model_at_the_same_epochs_against_the_best_baseline():
    records = [
        _trial("sasrec", 0, [(1, 0.10), (2, 0.20), (3, 0.30), (4, 0.40), (5, 0.5), (6, 0.6), (7, 0.7), (8, 0.8)]),
        _trial("sasrec", 1, [(1, 0.10), (2, 0.20), (3, 0.30), (4, 0.40), (5, 0.5), (6, 0.6), (7, 0.7), (8, 0.6)]),
        _trial("pop", 0, [(1, 0.05)]),  # one validation, so it has no curve: the fewest epochs is its 1
        _trial("diffurec", 0, [(1, 0.02), (2, 0.04), (3, 0.06), (4, 0.2)]),
        _trial("diffurec", 1, [(1, 0.04), (2, 0.08), (3, 0.10), (4, 0.2)]),
        {"dataset": "toy", "model": "broken", "seed": 0, "status": "failed"},
    ]
    frame = equal_epoch_frame([r for r in records if r["model"] != "pop"], "ndcg@10", baselines={"sasrec"}, order=["diffurec", "sasrec"])
    assert list(dict.fromkeys(frame["model"])) == ["diffurec", "sasrec"]
    assert sorted(frame["epoch"].unique()) == [1, 2, 4]
    at_four = frame[frame["epoch"] == 4].set_index("model")
    assert at_four.loc["sasrec", "mean"] == pytest.approx(0.4) and at_four.loc["sasrec", "seeds"] == 2
    assert at_four.loc["diffurec", "vs_best_baseline"] == pytest.approx(0.5)
    assert frame.set_index(["model", "epoch"]).loc[("diffurec", 2), "std"] == pytest.approx(np.std([0.04, 0.08], ddof=1))
    markdown = equal_epoch_markdown(frame, "ndcg@10")
    assert "vs sasrec at 4" in markdown and "0.50x" in markdown and "broken" not in markdown
    assert "0.7500 (8)" in markdown  # sasrec's run bests 0.8 (epoch 8) and 0.7 (epoch 7): mean epoch 7.5


def test_a_dataset_with_one_model_has_nothing_to_compare():
    assert equal_epoch_frame([_trial("sasrec", 0, [(1, 0.1), (2, 0.2)])], "ndcg@10", {"sasrec"}).empty
