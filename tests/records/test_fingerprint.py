"""Runs are never mixed: --resume checks the run's fingerprint, reports refuse mixed protocols, paired tests pair the same users."""

import json

import numpy as np
import pytest

import run_bench
from bench.errors import DrbenchError
from bench.records.fingerprint import check_comparable, differences
from bench.records.run_dir import RunDir
from bench.report.significance import check_same_users

SUITE = """
name: tiny
datasets: [synthetic]
seeds: [0]
protocol: {{exclude_history: {exclude}}}
training: {{epochs: 2, patience: 1}}
models:
  pop: {{model: pop}}
  sasrec: {{model: sasrec, params: {{max_len: 20, hidden_size: {hidden}, n_blocks: 1}}}}
"""


def write(tmp_path, name="suite.yaml", exclude="false", hidden=16, suite_name="tiny"):
    path = tmp_path / name
    path.write_text(SUITE.format(exclude=exclude, hidden=hidden).replace("name: tiny", f"name: {suite_name}"))
    return str(path)


def main(capsys, *argv):
    code = run_bench.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fingerprint")
    results = tmp_path / "results"
    assert run_bench.main(["--suite", write(tmp_path), "--results-dir", str(results), "--no-ray"]) == 0
    [run_dir] = (results / "tiny").iterdir()
    return tmp_path, results, run_dir


@pytest.mark.parametrize("change, named", [
    ({"exclude": "true"}, "protocol.exclude_history: run has False, now True"),
    ({"hidden": 32}, "params.hidden_size: run has 16, now 32"),
    ({"suite_name": "other"}, "suite: run has 'tiny', now 'other'"),
])
def test_resume_with_anything_that_decides_the_numbers_changed_is_refused_and_writes_nothing(finished_run, capsys, change, named):
    tmp_path, results, run_dir = finished_run
    before = snapshot(run_dir)
    code, _, err = main(capsys, "--suite", write(tmp_path, "changed.yaml", **change), "--results-dir", str(results),
                        "--no-ray", "--resume", str(run_dir))
    assert code == 2 and named in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert snapshot(run_dir) == before


def test_resume_with_the_same_settings_continues_the_run(finished_run, capsys):
    tmp_path, results, run_dir = finished_run
    code, out, err = main(capsys, "--suite", write(tmp_path), "--results-dir", str(results), "--no-ray", "--resume", str(run_dir),
                          "--models", "pop")
    assert code == 0 and "already finished; nothing to run" in out, err


def test_a_run_without_a_fingerprint_is_not_resumed(finished_run, capsys):
    tmp_path, results, run_dir = finished_run
    run = RunDir(run_dir)
    metadata = run.metadata()
    try:
        run.write_json("suite.json", {k: v for k, v in metadata.items() if k != "fingerprint"})
        code, _, err = main(capsys, "--suite", write(tmp_path), "--results-dir", str(results), "--no-ray", "--resume", str(run_dir))
        assert code == 2 and "recorded no fingerprint" in err
    finally:
        run.write_json("suite.json", metadata)


def test_the_run_records_its_fingerprint_and_provenance(finished_run):
    _, _, run_dir = finished_run
    metadata = json.loads((run_dir / "suite.json").read_text())
    fingerprint = metadata["fingerprint"]
    assert fingerprint["protocol"]["exclude_history"] is False
    assert fingerprint["datasets"]["synthetic"]["split_fingerprint"] == metadata["datasets"]["synthetic"]["split_fingerprint"]
    assert set(fingerprint["trials"]) == {"synthetic__pop__seed0", "synthetic__sasrec__seed0"}
    for key in ("code_commit", "code_dirty", "python_version", "torch_version", "numpy_version", "ray_version", "hardware"):
        assert key in metadata["provenance"]
    record = json.loads((run_dir / "trials" / "synthetic__pop__seed0.json").read_text())
    for key in ("code_commit", "code_dirty", "python_version", "torch_version", "numpy_version", "ray_version", "hardware",
                "device", "torch_threads"):
        assert record[key] not in (None, ""), key
    report = (run_dir / "report" / "accuracy.md").read_text()
    assert f"Trained on {record['hardware']}" in report
    assert "Latency: host histories to a host top-20 list" in (run_dir / "report" / "efficiency.md").read_text()


def test_differences_allow_fewer_trials_and_datasets_and_new_seeds_but_not_new_models():
    recorded = {"suite": "s", "protocol": {"ks": [10]}, "datasets": {"a": {"sha256": "1"}, "b": {"sha256": "2"}},
                "trials": {"a__m__seed0": {"params": {"x": 1}}, "b__m__seed0": {"params": {"x": 1}}}, "tuned": False, "tune": None}
    fewer = {**recorded, "datasets": {"a": {"sha256": "1"}}, "trials": {"a__m__seed0": {"params": {"x": 1}}}}
    assert differences(recorded, fewer) == []
    other_file = {**fewer, "datasets": {"a": {"sha256": "9"}}}
    assert differences(recorded, other_file) == ["datasets.a.sha256: run has '1', now '9'"]
    new_seed = {**recorded, "trials": {**recorded["trials"], "a__m__seed1": {"params": {"x": 1}}}}
    assert differences(recorded, new_seed) == []
    new_model = {**recorded, "trials": {**recorded["trials"], "a__n__seed0": {"params": {"x": 1}}}}
    assert differences(recorded, new_model) == ["trial a__n__seed0 is not part of the run"]


def test_report_refuses_a_run_that_mixes_two_protocols(finished_run, capsys):
    tmp_path, _, run_dir = finished_run
    mixed = RunDir(tmp_path / "mixed")
    mixed.path.mkdir()
    mixed.write_json("suite.json", json.loads((run_dir / "suite.json").read_text()))
    record = json.loads((run_dir / "trials" / "synthetic__pop__seed0.json").read_text())
    arrays = RunDir(run_dir).trial_arrays("synthetic__pop__seed0")
    mixed.write_trial(record, arrays)
    other = {**record, "key": "synthetic__pop__seed1", "seed": 1, "exclude_history": True,
             "protocol": {**record["protocol"], "exclude_history": True}}
    mixed.write_trial(other, arrays)
    code, _, err = main(capsys, "--report", str(mixed.path))
    assert code == 2 and "not produced under one protocol" in err and "exclude_history False vs True" in err, err


def test_check_comparable_names_a_split_fingerprint_difference():
    import pandas as pd

    frame = pd.DataFrame([{"key": "a", "dataset": "d", "status": "ok", "split_fingerprint": "f1", "protocol": "{}"},
                          {"key": "b", "dataset": "d", "status": "ok", "split_fingerprint": "f2", "protocol": "{}"}])
    with pytest.raises(DrbenchError, match="split fingerprint f1 vs f2"):
        check_comparable(frame)


def test_paired_tests_need_the_same_users_of_the_same_split():
    users = np.arange(5)
    check_same_users("d", "m", "ref", {("d", "m"): ("f", users), ("d", "ref"): ("f", users.copy())})
    with pytest.raises(DrbenchError, match="tested on splits f and g"):
        check_same_users("d", "m", "ref", {("d", "m"): ("f", users), ("d", "ref"): ("g", users)})
    with pytest.raises(DrbenchError, match="different users of one split"):
        check_same_users("d", "m", "ref", {("d", "m"): ("f", users), ("d", "ref"): ("f", users[::-1])})


def test_code_is_dirty_for_a_changed_tracked_source_file_but_not_for_a_changed_run_folder(tmp_path, monkeypatch):
    import subprocess

    from bench import provenance

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results" / "run").mkdir(parents=True)
    (tmp_path / "results" / "run" / "trial.json").write_text("{}\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    provenance.code_version.cache_clear()
    (tmp_path / "results" / "run" / "trial.json").write_text('{"latency": "measured alone"}\n')  # a resume updated the run
    assert provenance.code_version()["code_dirty"] is False
    provenance.code_version.cache_clear()
    (tmp_path / "model.py").write_text("x = 2\n")
    assert provenance.code_version()["code_dirty"] is True
    provenance.code_version.cache_clear()


def test_a_run_made_in_parts_takes_the_suites_other_models_and_more_seeds_but_not_changed_settings(tmp_path, capsys):
    results = tmp_path / "results"
    assert run_bench.main(["--suite", write(tmp_path), "--results-dir", str(results), "--no-ray", "--models", "pop"]) == 0
    [run_dir] = (results / "tiny").iterdir()
    metadata = json.loads((run_dir / "suite.json").read_text())
    assert metadata["trial_keys"] == ["synthetic__pop__seed0"]
    assert sorted(metadata["fingerprint"]["trials"]) == ["synthetic__pop__seed0", "synthetic__sasrec__seed0"]  # the whole suite
    assert [m["label"] for m in metadata["config"]["models"]] == ["pop", "sasrec"]  # the tables' order of models
    before = snapshot(run_dir)
    code, _, err = main(capsys, "--suite", write(tmp_path, "wider.yaml", hidden=32), "--results-dir", str(results), "--no-ray",
                        "--resume", str(run_dir), "--models", "sasrec")
    assert code == 2 and "synthetic__sasrec__seed0 params.hidden_size: run has 16, now 32" in err  # edited since the run began
    assert snapshot(run_dir) == before
    same = write(tmp_path, "same.yaml")
    with open(same, "a") as suite:
        suite.write("report: {metrics: [hr@10]}\n")  # report settings do not decide numbers: the run takes the latest
    code, _, err = main(capsys, "--suite", same, "--results-dir", str(results), "--no-ray", "--resume", str(run_dir), "--models", "sasrec")
    assert code == 0, err
    assert json.loads((run_dir / "suite.json").read_text())["config"]["report"]["metrics"] == ["hr@10"]
    code, _, err = main(capsys, "--suite", same, "--results-dir", str(results), "--no-ray",
                        "--resume", str(run_dir), "--models", "pop", "--seeds", "1", "2")
    assert code == 0, err
    metadata = json.loads((run_dir / "suite.json").read_text())
    keys = ["synthetic__pop__seed0", "synthetic__sasrec__seed0", "synthetic__pop__seed1", "synthetic__pop__seed2"]
    assert metadata["trial_keys"] == keys and sorted(metadata["fingerprint"]["trials"]) == sorted(keys)
    assert sorted(RunDir(run_dir).finished_keys()) == sorted(keys)
    assert before.keys() <= snapshot(run_dir).keys()


def test_an_older_run_that_recorded_only_its_own_models_still_refuses_new_ones(tmp_path, capsys):
    results = tmp_path / "results"
    assert run_bench.main(["--suite", write(tmp_path), "--results-dir", str(results), "--no-ray", "--models", "pop"]) == 0
    [run_dir] = (results / "tiny").iterdir()
    run = RunDir(run_dir)
    fingerprint = run.metadata()["fingerprint"]
    run.update_metadata(fingerprint={**fingerprint, "trials": {"synthetic__pop__seed0": fingerprint["trials"]["synthetic__pop__seed0"]}})
    code, _, err = main(capsys, "--suite", write(tmp_path), "--results-dir", str(results), "--no-ray", "--resume", str(run_dir),
                        "--models", "sasrec")
    assert code == 2 and "trial synthetic__sasrec__seed0 is not part of the run" in err


def test_a_new_seed_whose_settings_differ_from_the_runs_own_seed_is_refused():
    recorded = {"trials": {"d__m__seed0": {"model": "sasrec", "params": {"hidden_size": 16}}}}
    same = {"trials": {"d__m__seed1": {"model": "sasrec", "params": {"hidden_size": 16}}}}
    other = {"trials": {"d__m__seed1": {"model": "sasrec", "params": {"hidden_size": 32}}}}
    assert differences(recorded, same) == []
    assert differences(recorded, other) == ["d__m__seed1 params.hidden_size: run has 16, now 32"]
    assert differences(recorded, {"trials": {"d__n__seed0": {"model": "sasrec"}}}) == ["trial d__n__seed0 is not part of the run"]
