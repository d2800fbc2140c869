"""The command line: clear errors without tracebacks, and whole suites through Ray Tune."""

import gzip
import json
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
    from bench.models.base import model_names

    code, out, err = run(capsys, "--suite", "smoke", "--results-dir", str(tmp_path))
    assert code == 0, err
    run_dir = next((tmp_path / "smoke").iterdir())
    trials = pd.read_csv(run_dir / "trials.csv").set_index("model")
    assert set(trials["model_type"]) == set(model_names()) and (trials["status"] == "ok").all()
    assert trials.loc["sasrec", "test_ndcg@10"] > 1.5 * trials.loc["pop", "test_ndcg@10"]
    # a newcomer's first run shows every model learning: each tiny model above popularity (the weakest is ~1.3x)
    learned = trials.drop(index="pop")["test_ndcg@10"] / trials.loc["pop", "test_ndcg@10"]
    assert (learned > 1.2).all(), learned.to_dict()
    steps = pd.read_csv(run_dir / "steps.csv")
    assert set(steps["model"]) == {"diffurec-tiny"}  # uniform diffusion has no steps sweep: its steps change nothing
    report = (run_dir / "report" / "report.md").read_text()
    assert "## Accuracy" in report and "## Efficiency" in report and "![pareto](pareto.png)" in report


def test_smoke_falls_back_to_synthetic_data_loudly_when_movielens_is_absent(tmp_path):
    from bench.run.config import load_suite

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
    from bench.run.config import load_suite
    from bench.run.engine import trial_specs

    suite = load_suite(write_suite(tmp_path, TINY_SUITE.replace("sasrec: {model: sasrec,", "sasrec: {model: sasrec, training: {max_minutes: 60},")))
    args = run_bench.parse_args(["--suite", "x", "--train-budget", "1.5"])
    assert {spec["training"]["max_minutes"] for spec in trial_specs(run_bench.select(suite, args))} == {1.5}
    with pytest.raises(run_bench.DrbenchError, match="--train-budget must be a positive number of minutes"):
        run_bench.select(suite, run_bench.parse_args(["--suite", "x", "--train-budget", "0"]))


# --- custom data files given by any path, preprocessing counts, broken inputs -------------------------------------------

POP_SUITE = "name: custom\ndatasets: [synthetic]\nseeds: [0]\nmodels:\n  pop: {model: pop}\n"
WEIRD_DIR = "data dir"  # its sub-folder has spaces, '=', '&' and '?' in its name


def weird_seq_file(root):
    folder = root / WEIRD_DIR / "v=1&mode=x?y z"
    folder.mkdir(parents=True)
    lines = [" ".join(str(v) for v in [u] + [(u * 7 + 3 * i) % 40 + 1 for i in range(4 + u % 9)] + [(u * 7) % 40 + 1])
             for u in range(1, 80)]
    path = folder / "my sequences.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def files_mentioning(folder, text):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes())


@pytest.fixture(scope="module")
def custom_file_run(tmp_path_factory):
    """One --no-ray run of pop on a seq: file named by an absolute path full of special characters."""
    import contextlib
    import io

    from bench.data.registry import dataset_label

    tmp = tmp_path_factory.mktemp("custom")
    path = weird_seq_file(tmp)
    spec = f"seq:{path}"
    suite = write_suite(tmp, POP_SUITE)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_bench.main(["--suite", suite, "--datasets", spec, "--no-ray", "--results-dir", str(tmp / "results")])
    [run_dir] = (tmp / "results" / "custom").iterdir()
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "run": run_dir, "label": dataset_label(spec),
            "data_dir": str(tmp / WEIRD_DIR), "spec": spec}


def test_a_seq_file_by_absolute_path_with_special_characters_runs_without_ray(custom_file_run):
    run, label = custom_file_run["run"], custom_file_run["label"]
    assert custom_file_run["code"] == 0, custom_file_run["err"]
    assert label.startswith("seq-my-sequences-") and "/" not in label
    out = custom_file_run["out"]
    assert f"dataset {label} ({custom_file_run['spec']}): 79 users" in out
    assert f"    {label}: dedup keep: " in out and "repeated (user, item) interactions kept" in out
    assert f"[1/1] {label} pop seed=0  NDCG@10" in out
    assert (run / "trials" / f"{label}__pop__seed0.json").is_file()
    trials = pd.read_csv(run / "trials.csv")
    assert trials["dataset"].tolist() == [label] and trials["status"].tolist() == ["ok"]
    described = json_of(run / "suite.json")["datasets"][label]
    assert described["source"] == "my sequences.txt" and len(described["sha256"]) == 64
    assert described["spec"] == "seq:<outside data root>/my sequences.txt"
    assert described["preprocess"]["dedup"] == "keep" and described["steps"][0]["step"] == "dedup"
    assert described["split"]["users_evaluated"] == 79
    leaks = files_mentioning(run, custom_file_run["data_dir"])
    assert [leak for leak in leaks if leak != "suite.json"] == []
    assert custom_file_run["data_dir"] not in json.dumps(json_of(run / "suite.json")["datasets"])


def test_suite_json_keeps_no_absolute_path_of_the_data_file(custom_file_run):
    # Needs command_suite to write portable_suite_config(asdict(suite), data_root) as "config".
    assert files_mentioning(custom_file_run["run"], custom_file_run["data_dir"]) == []


def json_of(path):
    return json.loads(path.read_text())


def test_a_seq_file_by_absolute_path_with_special_characters_runs_through_ray(tmp_path, capsys):
    from bench.data.registry import dataset_label

    spec = f"seq:{weird_seq_file(tmp_path)}"
    code, out, err = run(capsys, "--suite", write_suite(tmp_path, POP_SUITE), "--datasets", spec, "--results-dir", str(tmp_path / "results"))
    assert code == 0, err
    label = dataset_label(spec)
    assert "on Ray" in out and f"[1/1] {label} pop seed=0  NDCG@10" in out
    [run_dir] = (tmp_path / "results" / "custom").iterdir()
    assert pd.read_csv(run_dir / "trials.csv")["status"].tolist() == ["ok"]
    assert (run_dir / "trials" / f"{label}__pop__seed0.json").is_file()


def test_preprocessing_steps_are_printed_with_counts_and_recorded(tmp_path):
    from bench.run.config import parse_suite
    from bench.run.engine import prepare_splits
    from bench.data.registry import dataset_label

    path = tmp_path / "log.csv"
    rows = ["user_id,item_id,rating,timestamp"] + [f"u{u},i{(u + k) % 12},{1 + (u + k) % 5},{k}" for u in range(30) for k in range(8)]
    rows += ["u0,i0,5,100", "u1,i1,5,100", "lonely,i99,5,1"]  # two repeats, a user and an item under the 2-core
    path.write_text("\n".join(rows) + "\n")
    spec = f"csv:{path}"
    suite = parse_suite({"name": "t", "datasets": [spec], "models": {"pop": {"model": "pop"}},
                         "protocol": {"min_rating": 2.0, "core": 2, "ks": [5, 10]}}, "t.yaml")
    lines = []
    splits, described = prepare_splits(suite, tmp_path, echo=lines.append)
    label = dataset_label(spec)
    assert list(splits) == [label] and splits[spec] is splits[label]
    steps = {s["step"]: s for s in described[label]["steps"]}
    assert steps["min_rating"]["dropped"] == 48 and steps["dedup"]["policy"] == "first" and steps["dedup"]["dropped"] >= 1
    assert steps["k-core"]["users_dropped"] == 1 and steps["k-core"]["items_dropped"] == 1
    assert any(line.startswith(f"    {label}: min_rating 2: dropped 48 interactions rated below it") for line in lines)
    assert any(line.startswith(f"    {label}: dedup first: dropped ") for line in lines)
    assert any(line.startswith(f"    {label}: 2-core: dropped ") and "1 users and 1 items" in line for line in lines)
    assert described[label]["spec"] == "csv:log.csv"
    assert str(tmp_path) not in json.dumps(described)


def _truncated_gzip(path):
    packed = gzip.compress("".join(f"{u} {u % 50 + 1} {u % 49 + 2} {u % 47 + 3}\n" for u in range(1, 30000)).encode())
    path.write_bytes(packed[: len(packed) // 2])


@pytest.mark.parametrize("name, make, message", [
    ("seqs.txt.gz", _truncated_gzip, "is truncated"),
    ("seqs.txt.gz", lambda p: p.write_text("1 2 3\n"), "is not a gzip file"),
    ("seqs.txt", lambda p: p.mkdir(), "is a directory, not a data file"),
])
def test_a_broken_data_file_is_one_line_exit_2_and_no_run_folder(tmp_path, capsys, name, make, message):
    make(tmp_path / name)
    code, _, err = run(capsys, "--suite", write_suite(tmp_path, POP_SUITE), "--datasets", f"seq:{tmp_path / name}",
                       "--no-ray", "--results-dir", str(tmp_path / "results"))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and str(tmp_path / name) in err
    assert not (tmp_path / "results").exists()


def test_a_tab_in_the_suite_file_is_one_line(tmp_path, capsys):
    suite = write_suite(tmp_path, "name: x\ndatasets: [synthetic]\nmodels:\n\tpop: {model: pop}\n")
    code, _, err = run(capsys, "--suite", suite, "--results-dir", str(tmp_path / "results"))
    assert code == 2 and err.count("\n") == 1 and "line 4, column 1" in err and "use spaces" in err, err


def test_a_seed_that_is_not_an_integer_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_bench.main(["--suite", "smoke", "--seeds", "1", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "'x' is not a seed" in err, err


def test_list_datasets_shows_what_the_default_dedup_drops(tmp_path, capsys):
    path = tmp_path / "ml-100k" / "u.data"
    path.parent.mkdir()
    path.write_text("1\t2\t5\t100\n1\t3\t4\t200\n1\t2\t3\t300\n")
    code, out, _ = run(capsys, "--list-datasets", "--data-root", str(tmp_path))
    assert code == 0
    header = next(line for line in out.splitlines() if line.startswith("dataset"))
    assert header.rstrip().endswith("repeats dropped")
    row = next(line for line in out.splitlines() if line.startswith("ml-100k"))
    assert row.split()[1:4] == ["1", "2", "2"] and row.split()[-1] == "1"
    assert "removed by the default dedup" in out
