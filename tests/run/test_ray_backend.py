"""Whole suites through Ray Tune: failed trials, SIGKILL and resume, determinism."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import run_bench
from bench.data.registry import REPO_ROOT
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
    monkeypatch.setattr("bench.run.engine.HEARTBEAT_SECONDS", 0.0)  # a heartbeat on every step of the run
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
    pop_trained = json.loads(pop_record.read_text())
    assert not any(p.name.endswith(".tmp") for p in run.rglob("*")), "a half-written file is visible"

    resumed = subprocess.run(command + ["--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 of 2 trials already finished, 1 to run" in resumed.stdout
    trials = pd.read_csv(run / "trials.csv")
    assert sorted(trials["key"]) == ["synthetic__pop__seed0", "synthetic__sasrec__seed0"]
    assert (trials["status"] == "ok").all()
    # the finished trial is not trained again; only its latency, pending when the driver died, is measured now
    pop_timed = json.loads(pop_record.read_text())
    assert pop_trained["latency"] == "pending" and pop_timed["latency"] == "measured alone"
    assert {k: v for k, v in pop_timed.items() if not k.startswith("latency") and k != "users_per_s"} == \
        {k: v for k, v in pop_trained.items() if k != "latency"}, "the finished trial was rerun"

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
    from bench.run.progress import heartbeat_line

    line = heartbeat_line({"b__tiger__seed0": (100.0, 2), "a__sid__seed0": (400.0, None)}, now=4000.0)
    assert line == "    still running: a__sid__seed0 1h00m (first epoch); b__tiger__seed0 1h05m (epoch 2 validated)"


def test_an_unreachable_ray_address_is_one_clear_message(monkeypatch):
    import ray

    from bench.errors import DrbenchError
    from bench.run.ray_backend import start_ray

    def refuse(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.9:6379")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(DrbenchError, match=r"could not connect to the Ray cluster at --address 10.0.0.9:6379 \(Failed to connect.*leave out --address"):
        start_ray("10.0.0.9:6379", debug=False)


# ---- Ray cluster tests: a real two-node Ray cluster on loopback, a trial's worker SIGKILLed mid-run ----

RETRY_SUITE = """
name: {name}
datasets: [synthetic]
training: {{epochs: 6, eval_every: 1, patience: 100}}
resources: {resources}
models:
{models}
"""
SMALL_SASREC = "{model: sasrec, params: {max_len: 20, hidden_size: 16, n_blocks: 1}}"


@pytest.fixture(scope="module")
def loopback_cluster():
    """A head node and a worker node (1 CPU each), both bound to 127.0.0.1; always shut down."""
    import ray
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    with pytest.MonkeyPatch.context() as patch:
        # Ray turns a 127.0.0.1 address into this machine's outward IP before connecting
        # (services.resolve_ip_for_localhost); this keeps the driver on loopback with the nodes.
        patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
        cluster = None
        try:
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1",
                                                                    "include_dashboard": False})
            cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes(timeout=60)
            yield cluster
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if cluster is not None:
                cluster.shutdown()


def run_on_cluster(cluster, tmp_path, monkeypatch, suite_text, kill_label=None, kills=1, limit_s=150):
    """Run a suite through run_suite on ``cluster``; SIGKILL the worker of trial ``kill_label`` after each of its
    first ``kills`` attempts has reported an epoch. Returns (failed count, printed lines, run, kills, starts per key)."""
    import os
    from pathlib import Path

    import yaml

    import bench.run.ray_backend as tune_runner
    from bench.run.engine import prepare_splits, run_suite
    from bench.run.config import parse_suite
    from bench.records.run_dir import RunDir

    suite = parse_suite(yaml.safe_load(suite_text))
    killed, starts, attempt_killed = [], {}, set()
    real_make_callback = tune_runner.make_callback

    def make_callback(*args, **kwargs):
        callback = real_make_callback(*args, **kwargs)
        real_start, real_result = callback.on_trial_start, callback.on_trial_result

        def on_trial_start(iteration, trials, trial, **info):
            key = trial.config["spec"]["key"]
            starts[key] = starts.get(key, 0) + 1
            real_start(iteration=iteration, trials=trials, trial=trial, **info)

        def on_trial_result(iteration, trials, trial, result, **info):
            real_result(iteration=iteration, trials=trials, trial=trial, result=result, **info)
            key = trial.config["spec"]["key"]
            if (trial.config["spec"]["label"] == kill_label and "epoch" in result and not result.get("finished")
                    and len(killed) < kills and starts[key] not in attempt_killed):
                attempt_killed.add(starts[key])
                assert result["node_ip"] == "127.0.0.1"
                killed.append(result["pid"])  # the pid of the trial's worker process (Tune fills it in)
                os.kill(result["pid"], signal.SIGKILL)

        callback.on_trial_start, callback.on_trial_result = on_trial_start, on_trial_result
        return callback

    monkeypatch.setattr(tune_runner, "make_callback", make_callback)
    lines = []

    def too_long(signum, frame):
        raise TimeoutError(f"the suite did not finish within {limit_s}s on the test cluster")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(limit_s)
    try:
        run = RunDir.create(tmp_path / "results", suite.name, {})
        splits, _ = prepare_splits(suite, Path(tmp_path / "no-data"), echo=lines.append)
        failed = run_suite(suite, run, splits, tune_runner.RayBackend(cluster.address), echo=lines.append)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return failed, lines, run, killed, starts


def trial_records(run):
    import json

    return {p.stem: json.loads(p.read_text()) for p in sorted(run.trials_dir.glob("*.json"))}


@pytest.mark.ray_cluster
def test_ray_cluster_a_trial_whose_worker_is_killed_is_retried_and_the_suite_ends_with_every_trial_once_ok(
        loopback_cluster, tmp_path, monkeypatch):
    import re

    suite = RETRY_SUITE.format(name="retried", resources="{}", models=f"  pop: {{model: pop}}\n  sasrec: {SMALL_SASREC}")
    failed, lines, run, killed, starts = run_on_cluster(loopback_cluster, tmp_path, monkeypatch, suite, kill_label="sasrec")
    out = "\n".join(lines)
    assert failed == 0, out
    assert len(killed) == 1, out
    assert "running 2 trials on Ray (2 CPUs" in out  # both nodes of the cluster
    retry_lines = [line for line in lines if "retrying" in line]
    assert len(retry_lines) == 1, out
    assert re.fullmatch(rf"    synthetic__sasrec__seed0: worker died \(pid {killed[0]} on 127\.0\.0\.1: [^()]+\); "
                        r"retrying \(attempt 2 of 2\)", retry_lines[0]), retry_lines[0]
    assert starts == {"synthetic__pop__seed0": 1, "synthetic__sasrec__seed0": 2}
    records = trial_records(run)
    assert sorted(records) == ["synthetic__pop__seed0", "synthetic__sasrec__seed0"]
    assert all(r["status"] == "ok" for r in records.values()), out
    # the record is the last attempt's alone: its validation curve is one full run, nothing of the killed one
    assert [h["epoch"] for h in records["synthetic__sasrec__seed0"]["history"]] == [1, 2, 3, 4, 5, 6]
    assert records["synthetic__sasrec__seed0"]["epochs_run"] == 6
    progress = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == ["[1/2", "[2/2"], out
    trials = pd.read_csv(run.path / "trials.csv")
    assert sorted(trials["key"]) == ["synthetic__pop__seed0", "synthetic__sasrec__seed0"] and (trials["status"] == "ok").all()


@pytest.mark.ray_cluster
def test_ray_cluster_a_worker_that_dies_on_every_attempt_is_recorded_failed_once_naming_the_fix(
        loopback_cluster, tmp_path, monkeypatch):
    suite = RETRY_SUITE.format(name="dying", resources="{max_retries: 1}",
                               models=f"  pop: {{model: pop}}\n  sasrec: {SMALL_SASREC}")
    failed, lines, run, killed, starts = run_on_cluster(loopback_cluster, tmp_path, monkeypatch, suite,
                                                        kill_label="sasrec", kills=2)
    out = "\n".join(lines)
    assert failed == 1 and len(killed) == 2, out
    assert len([line for line in lines if "retrying (attempt 2 of 2)" in line]) == 1, out
    records = trial_records(run)
    assert sorted(records) == ["synthetic__pop__seed0", "synthetic__sasrec__seed0"]
    assert records["synthetic__pop__seed0"]["status"] == "ok"
    dead = records["synthetic__sasrec__seed0"]
    assert dead["status"] == "failed"
    assert dead["error"].startswith(f"the trial's worker died 2 times (pid {killed[1]} on 127.0.0.1: ")
    assert dead["error"].endswith("raise resources.max_retries or give trials more memory")
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == ["[1/2", "[2/2"], out


@pytest.mark.ray_cluster
def test_ray_cluster_an_exception_inside_the_model_fails_fast_without_a_retry(loopback_cluster, tmp_path, monkeypatch):
    exploding = "{model: sasrec, params: {max_len: 10, hidden_size: 8, n_blocks: 1}, training: {lr: 1.0e+6}}"
    suite = RETRY_SUITE.format(name="raising", resources="{max_retries: 3}", models=f"  exploding: {exploding}")
    failed, lines, run, killed, starts = run_on_cluster(loopback_cluster, tmp_path, monkeypatch, suite)
    out = "\n".join(lines)
    assert failed == 1 and not killed
    assert starts == {"synthetic__exploding__seed0": 1}, "the failed trial was retried"
    assert not any("retrying" in line for line in lines), out
    (record,) = trial_records(run).values()
    assert record["status"] == "failed" and "training loss became nan" in record["error"]
    assert [line.split("]")[0] for line in lines if line.startswith("[")] == ["[1/1"], out


@pytest.mark.ray_cluster
@pytest.mark.usefixtures("plugin_sandbox")
def test_ray_cluster_a_plugin_model_trains_and_is_timed_on_the_cluster(loopback_cluster, tmp_path, monkeypatch):
    import shutil

    plugin = tmp_path / "my-code" / "item_knn.py"
    plugin.parent.mkdir()
    shutil.copy(REPO_ROOT / "examples" / "item_knn.py", plugin)
    suite = RETRY_SUITE.format(name="plugged", resources="{}", models="  pop: {model: pop}\n  item-knn: {model: item_knn}")
    failed, lines, run, killed, starts = run_on_cluster(loopback_cluster, tmp_path, monkeypatch, suite + f"plugins: ['{plugin}']\n")
    out = "\n".join(lines)
    assert failed == 0, out
    assert "running 2 trials on Ray (2 CPUs" in out  # both nodes of the cluster
    record = trial_records(run)["synthetic__item-knn__seed0"]
    assert record["status"] == "ok" and record["test_ndcg@10"] > 0.3
    assert record["latency"] == "measured alone"  # a Ray task read the trained model back: it imported the plugin first


@pytest.mark.parametrize("value, ok", [(None, True), (0, True), (3, True), (-1, False)])
def test_resources_max_retries_defaults_to_one_and_must_not_be_negative(value, ok):
    from bench.run.config import ResourcesConfig, build_config
    from bench.errors import DrbenchError

    values = {} if value is None else {"max_retries": value}
    if ok:
        assert build_config(ResourcesConfig, values, "resources").max_retries == (1 if value is None else value)
    else:
        with pytest.raises(DrbenchError, match="resources.max_retries must be >= 0, got -1"):
            build_config(ResourcesConfig, values, "resources")


@pytest.mark.ray_cluster
def test_without_an_address_a_suite_starts_its_own_ray_and_never_joins_one_already_running(loopback_cluster):
    # a second suite on the same machine (here: the test cluster) must not be joined, or this run
    # would stall when that one ends
    import ray

    from bench.run.ray_backend import start_ray

    start_ray(None, debug=False)
    try:
        assert ray.get_runtime_context().gcs_address != loopback_cluster.address
        assert len([node for node in ray.nodes() if node["Alive"]]) == 1  # the test cluster has two nodes
    finally:
        ray.shutdown()
