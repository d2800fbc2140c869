"""Paper tables from a hand-made run directory (no training): placement marks, daggers, efficiency, published gaps."""

import json
import numpy as np
import pandas as pd
import pytest

from bench.report.settings import ReportConfig
from bench.protocol.metrics import summarize
from bench.report.paper import (accuracy_frame, accuracy_latex, accuracy_markdown, accuracy_table, caption, efficiency_frame, published_frame,
                         published_markdown, suite_order, write_report)
from bench.report.published import PublishedSource, load_source, published_models
from bench.records.run_dir import RunDir

N_ITEMS, N_USERS = 50, 400


def _record(model, model_type, seed, ranks, steps_sweep=()):
    top = np.zeros((len(ranks), 20), dtype=np.int32)
    metrics = summarize(ranks, top, [10, 20], N_ITEMS)
    return {
        "key": f"toy__{model}__seed{seed}", "dataset": "toy", "model": model, "model_type": model_type, "seed": seed,
        "status": "ok", "error": "", "split": "loo", "split_fingerprint": "abc", "exclude_history": False, "ranking": "full",
        "n_items": N_ITEMS, "n_test_users": len(ranks), **{f"test_{k}": v for k, v in metrics.items()},
        "epochs_run": 4, "best_epoch": 2, "train_time_s": 4.0, "epoch_time_s": 1.0, "num_parameters": 1000,
        "latency_p50_ms": 1.0, "latency_p95_ms": 2.0, "users_per_s": 100.0, "inference_steps": 8 if steps_sweep else None,
        "steps_sweep": list(steps_sweep),
        "history": [{"epoch": 2, "train_time_s": 2.5, "valid_ndcg@10": 0.1}, {"epoch": 4, "train_time_s": 4.0, "valid_ndcg@10": 0.09}],
    }


@pytest.fixture
def run(tmp_path):
    rng = np.random.default_rng(0)
    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "models": [{"label": m} for m in ("pop", "sasrec", "diffurec")],
                                                     "protocol": {"monitor": "ndcg@10"}}})
    users = np.arange(N_USERS, dtype=np.int32)
    for seed in (0, 1):
        base = rng.integers(1, 40, N_USERS)
        ranks = {"pop": base + 10, "sasrec": base + 3, "diffurec": np.maximum(base - 2, 1)}
        for model, model_type in (("pop", "pop"), ("sasrec", "sasrec"), ("diffurec", "diffurec")):
            sweep = ()
            if model == "diffurec":
                sweep = [{"inference_steps": s, "test_ndcg@10": 0.1 * s, "test_hr@10": 0.2, "latency_p50_ms": float(s),
                          "latency_p95_ms": 2.0 * s, "users_per_s": 100.0 / s} for s in (1, 8)]
            run.write_trial(_record(model, model_type, seed, ranks[model], sweep), {"test_users": users, "test_ranks": ranks[model].astype(np.int32)})
    run.write_trial({"key": "toy__broken__seed0", "dataset": "toy", "model": "broken", "model_type": "sasrec", "seed": 0,
                     "status": "failed", "error": "training loss became nan"})
    return run


def test_accuracy_table_marks_best_second_and_significant_improvement(run):
    frame = run.trials_frame()
    table = accuracy_table(run, frame, ReportConfig(metrics=["hr@10", "ndcg@10"]))
    assert table.baselines == {"pop", "sasrec"}
    assert table.cell("toy", "diffurec", "ndcg@10").place == 1 and table.cell("toy", "sasrec", "ndcg@10").place == 2
    assert table.cell("toy", "pop", "ndcg@10").place == 0
    assert table.cell("toy", "diffurec", "ndcg@10").verdict == "better"  # consistently better ranks for 400 users
    assert table.cell("toy", "sasrec", "ndcg@10").verdict == ""  # baselines are never tested
    assert [c.reference for c in table.comparisons] == ["sasrec", "sasrec"]
    markdown = accuracy_markdown(table, ReportConfig(metrics=["hr@10", "ndcg@10"]))
    diffurec_row = next(line for line in markdown.splitlines() if line.startswith("| diffurec"))
    assert "**" in diffurec_row and "†" in diffurec_row and "±" in diffurec_row
    assert "<u>" in next(line for line in markdown.splitlines() if line.startswith("| sasrec"))
    assert "Wilcoxon" in markdown and "Holm" in markdown
    assert "toy__broken__seed0" in markdown and "nan" in markdown  # failed trials are listed, not hidden
    latex = accuracy_latex(table, ReportConfig(metrics=["hr@10", "ndcg@10"]))
    assert r"\toprule" in latex and r"\textbf{" in latex and r"\underline{" in latex and r"$^\dagger$" in latex
    tidy = accuracy_frame(table)
    assert set(tidy["metric"]) == {"hr@10", "ndcg@10"} and (tidy["verdict"] == "better").sum() == 2


def test_metrics_as_rows_layout_and_percentages(run):
    config = ReportConfig(metrics=["hr@10", "ndcg@10"], scale=100, layout="metrics_as_rows")
    table = accuracy_table(run, run.trials_frame(), config)
    markdown = accuracy_markdown(table, config)
    header = markdown.splitlines()[0]
    assert "dataset" in header and "diffurec" in header and "sasrec" in header
    mean = table.cell("toy", "pop", "hr@10").mean
    assert f"{mean * 100:.2f}" in markdown and "(×100)" in markdown


def test_efficiency_has_one_row_per_step_count_and_time_to_best_epoch(run):
    rows = efficiency_frame(run, run.trials_frame(), run.steps_frame())
    diffurec = rows[rows["model"] == "diffurec"]
    assert sorted(diffurec["steps"]) == [1, 8]
    assert diffurec.set_index("steps").loc[8, "latency_p50_ms"] == pytest.approx(8.0)
    assert rows.set_index("model").loc["sasrec", "time_to_best_s"] == pytest.approx(2.5)  # from the history, not epochs x mean


def test_published_gap_is_relative_to_the_published_value(run):
    table = accuracy_table(run, run.trials_frame(), ReportConfig(metrics=["ndcg@10"]))
    measured = table.cell("toy", "diffurec", "ndcg@10").mean
    source = PublishedSource("src", "A paper.", "loo", "by hand", {"toy": {"PaperName": {"ndcg@10": measured / 2}}})
    rows = published_frame(table, published_models(source, {"diffurec": "PaperName", "sasrec": "NotInSource"}))
    assert len(rows) == 1 and rows["gap"].iloc[0] == pytest.approx(1.0)
    assert "+100.0%" in published_markdown(rows, [source], 1.0)


def test_paper_layout_puts_published_numbers_and_gaps_beside_each_row(run):
    config = ReportConfig(metrics=["hr@10", "ndcg@10"], scale=100, layout="metrics_as_rows")
    table = accuracy_table(run, run.trials_frame(), config)
    measured = table.cell("toy", "diffurec", "ndcg@10").mean
    source = PublishedSource("src", "A paper.", "loo", "by hand", {"toy": {"PaperName": {"ndcg@10": measured / 2}}})
    markdown = accuracy_markdown(table, config, published_models(source, {"diffurec": "PaperName"}))
    lines = markdown.splitlines()
    assert "PaperName (paper)" in lines[0] and "gap diffurec" in lines[0]
    ndcg_row = next(line for line in lines if "NDCG@10" in line)
    assert f"{measured / 2 * 100:.2f}" in ndcg_row and "+100.0%" in ndcg_row
    hr_row = next(line for line in lines if "HR@10" in line)
    assert hr_row.rstrip(" |").endswith("–")  # the source reports no HR@10: no number is invented
    latex = accuracy_latex(table, config, published_models(source, {"diffurec": "PaperName"}))
    assert "PaperName (paper)" in latex and r"+100.0\%" in latex


def test_published_sources_load_on_the_unit_scale():
    diffurec = load_source("diffurec-tois2023")
    assert diffurec.value("amazon-beauty", "DiffuRec", "ndcg@10") == pytest.approx(0.047494)
    assert diffurec.value("amazon-beauty", "DiffuRec", "hr@5") == pytest.approx(0.055758)
    assert diffurec.value("amazon-beauty", "DiffuRec", "mrr@10") is None


def test_suite_order_follows_the_suite_file(run):
    frame = suite_order(run, run.trials_frame())
    assert list(dict.fromkeys(frame["model"])) == ["pop", "sasrec", "diffurec", "broken"]


def test_write_report_writes_tables_and_figures(run):
    out = write_report(run)
    for name in ("report.md", "accuracy.md", "accuracy.tex", "accuracy.csv", "efficiency.md", "efficiency.tex", "efficiency.csv",
                 "metrics.png", "metrics.pdf", "pareto.png", "steps.png", "validation.png", "equal-epochs.md", "equal-epochs.csv"):
        assert (out / name).is_file(), name
    assert (out / "pareto.png").stat().st_size > 10_000
    assert (pd.read_csv(out / "accuracy.csv")["verdict"] == "better").any()


def test_a_rebuilt_report_is_byte_for_byte_the_first(run):
    # the committed report of a run must be what --report rebuilds: no date or random state in any file, PDFs included
    first = {path.name: path.read_bytes() for path in write_report(run).iterdir()}
    second = {path.name: path.read_bytes() for path in write_report(run).iterdir()}
    assert "pareto.pdf" in first and first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_a_run_whose_every_trial_failed_gets_a_report_that_says_so(tmp_path):
    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "models": [{"label": "broken"}]}})
    run.write_trial({"key": "toy__broken__seed0", "dataset": "toy", "model": "broken", "model_type": "sasrec", "seed": 0,
                     "status": "failed", "error": "training loss became nan"})
    report = (write_report(run) / "report.md").read_text()
    assert "No successful trials yet (1 failed" in report


def test_metrics_a_generator_did_not_measure_read_not_applicable_never_placed_or_tested(tmp_path):
    # diffsasrec generates 10-item lists (HR@20 not measured), tiger 5-item lists (nothing at K = 10, 20 measured)
    rng = np.random.default_rng(1)
    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "protocol": {"monitor": "ndcg@10"},
                                                     "models": [{"label": m} for m in ("sasrec", "tiger", "diffsasrec")]}})
    users = np.arange(N_USERS, dtype=np.int32)
    for seed in (0, 1):
        base = rng.integers(1, 40, N_USERS)
        for model, ranks, length in (("sasrec", base + 3, None), ("tiger", np.maximum(base - 5, 1), 5),
                                     ("diffsasrec", np.maximum(base - 2, 1), 10)):
            trial = _record(model, model, seed, ranks)
            if length:
                ranks = np.where(ranks <= length, ranks, N_ITEMS + 1)
                metrics = summarize(ranks, np.zeros((N_USERS, 20), np.int32), [10, 20], N_ITEMS, list_length=length)
                trial.update({f"test_{k}": v for k, v in metrics.items()}, ranking="generated", list_length=length)
            run.write_trial(trial, {"test_users": users, "test_ranks": ranks.astype(np.int32)})
    config = ReportConfig(metrics=["hr@10", "hr@20"])
    table = accuracy_table(run, run.trials_frame(), config)
    assert np.isnan(table.cell("toy", "diffsasrec", "hr@20").mean) and np.isnan(table.cell("toy", "tiger", "hr@10").mean)
    assert table.cell("toy", "diffsasrec", "hr@10").place == 1 and table.cell("toy", "sasrec", "hr@10").place == 2
    assert table.cell("toy", "sasrec", "hr@20").place == 0  # the only measured value of its column
    # HR@20 of diffsasrec is not tested; tiger (a baseline that measured nothing) is no reference
    assert [(c.model, c.metric, c.reference) for c in table.comparisons] == [("diffsasrec", "hr@10", "sasrec")]
    lines = accuracy_markdown(table, config).splitlines()
    assert next(line for line in lines if line.startswith("| diffsasrec")).rstrip(" |").endswith("n/a")
    assert next(line for line in lines if line.startswith("| tiger")).replace(" ", "") == "|tiger|n/a|n/a|"
    assert "n/a: not applicable, K beyond the model's generated list" in caption(table, config)
    latex = accuracy_latex(table, config)
    assert "diffsasrec & " in latex and next(line for line in latex.splitlines() if line.startswith("tiger")) == r"tiger & n/a & n/a \\"
    assert "nan" not in latex.lower() and "nan" not in "\n".join(lines).lower()
    tidy = accuracy_frame(table)
    assert tidy.set_index(["model", "metric"])["mean"].isna().sum() == 3
    out = write_report(run)  # figures and every table cope with unmeasured cells
    assert (out / "metrics.png").is_file() and (out / "pareto.png").is_file()
    assert "nan" not in (out / "accuracy.md").read_text().lower()


def test_a_cell_whose_seeds_hit_the_epoch_cap_is_flagged_in_every_rendering(run):
    path = run.path / "trials" / "toy__diffurec__seed1.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps(record | {"stop_reason": "epoch cap", "converged": False}))
    config = ReportConfig(metrics=["hr@10", "ndcg@10"])
    table = accuracy_table(run, run.trials_frame(), config)
    assert table.cell("toy", "diffurec", "ndcg@10").not_converged == 1 and table.cell("toy", "sasrec", "ndcg@10").not_converged == 0
    markdown = accuracy_markdown(table, config)
    assert next(line for line in markdown.splitlines() if line.startswith("| diffurec")).count("‡") == 2
    assert "‡" not in next(line for line in markdown.splitlines() if line.startswith("| sasrec"))
    assert "not converged" in caption(table, config)
    assert r"$^\ddagger$" in accuracy_latex(table, config)
    assert accuracy_frame(table).groupby("model")["not_converged_seeds"].max().to_dict() == {"diffurec": 1, "pop": 0, "sasrec": 0}


def test_a_model_significantly_worse_than_the_best_baseline_gets_an_arrow_and_the_caption_names_all_three_verdicts(tmp_path):
    rng = np.random.default_rng(2)
    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "protocol": {"monitor": "ndcg@10"},
                                                     "models": [{"label": m} for m in ("sasrec", "worse", "same")]}})
    users = np.arange(N_USERS, dtype=np.int32)
    base = rng.integers(1, 40, N_USERS)
    for model, model_type, ranks in (("sasrec", "sasrec", base), ("worse", "diffurec", base + 8), ("same", "diffsasrec", base)):
        run.write_trial(_record(model, model_type, 0, ranks), {"test_users": users, "test_ranks": ranks.astype(np.int32)})
    config = ReportConfig(metrics=["ndcg@10"])
    table = accuracy_table(run, run.trials_frame(), config)
    assert table.cell("toy", "worse", "ndcg@10").verdict == "worse"
    assert table.cell("toy", "same", "ndcg@10").verdict == "no detectable difference"
    lines = accuracy_markdown(table, config).splitlines()
    assert next(line for line in lines if line.startswith("| worse")).rstrip(" |").endswith("↓")
    assert "↓" not in next(line for line in lines if line.startswith("| same")) and "†" not in "\n".join(lines[:6])
    assert "† significantly better, ↓ significantly worse, unmarked no detectable difference" in caption(table, config)
    assert "two-sided" in caption(table, config) and r"$^\downarrow$" in accuracy_latex(table, config)


def test_seen_filtered_ranks_get_their_own_table_with_their_own_tests(run):
    config = ReportConfig(metrics=["ndcg@10"])
    assert not (write_report(run) / "accuracy-filtered.md").exists()  # no trial kept filtered ranks
    for path in sorted((run.path / "trials").glob("*.npz")):
        arrays = dict(np.load(path))
        ranks = arrays["test_ranks"]
        # filtering moves every model's target up; here it also reverses sasrec and diffurec
        arrays["test_filtered_ranks"] = np.maximum(ranks - 1, 1) if "pop" in path.name else (ranks + 20 if "diffurec" in path.name else ranks)
        np.savez(path, **arrays)
        record_path = path.with_suffix(".json")
        record = json.loads(record_path.read_text())
        top = np.zeros((len(ranks), 20), dtype=np.int32)
        record.update({f"test_filtered_{k}": v for k, v in summarize(arrays["test_filtered_ranks"], top, [10, 20], N_ITEMS).items()})
        record_path.write_text(json.dumps(record))
    table = accuracy_table(run, run.trials_frame(), config, ranking="filtered")
    assert table.cell("toy", "diffurec", "ndcg@10").verdict == "worse"
    assert accuracy_table(run, run.trials_frame(), config).cell("toy", "diffurec", "ndcg@10").verdict == "better"
    out = write_report(run)
    filtered = (out / "accuracy-filtered.md").read_text()
    assert "seen-filtered" in filtered and "↓" in filtered
    assert "## Accuracy with the user's own items filtered out" in (out / "report.md").read_text()
    assert (out / "accuracy-filtered.tex").exists() and (out / "accuracy-filtered.csv").exists()
