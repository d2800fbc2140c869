"""The command line: clear errors without tracebacks, and whole suites through Ray Tune."""

import re
import sys

import pandas as pd
import pytest

import run_bench
from tests.conftest import MIRROR


TINY_SUITE = """
name: tiny
datasets: [synthetic]
seeds: [0]
training: {epochs: 3, batch_size: 128, eval_every: 1, patience: 2}
models:
  pop: {model: pop}
  sasrec: {model: sasrec, params: {max_len: 20, hidden_size: 16, n_blocks: 1}}
"""


def run(capsys, *argv):
    code = run_bench.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_suite(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("suite_text, message", [
    ("name: x\ndatasets: [ml-100k]\nmodels: {a: {model: sasrecc}}\n", "unknown model 'sasrecc'; registered models: .*pop.*sasrec"),
    ("name: x\ndatasets: [ml-2m]\nmodels: {a: {model: pop}}\n", "unknown dataset 'ml-2m'; known datasets: ml-100k"),
    ("name: x\ndatasets: [synthetic]\nepochs: 3\nmodels: {a: {model: pop}}\n", "unknown key\\(s\\) epochs in suite"),
    ("name: x\ndatasets: [synthetic]\ntraining: {lr: fast}\nmodels: {a: {model: pop}}\n", "training.lr must be of type float, got 'fast'"),
])
def test_bad_suites_fail_with_one_readable_line(tmp_path, capsys, suite_text, message):
    code, out, err = run(capsys, "--suite", write_suite(tmp_path, suite_text), "--results-dir", str(tmp_path / "results"))
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err)
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(not (MIRROR / "ml-100k" / "u.data").is_file(), reason="dataset mirror ../shared/data not present")
@pytest.mark.parametrize("suite_text, message", [
    ("name: x\ndatasets: [ml-1m]\nprotocol: {split: temporal}\nmodels: {a: {model: pop}}\n", "dataset 'ml-1m' has no timestamps.*leave-one-out"),
    ("name: x\ndatasets: [ml-100k]\nprotocol: {ks: [10, 5000], monitor: ndcg@10}\nmodels: {a: {model: pop}}\n", "K = 5000 is larger than the catalogue of 'ml-100k' \\(1682 items\\)"),
])
def test_protocol_problems_with_the_data_fail_before_any_run_folder(tmp_path, capsys, suite_text, message):
    code, _, err = run(capsys, "--suite", write_suite(tmp_path, suite_text), "--results-dir", str(tmp_path / "results"))
    assert code == 2 and re.search(message, err), err
    assert not (tmp_path / "results").exists()


def test_results_directory_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run(capsys, "--suite", write_suite(tmp_path, TINY_SUITE), "--results-dir", str(blocker / "results"))
    assert code == 2 and "cannot create the results directory" in err and "--results-dir" in err


def test_unknown_suite_name(capsys):
    code, _, err = run(capsys, "--suite", "nope")
    assert code == 2 and "unknown suite 'nope'; available suites: " in err and "smoke" in err


def test_missing_data_file_names_path_and_source_before_creating_a_run(tmp_path, capsys):
    empty_root = tmp_path / "data"
    empty_root.mkdir()
    suite = write_suite(tmp_path, "name: x\ndatasets: [ml-100k]\nmodels: {a: {model: pop}}\n")
    code, _, err = run(capsys, "--suite", suite, "--data-root", str(empty_root), "--results-dir", str(tmp_path / "results"))
    assert code == 2
    assert str(empty_root / "ml-100k" / "u.data") in err and "files.grouplens.org/datasets/movielens/ml-100k.zip" in err
    assert not (tmp_path / "results").exists()


def test_debug_shows_the_traceback(capsys):
    code, _, err = run(capsys, "--suite", "nope", "--debug")
    assert code == 2 and "Traceback" in err


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    code, _, err = run(capsys, "--suite", "smoke", "--resume", str(tmp_path))
    assert code == 2 and "is not a drbench run directory" in err


def test_list_datasets_reports_missing_ones_with_their_location(tmp_path, capsys):
    code, out, _ = run(capsys, "--list-datasets", "--data-root", str(tmp_path))
    assert code == 0
    assert "synthetic" in out
    assert f"amazon-cds: put {tmp_path / 'amazon2014' / 'CDs_and_Vinyl' / 'reviews_CDs_and_Vinyl_5.json.gz'}" in out


def test_list_models(capsys):
    code, out, _ = run(capsys, "--list-models")
    assert code == 0 and "sasrec" in out and "max_len=50" in out


def test_tiny_suite_runs_through_ray_and_resume_redoes_nothing(tmp_path, capsys):
    suite = write_suite(tmp_path, TINY_SUITE)
    results = tmp_path / "results"
    code, out, err = run(capsys, "--suite", suite, "--results-dir", str(results))
    assert code == 0, err
    assert "[2/2]" in out
    runs = list((results / "tiny").iterdir())
    assert len(runs) == 1
    trials = pd.read_csv(runs[0] / "trials.csv")
    assert sorted(trials["model"]) == ["pop", "sasrec"] and (trials["status"] == "ok").all()
    assert trials["split_fingerprint"].nunique() == 1
    assert (runs[0] / "results.md").read_text().count("| sasrec") == 1

    code, out, _ = run(capsys, "--suite", suite, "--results-dir", str(results), "--resume")
    assert code == 0 and "already finished; nothing to run" in out
    assert len(pd.read_csv(runs[0] / "trials.csv")) == 2

    (runs[0] / "report" / "accuracy.md").unlink()
    code, out, _ = run(capsys, "--report", str(runs[0]))
    assert code == 0 and "report.md" in out
    assert (runs[0] / "report" / "accuracy.md").is_file() and (runs[0] / "report" / "metrics.png").is_file()


def test_no_ray_runs_the_same_trials_in_process_where_ray_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as on a machine without it
    suite = write_suite(tmp_path, TINY_SUITE)
    results = tmp_path / "results"
    code, out, err = run(capsys, "--suite", suite, "--results-dir", str(results), "--no-ray", "--models", "pop")
    assert code == 0, err
    assert "in this process" in out and "[1/1] synthetic pop seed=0  NDCG@10" in out
    [run_dir] = (results / "tiny").iterdir()
    trials = pd.read_csv(run_dir / "trials.csv")
    assert trials["model"].tolist() == ["pop"] and trials["status"].tolist() == ["ok"]
    assert (run_dir / "trials" / "synthetic__pop__seed0.npz").is_file() and (run_dir / "report" / "report.md").is_file()

    code, out, _ = run(capsys, "--suite", suite, "--results-dir", str(results), "--no-ray", "--models", "pop", "--resume")
    assert code == 0 and "already finished; nothing to run" in out


@pytest.mark.parametrize("option", [["--tune"], ["--address", "auto"]])
def test_no_ray_with_an_option_that_needs_ray_is_a_clear_error(tmp_path, capsys, option):
    code, _, err = run(capsys, "--suite", write_suite(tmp_path, TINY_SUITE), "--results-dir", str(tmp_path / "results"),
                       "--no-ray", *option)
    assert code == 2 and "--no-ray runs trials in this process" in err
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(not (MIRROR / "ml-100k" / "u.data").is_file(), reason="dataset mirror ../shared/data not present")
def test_smoke_suite_runs_every_model_and_sasrec_clearly_beats_pop(tmp_path, capsys):
    from bench.models import model_names

    code, out, err = run(capsys, "--suite", "smoke", "--results-dir", str(tmp_path))
    assert code == 0, err
    run_dir = next((tmp_path / "smoke").iterdir())
    trials = pd.read_csv(run_dir / "trials.csv").set_index("model")
    assert set(trials["model_type"]) == set(model_names()) and (trials["status"] == "ok").all()
    assert trials.loc["sasrec", "test_ndcg@10"] > 1.5 * trials.loc["pop", "test_ndcg@10"]
    steps = pd.read_csv(run_dir / "steps.csv")
    assert set(steps["model"]) == {"diffsasrec-tiny", "diffurec-tiny", "uniform-diffusion-tiny"}
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Accuracy" in report and "## Efficiency" in report and "![pareto](pareto.png)" in report


def test_smoke_falls_back_to_synthetic_data_loudly_when_movielens_is_absent(tmp_path):
    from bench.config import load_suite

    lines = []
    suite = run_bench.apply_fallbacks(load_suite("smoke"), tmp_path, echo=lines.append)
    assert suite.datasets == ["synthetic"]
    assert "dataset 'ml-100k' is not under the data root" in lines[0] and "runs on 'synthetic' instead" in lines[0]
    present = tmp_path / "root" / "ml-100k"
    present.mkdir(parents=True)
    (present / "u.data").write_text("1\t2\t5\t100\n")
    assert run_bench.apply_fallbacks(load_suite("smoke"), tmp_path / "root", echo=lines.append).datasets == ["ml-100k"]
    assert len(lines) == 1


def test_train_budget_caps_every_model_and_rejects_nonsense(tmp_path):
    from bench.config import load_suite
    from bench.tune_runner import trial_specs

    suite = load_suite(write_suite(tmp_path, TINY_SUITE.replace("sasrec: {model: sasrec,", "sasrec: {model: sasrec, training: {max_minutes: 60},")))
    args = run_bench.parse_args(["--suite", "x", "--train-budget", "1.5"])
    assert {spec["training"]["max_minutes"] for spec in trial_specs(run_bench.select(suite, args))} == {1.5}
    with pytest.raises(run_bench.DrbenchError, match="--train-budget must be a positive number of minutes"):
        run_bench.select(suite, run_bench.parse_args(["--suite", "x", "--train-budget", "0"]))
