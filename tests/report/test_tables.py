import numpy as np
import pandas as pd

from bench.report.tables import results_markdown


def _row(model, seed, hr20, status="ok"):
    return {"dataset": "toy", "model": model, "seed": seed, "status": status, "split": "loo", "split_fingerprint": "abc",
            "n_items": 100, "n_test_users": 10, "exclude_history": False, "ranking": "full",
            "test_ndcg@10": 0.1 + seed / 100, "test_hr@10": 0.2, "test_hr@20": hr20}


def test_a_metric_beyond_a_generated_list_reads_not_applicable_and_a_failed_trial_says_so():
    frame = pd.DataFrame([_row("sasrec", 0, 0.3), _row("sasrec", 1, 0.31), _row("multi", 0, np.nan), _row("multi", 1, np.nan),
                          _row("broken", 0, np.nan, status="failed")])
    lines = results_markdown(frame).splitlines()
    multi = next(line for line in lines if line.startswith("| multi"))
    assert multi.split("|")[5].strip() == "n/a"  # HR@20 of a 10-item list
    assert next(line for line in lines if line.startswith("| sasrec")).split("|")[5].strip() == "0.3050 ± 0.0071"
    assert any(line.startswith("| broken (seed 0: failed)") for line in lines)
    assert "n/a = not applicable (K beyond the model's generated list)" in lines[-1]


def test_a_model_with_a_seed_cut_by_a_safety_cap_is_marked_not_converged_and_the_note_says_why():
    rows = [_row("sasrec", 0, 0.3) | {"converged": True}, _row("sasrec", 1, 0.3) | {"converged": True},
            _row("diffurec", 0, 0.3) | {"converged": True}, _row("diffurec", 1, 0.3) | {"converged": False},
            _row("old", 0, 0.3)]  # a record from before stop reasons: unknown, not flagged
    lines = results_markdown(pd.DataFrame(rows)).splitlines()
    assert any(line.startswith("| diffurec ‡ ") for line in lines)
    assert any(line.startswith("| sasrec ") and "‡" not in line for line in lines)
    assert "‡ = not converged" in lines[-1] and "stop_reason" in lines[-1]
    assert "‡" not in results_markdown(pd.DataFrame(rows[:3])).splitlines()[-1]  # no flagged trial, no note
