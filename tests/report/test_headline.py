"""The headline table of a run report: verdict in words, cost at the tested steps, published gap from several sources."""

import json

import numpy as np
import pandas as pd
import pytest

import bench.report.published as published_module
from bench.checked import build_config
from bench.errors import DrbenchError
from bench.records.run_dir import RunDir
from bench.report.paper import headline_metrics, write_report
from bench.report.settings import ReportConfig
from tests.report.test_paper import N_USERS, _record, run  # noqa: F401 (run: the fixture of a hand-made three-model run)

SOURCES = """
main-src:
  citation: Main paper, Table 1.
  protocol: leave-one-out
  scale: 100
  checked: by hand
  results:
    toy:
      SASRec: {ndcg@10: 5.0}
other-src:
  citation: Other paper, Table 2.
  protocol: leave-one-out
  scale: 1
  checked: by hand
  results:
    toy:
      DiffuRec: {ndcg@10: 0.08, hr@10: 0.3}
"""


@pytest.fixture
def sources(tmp_path, monkeypatch):
    path = tmp_path / "published.yaml"
    path.write_text(SOURCES)
    monkeypatch.setattr(published_module, "PUBLISHED_FILE", path)


def _with_report(run, report: dict) -> None:
    run.update_metadata(config=run.metadata()["config"] | {"report": report})


def _row(markdown: str, model: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| {model} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_headline_gives_verdicts_in_words_cost_at_tested_steps_and_gaps_from_two_sources(run, sources):
    _with_report(run, {"metrics": ["hr@10", "ndcg@10"], "published": "main-src",
                       "published_models": {"sasrec": "SASRec", "diffurec": "other-src:DiffuRec"}})
    path = run.path / "trials" / "toy__diffurec__seed1.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"stop_reason": "epoch cap", "converged": False}))
    out = write_report(run)
    markdown = (out / "headline.md").read_text()
    csv = pd.read_csv(out / "headline.csv").set_index("model")

    assert list(csv.index) == ["pop", "sasrec", "diffurec"]  # the suite's order; the failed model has no row
    header = [cell.strip() for cell in markdown.splitlines()[2].strip("|").split("|")]
    assert header == ["model", "NDCG@10", "HR@10", "vs sasrec", "s to best", "ms/user p50", "NDCG@10 published", "gap"]
    assert csv["verdict"].to_dict() == {"pop": "baseline", "sasrec": "best baseline", "diffurec": "better"}

    diffurec = _row(markdown, "diffurec ‡")
    assert diffurec[0] == "diffurec ‡" and "‡" not in "".join(diffurec[1:])  # the model is marked once
    assert diffurec[1].endswith("†") and "±" in diffurec[1] and diffurec[3] == "better"
    assert "‡" not in _row(markdown, "sasrec")[0] and csv.loc["diffurec", "not_converged_seeds"] == 1
    assert "not converged" in markdown

    # timed at its configured 8 steps (the sweep's 8.0 ms), not at 1 step nor from the trial-level record (1.0 ms)
    assert csv.loc["diffurec", "latency_steps"] == 8 and csv.loc["diffurec", "latency_p50_ms"] == pytest.approx(8.0)
    assert diffurec[4:6] == ["2.50", "8.00"]

    mean = csv.loc["diffurec", "ndcg@10_mean"]
    assert csv.loc["diffurec", "published_source"] == "other-src" and csv.loc["diffurec", "published"] == pytest.approx(0.08)
    assert csv.loc["diffurec", "gap"] == pytest.approx((mean - 0.08) / 0.08)
    assert diffurec[6:] == ["0.0800", f"{(mean - 0.08) / 0.08:+.1%}"]
    assert csv.loc["sasrec", "published"] == pytest.approx(0.05) and _row(markdown, "pop")[6:] == ["–", "–"]
    assert "Published: Main paper, Table 1 (sasrec); Other paper, Table 2 (diffurec)." in markdown

    published = (out / "published.md").read_text()
    assert "Published (main-src): Main paper" in published and "Published (other-src): Other paper" in published
    assert "diffurec (DiffuRec, other-src)" in published
    report = (out / "report.md").read_text()
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["## Headline", "## Accuracy"] and "## Measured vs published (main-src, other-src)" in sections


def test_worse_and_no_detectable_difference_read_in_words(tmp_path):
    rng = np.random.default_rng(2)
    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "protocol": {"monitor": "ndcg@10"},
                                                     "models": [{"label": m} for m in ("sasrec", "worse", "same")],
                                                     "report": {"metrics": ["ndcg@10", "ndcg@20", "hr@20"]}}})
    users = np.arange(N_USERS, dtype=np.int32)
    base = rng.integers(1, 40, N_USERS)
    for model, model_type, ranks in (("sasrec", "sasrec", base), ("worse", "diffurec", base + 8), ("same", "diffsasrec", base)):
        run.write_trial(_record(model, model_type, 0, ranks), {"test_users": users, "test_ranks": ranks.astype(np.int32)})
    markdown = (write_report(run) / "headline.md").read_text()
    assert markdown.splitlines()[2].replace(" ", "").startswith("|model|NDCG@10|NDCG@20|vssasrec|")  # no HR@10: the first two metrics
    assert _row(markdown, "worse")[1].endswith("↓") and _row(markdown, "worse")[3] == "worse"
    assert _row(markdown, "same")[3] == "no detectable difference" and _row(markdown, "sasrec")[3] == "best baseline"
    assert "published" not in markdown.splitlines()[2] and "one seed, so no std" in markdown


def test_without_a_comparison_the_verdict_column_reads_a_dash(tmp_path):
    run = RunDir.create(tmp_path, "toy", {"config": {"datasets": ["toy"], "models": [{"label": "pop"}, {"label": "sasrec"}]}})
    users = np.arange(N_USERS, dtype=np.int32)
    for model in ("pop", "sasrec"):
        ranks = np.arange(1, N_USERS + 1, dtype=np.int32) % 40 + 1
        run.write_trial(_record(model, model, 0, ranks), {"test_users": users, "test_ranks": ranks})
    markdown = (write_report(run) / "headline.md").read_text()
    assert "vs best baseline" in markdown.splitlines()[2]
    assert _row(markdown, "pop")[3] == "–" and _row(markdown, "sasrec")[3] == "–"
    assert "No significance test" in markdown


def test_headline_metrics_prefer_ndcg_and_hr_at_10():
    assert headline_metrics(["hr@10", "hr@20", "ndcg@10", "ndcg@20"]) == ["ndcg@10", "hr@10"]
    assert headline_metrics(["mrr@5", "hr@5", "ndcg@5"]) == ["mrr@5", "hr@5"]


@pytest.mark.parametrize("report, message", [
    ({"published": "diffurec-tois2023", "published_models": {"tiger": "tiger-2099:TIGER"}},
     "report.published_models.tiger: unknown published source 'tiger-2099'"),
    ({"published_models": {"tiger": "tiger-neurips2023:TIGER"}}, "report.published_models needs report.published"),
    ({"published": "diffurec-tois2023", "published_models": {"tiger": "tiger-neurips2023:"}}, "names no model"),
])
def test_a_bad_published_source_is_one_readable_line(report, message):
    with pytest.raises(DrbenchError, match=message) as error:
        build_config(ReportConfig, report, "report")
    assert "\n" not in str(error.value)


def test_a_prefixed_model_from_another_real_source_is_accepted():
    config = build_config(ReportConfig, {"published": "diffurec-tois2023",
                                         "published_models": {"diffurec": "DiffuRec", "tiger": "tiger-neurips2023:TIGER"}}, "report")
    assert config.published_models["tiger"] == "tiger-neurips2023:TIGER"


def test_paper_columns_of_the_accuracy_table_take_a_prefixed_model_from_its_own_source(run, sources):
    _with_report(run, {"metrics": ["ndcg@10"], "layout": "metrics_as_rows", "published": "main-src",
                       "published_models": {"sasrec": "SASRec", "diffurec": "other-src:DiffuRec"}})
    accuracy = (write_report(run) / "accuracy.md").read_text()
    header, _, row = accuracy.splitlines()[:3]
    assert "SASRec (paper)" in header and "DiffuRec (paper)" in header
    assert "0.0500" in row and "0.0800" in row
    assert "published by Main paper, Table 1 (sasrec); Other paper, Table 2 (diffurec)." in accuracy


def _set_hardware(run, hardware_by_key: dict[str, str]) -> None:
    for key, hardware in hardware_by_key.items():
        path = run.path / "trials" / f"{key}.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"hardware": hardware, "latency_method": f"timed on {hardware}"}))


def test_trials_from_two_machines_are_labelled_per_row_in_the_headline_and_efficiency_tables(run):
    # a suite run in parts can land on different CPUs: time and latency then compare only within one machine
    _set_hardware(run, {"toy__pop__seed0": "CPU one", "toy__pop__seed1": "CPU one", "toy__sasrec__seed0": "CPU one",
                        "toy__sasrec__seed1": "CPU two", "toy__diffurec__seed0": "CPU two", "toy__diffurec__seed1": "CPU two"})
    out = write_report(run)
    markdown = (out / "headline.md").read_text()
    header = [cell.strip() for cell in markdown.splitlines()[2].strip("|").split("|")]
    assert header == ["model", "NDCG@10", "HR@10", "vs sasrec", "machine", "s to best", "ms/user p50"]
    assert [_row(markdown, m)[4] for m in ("pop", "sasrec", "diffurec")] == ["A", "A+B", "B"]
    assert "A = CPU one; B = CPU two" in markdown and "compare reliably only between rows of one machine" in markdown
    assert "Latency: timed on the row's machine." in markdown and "timed on CPU" not in markdown  # the method once, not per machine
    csv = pd.read_csv(out / "headline.csv").set_index("model")
    assert csv.loc["sasrec", "hardware"] == "CPU one + CPU two" and csv.loc["diffurec", "machine"] == "B"

    efficiency = (out / "efficiency.md").read_text()
    assert efficiency.splitlines()[0].replace(" ", "").startswith("|dataset|model|machine|steps|")
    diffurec_rows = [line for line in efficiency.splitlines() if line.startswith("| toy ") and " diffurec " in line]
    assert len(diffurec_rows) == 2 and all("| B " in line for line in diffurec_rows)  # every step row of the sweep
    assert "A = CPU one" in efficiency
    assert "\\begin{tabular}{lllrrr" in (out / "efficiency.tex").read_text()  # dataset, model, machine left-aligned


def test_one_machine_needs_no_machine_column(run):
    _set_hardware(run, {f"toy__{m}__seed{s}": "CPU one" for m in ("pop", "sasrec", "diffurec") for s in (0, 1)})
    out = write_report(run)
    assert "machine" not in (out / "headline.md").read_text() and "machine" not in (out / "efficiency.md").read_text()
    assert pd.read_csv(out / "headline.csv")["hardware"].eq("CPU one").all()


def test_the_suites_setup_sentence_opens_every_tables_caption(run):
    _with_report(run, {"metrics": ["ndcg@10", "hr@10"], "setup": "Every model at hidden 64,\n  nothing tuned"})
    out = write_report(run)
    setup = "Every model at hidden 64, nothing tuned. "
    for name, first_words in (("headline.md", "Test NDCG@10"), ("accuracy.md", "Test metrics"), ("efficiency.md", "Means over seeds")):
        assert (setup + first_words) in (out / name).read_text(), name
    assert r"\caption{Every model at hidden 64, nothing tuned. Test metrics" in (out / "accuracy.tex").read_text()
    assert "Efficiency: parameters" in (out / "efficiency.tex").read_text()
    assert "nothing tuned. Means over seeds" in (out / "efficiency.tex").read_text()


def test_without_a_setup_sentence_captions_open_with_the_metrics(run):
    markdown = (write_report(run) / "headline.md").read_text()
    assert markdown.split("\n\n")[-1].startswith("Test NDCG@10 and HR@10")
