"""Whole suites through Ray Tune: failed trials, SIGKILL and resume, determinism."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import run_bench
from datasets.registry import REPO_ROOT
from tests.conftest import MIRROR



def write_suite(tmp_path, text):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    return str(path)


def only_run(results, suite_name):
    runs = [p for p in (results / suite_name).iterdir() if p.is_dir()]
    assert len(runs) == 1
    return runs[0]


def test_a_diverging_trial_is_marked_failed_and_the_suite_goes_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("bench.tune_runner.HEARTBEAT_SECONDS", 0.0)  # a heartbeat on every step of the run
    suite = write_suite(tmp_path, """
name: failing
datasets: [synthetic]
training: {epochs: 2}
models:
  pop: {model: pop}
  exploding: {model: sasrec, params: {max_len: 10, hidden_size: 8, n_blocks: 1}, training: {lr: 1.0e+6}}
""")
    code = run_bench.main(["--suite", suite, "--results-dir", str(tmp_path / "results")])
    out, err = capsys.readouterr()
    assert code == 1
    assert "still running: synthetic__" in out
    assert "1 trial(s) failed" in err and "synthetic__exploding__seed0" in err and "diverged" in err
    trials = pd.read_csv(only_run(tmp_path / "results", "failing") / "trials.csv").set_index("model")
    assert trials.loc["pop", "status"] == "ok"
    assert trials.loc["exploding", "status"] == "failed"
    assert "training loss became nan" in trials.loc["exploding", "error"]


SLOW_SUITE = """
name: killed
datasets: [synthetic]
training: {epochs: 60, eval_every: 5, patience: 100}
models:
  pop: {model: pop}
  sasrec: {model: sasrec, params: {max_len: 30, hidden_size: 32, n_blocks: 2}}
"""


def test_sigkill_mid_trial_then_resume_finishes_every_trial_exactly_once(tmp_path):
    suite = write_suite(tmp_path, SLOW_SUITE)
    results = tmp_path / "results"
    command = [sys.executable, "run_bench.py", "--suite", suite, "--results-dir", str(results)]
    driver = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    pop_record = None
    while time.monotonic() < deadline and driver.poll() is None:
        found = list(results.glob("killed/*/trials/synthetic__pop__seed0.json"))
        if found:
            pop_record = found[0]
            break
        time.sleep(0.5)
    assert pop_record is not None, "the pop trial never finished"
    run = pop_record.parent.parent
    assert not (run / "trials" / "synthetic__sasrec__seed0.json").exists(), "sasrec finished before the kill"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    pop_written = pop_record.stat().st_mtime_ns
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*")), "a half-written file is visible"

    resumed = subprocess.run(command + ["--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 of 2 trials already finished, 1 to run" in resumed.stdout
    trials = pd.read_csv(run / "trials.csv")
    assert sorted(trials["key"]) == ["synthetic__pop__seed0", "synthetic__sasrec__seed0"]
    assert (trials["status"] == "ok").all()
    assert pop_record.stat().st_mtime_ns == pop_written, "the finished trial was rerun"

    again = subprocess.run(command + ["--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already finished; nothing to run" in again.stdout
    assert len(pd.read_csv(run / "trials.csv")) == 2


@pytest.mark.skipif(not (MIRROR / "ml-100k" / "u.data").is_file(), reason="dataset mirror ../shared/data not present")
def test_same_suite_twice_gives_identical_metrics(tmp_path, capsys):
    suite = write_suite(tmp_path, """
name: twice
datasets: [ml-100k]
training: {epochs: 2}
models:
  sasrec: {model: sasrec, params: {max_len: 20, hidden_size: 16, n_blocks: 1}}
""")
    frames = []
    for attempt in ("a", "b"):
        assert run_bench.main(["--suite", suite, "--results-dir", str(tmp_path / attempt)]) == 0
        frames.append(pd.read_csv(only_run(tmp_path / attempt, "twice") / "trials.csv"))
    capsys.readouterr()
    metrics = [c for c in frames[0].columns if c.startswith(("test_", "valid_"))]
    assert frames[0][metrics].equals(frames[1][metrics])


def test_heartbeat_names_each_running_trial_with_its_time_and_last_validated_epoch():
    from bench.tune_runner import heartbeat_line

    line = heartbeat_line({"b__tiger__seed0": (100.0, 2), "a__sid__seed0": (400.0, None)}, now=4000.0)
    assert line == "    still running: a__sid__seed0 1h00m (first epoch); b__tiger__seed0 1h05m (epoch 2 validated)"


def test_an_unreachable_ray_address_is_one_clear_message(monkeypatch):
    import ray

    from bench.errors import DrbenchError
    from bench.tune_runner import start_ray

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(DrbenchError, match=r"could not connect to the Ray cluster at --address 10.0.0.9:6379 \(Failed to connect.*leave out --address"):
        start_ray("10.0.0.9:6379", debug=False)
