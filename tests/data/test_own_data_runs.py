"""The user's own data end to end: run_bench.py started in a folder outside the repository, with a dataset card
next to its data (then resumed, refused a changed card, reported) and with a recbole: file."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import run_bench
from bench.data.registry import dataset_label, use_dataset_cards
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
SUITE = "name: own\ndatasets: [synthetic]\nseeds: [0]\nmodels:\n  pop: {model: pop}\n"
DATA_DIR = "my data"  # the card and its log, in a folder with a space in its name


@pytest.fixture(scope="module")
def card_run(tmp_path_factory):
    """One run as a user starts it: a fresh folder outside the repository holding the suite, the card and the log."""
    work = tmp_path_factory.mktemp("own-data")
    (work / DATA_DIR).mkdir()
    (work / "data").mkdir()  # an empty data root: the card's file is found next to the card
    for name in ("shop.yaml", "shop.inter"):
        shutil.copy(FIXTURES / "own-data" / name, work / DATA_DIR / name)
    (work / "suite.yaml").write_text(SUITE)
    env = {**os.environ, "DRBENCH_CACHE": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(ROOT / "run_bench.py"), "--suite", "suite.yaml", "--dataset-card", f"{DATA_DIR}/shop.yaml",
               "--datasets", "tiny-shop", "--no-ray", "--data-root", "data", "--results-dir", "results"]
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    runs = sorted((work / "results" / "own").iterdir()) if (work / "results" / "own").is_dir() else []
    return {"done": done, "work": work, "run": runs[0] if runs else None}


@pytest.fixture
def in_work(card_run, monkeypatch):
    """Run the command line in-process from the run's folder, as the user would in that shell."""
    monkeypatch.chdir(card_run["work"])
    monkeypatch.setenv("DRBENCH_CACHE", str(card_run["work"] / "cache"))
    yield
    use_dataset_cards([])


def cli(capsys, *argv):
    code = run_bench.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_card_outside_the_repository_runs_and_is_recorded_without_machine_paths(card_run):
    done, run, work = card_run["done"], card_run["run"], card_run["work"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dataset tiny-shop: 48 users, 30 items, 288 interactions" in done.stdout
    assert "[1/1] tiny-shop pop seed=0  NDCG@10" in done.stdout
    trials = pd.read_csv(run / "trials.csv")
    assert trials["dataset"].tolist() == ["tiny-shop"] and trials["status"].tolist() == ["ok"]
    described = json.loads((run / "suite.json").read_text())["datasets"]["tiny-shop"]
    card_sha256 = hashlib.sha256((work / DATA_DIR / "shop.yaml").read_bytes()).hexdigest()
    assert (described["card"], described["card_sha256"]) == (f"{DATA_DIR}/shop.yaml", card_sha256)
    assert described["source"] == "./shop.inter" and described["spec"] == "tiny-shop"
    leaks = [str(p.relative_to(run)) for p in run.rglob("*") if p.is_file() and str(work).encode() in p.read_bytes()]
    assert leaks == []


def resume(card_run, *extra):
    return ("--suite", "suite.yaml", "--datasets", "tiny-shop", "--no-ray", "--data-root", "data",
            "--resume", str(card_run["run"].relative_to(card_run["work"])), *extra)


def test_resume_needs_the_card_again_and_then_has_nothing_to_do(card_run, in_work, capsys):
    code, _, err = cli(capsys, *resume(card_run))
    assert code == 2 and "unknown dataset 'tiny-shop'" in err and "--dataset-card FILE" in err
    code, out, err = cli(capsys, *resume(card_run, "--dataset-card", f"{DATA_DIR}/shop.yaml"))
    assert code == 0 and "already finished; nothing to run" in out, err


def test_resume_refuses_a_card_that_changes_the_data_and_accepts_one_that_only_changes_words(card_run, in_work, capsys):
    card = (card_run["work"] / DATA_DIR / "shop.yaml").read_text()
    changed = card_run["work"] / DATA_DIR / "changed.yaml"
    changed.write_text(card.replace("time_col: timestamp", "time_col: timestamp\n    user_col: item_id\n    item_col: user_id"))
    code, _, err = cli(capsys, *resume(card_run, "--dataset-card", str(changed.relative_to(card_run["work"]))))
    assert code == 2 and "was run with other settings" in err and "datasets.tiny-shop.split_fingerprint" in err, err
    reworded = card_run["work"] / DATA_DIR / "reworded.yaml"
    reworded.write_text(card.replace("description: A tiny", "description: A very small"))
    code, out, err = cli(capsys, *resume(card_run, "--dataset-card", str(reworded.relative_to(card_run["work"]))))
    assert code == 0 and "already finished; nothing to run" in out, err


def test_the_report_of_a_card_run_needs_no_card(card_run, in_work, capsys):
    (card_run["run"] / "report" / "report.md").unlink()
    code, _, err = cli(capsys, "--report", str(card_run["run"]))
    assert code == 0 and (card_run["run"] / "report" / "report.md").is_file(), err


def test_a_card_dataset_is_listed(card_run, in_work, capsys):
    code, out, _ = cli(capsys, "--list-datasets", "--data-root", "data", "--dataset-card", f"{DATA_DIR}/shop.yaml")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("tiny-shop"))
    assert row.split()[1:4] == ["48", "30", "288"]


def test_a_bad_card_on_the_command_line_is_one_line_and_no_run_folder(card_run, in_work, capsys):
    bad = card_run["work"] / "bad.yaml"
    bad.write_text("name: ml-1m\ndescription: mine\nsources: [{path: ./x.inter, reader: recbole-inter}]\n")
    code, _, err = cli(capsys, "--suite", "suite.yaml", "--dataset-card", "bad.yaml", "--results-dir", "elsewhere")
    assert code == 2 and err == "error: dataset card bad.yaml: the name 'ml-1m' is a built-in dataset's; give the card another name\n"
    assert not (card_run["work"] / "elsewhere").exists()


def test_a_recbole_file_runs_by_its_spec_like_a_csv_file(card_run, in_work, capsys):
    spec = f"recbole:{DATA_DIR}/shop.inter"
    code, out, err = cli(capsys, "--suite", "suite.yaml", "--datasets", spec, "--no-ray", "--data-root", "data",
                         "--results-dir", "recbole-results")
    assert code == 0, err
    label = dataset_label(spec)
    assert label.startswith("recbole-shop-") and f"[1/1] {label} pop seed=0  NDCG@10" in out
    [run] = (card_run["work"] / "recbole-results" / "own").iterdir()
    described = json.loads((run / "suite.json").read_text())["datasets"][label]
    carded = json.loads((card_run["run"] / "suite.json").read_text())["datasets"]["tiny-shop"]
    assert described["split_fingerprint"] == carded["split_fingerprint"]  # the same file, by card or by spec: the same split
    assert described["spec"] == spec and described["card"] == ""
