"""Your own predictions: export a split, score lists made from it, and find them in the run's tables next to the harness's models."""

import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import run_bench
from bench.data.registry import REPO_ROOT

DOC = REPO_ROOT / "docs" / "own-predictions.md"


def popularity_script() -> str:
    """The docs' my_popularity.py (popularity lists from the exported training data): the example shown is the one tested."""
    return DOC.read_text(encoding="utf-8").split("```python\n", 1)[1].split("```", 1)[0]


def own_data(folder):
    """40 users over 16 items whose training counts all differ, so that a popularity list has no ties to break:
    the harness's pessimistic ranks of tied scores and a list's order then agree exactly."""
    lines = []
    for u in range(40):
        history = [116] + [100 + i for i in range(1, 16) if u < 2 * (16 - i)]
        lines.append(" ".join(map(str, [1000 + u, *history, 100 + (u * 7) % 16 + 1, 100 + (u * 5 + 3) % 16 + 1])))
    (folder / "own.txt").write_text("\n".join(lines) + "\n")
    suite = folder / "suite.yaml"
    suite.write_text(f"name: own\ndatasets: ['seq:{folder / 'own.txt'}']\nprotocol: {{ks: [2, 5, 10]}}\nmodels:\n  pop: {{model: pop}}\n")
    return str(suite)


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_bench.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def popularity_lists(export, out, length):
    subprocess.run([sys.executable, "-c", popularity_script(), str(export), str(out), str(length)], check=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """The harness's pop run, the split exported, popularity lists made from it and scored into the same run (no Ray)."""
    tmp = tmp_path_factory.mktemp("own")
    suite, results = own_data(tmp), tmp / "results"
    code, _, err = cli("--suite", suite, "--no-ray", "--results-dir", results)
    assert code == 0, err
    [run] = (results / "own").iterdir()
    code, out, err = cli("--suite", suite, "--export-split", tmp / "export")
    assert code == 0 and "ranked lists for it start with the line '# split " in out, err
    lists = popularity_lists(tmp / "export", tmp / "pop.tsv", 16)  # the whole catalogue: room for the filtered metrics
    code, out, err = cli("--suite", suite, "--score", lists, "--label", "my-pop", "--resume", run, "--no-ray", "--results-dir", results)
    return {"code": code, "out": out, "err": err, "run": run, "suite": suite, "tmp": tmp, "results": results, "lists": lists}


def record(run, model):
    return json.loads(next((run / "trials").glob(f"*__{model}__seed0.json")).read_text())


def test_scored_popularity_lists_get_exactly_the_harness_pops_metrics(scored):
    assert scored["code"] == 0, scored["err"]
    run = scored["run"]
    pop, mine = record(run, "pop"), record(run, "my-pop")
    metrics = [k for k in pop if k.startswith(("test_", "test_filtered_"))]
    assert len(metrics) > 20 and {k: mine[k] for k in metrics} == {k: pop[k] for k in metrics}
    assert 0 < mine["test_ndcg@10"] < 1 and mine["split_fingerprint"] == pop["split_fingerprint"]
    ranks = {m: np.load(run / "trials" / f"{record(run, m)['key']}.npz") for m in ("pop", "my-pop")}
    # a list is judged to the largest K (10): a target further down is a miss (rank n_items + 1), as for TIGER
    assert (np.where(ranks["pop"]["test_ranks"] > 10, 17, ranks["pop"]["test_ranks"]) == ranks["my-pop"]["test_ranks"]).all()
    assert (ranks["pop"]["test_users"] == ranks["my-pop"]["test_users"]).all()


def test_the_record_says_where_the_lists_came_from_and_that_latency_does_not_apply(scored):
    mine = record(scored["run"], "my-pop")
    assert mine["model_type"] == "external" and mine["predictions"] == "external" and mine["ranking"] == "generated"
    assert mine["predictions_file"] == "pop.tsv" and mine["params"]["source"] == "pop.tsv"
    assert mine["predictions_sha256"] == hashlib.sha256(scored["lists"].read_bytes()).hexdigest()
    assert mine["latency"] == "not applicable (external predictions)" and "latency_p50_ms" not in mine
    assert mine["list_length"] == 16 and mine["code_commit"] and mine["hardware"]
    assert not (scored["run"] / "pending-latency").exists()
    fingerprint = json.loads((scored["run"] / "suite.json").read_text())["fingerprint"]
    assert fingerprint["trials"][mine["key"]]["params"]["sha256"] == mine["predictions_sha256"]


def test_the_report_puts_the_external_model_into_the_tables_and_the_significance_tests(scored):
    code, out, err = cli("--report", scored["run"])
    assert code == 0, err
    results = (scored["run"] / "results.md").read_text()
    assert "| my-pop " in results and "| pop " in results and "generated top-K lists: my-pop" in results
    accuracy = (scored["run"] / "report" / "accuracy.md").read_text()
    assert "my-pop" in accuracy and "paired Wilcoxon" in accuracy and "best baseline (pop)" in accuracy
    assert set(pd.read_csv(scored["run"] / "trials.csv")["model"]) == {"pop", "my-pop"}
    assert "Latency of my-pop: not applicable (external predictions)." in (scored["run"] / "report" / "efficiency.md").read_text()


def test_lists_shorter_than_the_largest_k_leave_it_not_applicable_and_the_run_takes_the_suites_models(scored):
    lists = popularity_lists(scored["tmp"] / "export", scored["tmp"] / "top5.tsv", 5)
    code, _, err = cli("--suite", scored["suite"], "--score", lists, "--label", "pop-top5", "--no-ray", "--results-dir", scored["tmp"] / "short")
    assert code == 0, err
    [run] = (scored["tmp"] / "short" / "own").iterdir()
    mine = record(run, "pop-top5")
    assert mine["list_length"] == 5 and np.isnan(mine["test_hr@10"]) and not np.isnan(mine["test_hr@5"])
    assert mine["test_hr@5"] == record(scored["run"], "pop")["test_hr@5"]
    assert "n/a" in (run / "results.md").read_text()
    code, _, err = cli("--suite", scored["suite"], "--no-ray", "--resume", run, "--results-dir", scored["tmp"] / "short")
    assert code == 0, err  # the run scored into first takes the harness's models afterwards
    assert set(pd.read_csv(run / "trials.csv")["model"]) == {"pop-top5", "pop"}


def broken(lists: str) -> dict[str, list[str]]:
    """Ways a researcher's file goes wrong, each applied to good lists."""
    header, first, second, *rest = lists.splitlines()
    user, *items = first.split("\t")
    return {
        "another split": ["# split 0123456789ab", first, second, *rest],
        "unknown user": [header, "nobody\t" + "\t".join(items), second, *rest],
        "user twice": [header, first, first, second, *rest],
        "missing users": [header, first],
        "unknown item": [header, "\t".join([user, "no-such-item", *items]), second, *rest],
        "item twice": [header, "\t".join([user, *items, items[0]]), second, *rest],
        "empty": [],
    }


MESSAGES = {
    "another split": "was made for split 0123456789ab, but this suite and dataset have split ",
    "unknown user": "line 2: unknown user id 'nobody'",
    "user twice": "line 3: user '1000' is listed twice \\(first on line 2\\)",
    "missing users": "has no list for 39 of the 40 test users",
    "unknown item": "line 2: unknown item id 'no-such-item' in the list of user '1000'",
    "item twice": "line 2: item '116' appears twice in the list of user '1000'",
    "empty": "is empty",
}


@pytest.mark.parametrize("problem", list(MESSAGES))
def test_a_bad_file_is_one_line_exit_2_and_nothing_written(scored, problem):
    path = scored["tmp"] / f"{problem.replace(' ', '-')}.tsv"
    lines = broken(scored["lists"].read_text())[problem]
    path.write_text("".join(line + "\n" for line in lines))
    before = sorted(p.relative_to(scored["results"]) for p in scored["results"].rglob("*"))
    code, _, err = cli("--suite", scored["suite"], "--score", path, "--label", "bad", "--resume", scored["run"], "--no-ray",
                       "--results-dir", scored["results"])
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(MESSAGES[problem], err), err
    assert sorted(p.relative_to(scored["results"]) for p in scored["results"].rglob("*")) == before


@pytest.mark.parametrize("argv, message", [
    (["--label", "pop"], "--label 'pop' is a model of suite 'own'"),
    (["--label", "a__b"], "--label 'a__b': use letters, digits"),
    (["--label", "my-pop", "--resume", "RUN"], "already has a model 'my-pop' on seq-own-"),
    (["--label", "x", "--models", "pop"], "--models does not apply to --score"),
    ([], "--score FILE needs --label NAME"),
])
def test_a_bad_label_or_option_is_one_line(scored, argv, message):
    argv = [str(scored["run"]) if a == "RUN" else a for a in argv]
    code, _, err = cli("--suite", scored["suite"], "--score", scored["lists"], *argv, "--no-ray", "--results-dir", scored["tmp"] / "none")
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (scored["tmp"] / "none").exists()


def test_a_run_of_another_protocol_is_refused(scored, tmp_path):
    other = tmp_path / "suite.yaml"
    other.write_text(open(scored["suite"]).read().replace("{ks: [2, 5, 10]}", "{ks: [2, 5, 10], exclude_history: true}"))
    code, _, err = cli("--suite", other, "--score", scored["lists"], "--label", "again", "--resume", scored["run"], "--no-ray",
                       "--results-dir", tmp_path / "results")
    assert code == 2 and "was not run on this split and protocol" in err and "protocol.exclude_history: run has False, now True" in err


def test_export_refuses_a_folder_holding_something_else_and_rewrites_its_own(scored, tmp_path):
    code, _, err = cli("--suite", scored["suite"], "--export-split", scored["tmp"] / "export")
    assert code == 0, err  # the same split again
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = cli("--suite", scored["suite"], "--export-split", tmp_path)
    assert code == 2 and "is not empty and holds files that are not a drbench split export" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_from_a_folder_outside_the_repository_through_ray_to_the_report(tmp_path):
    """The whole journey as a researcher runs it, in their own folder: export, their script, --score through Ray, --report."""
    own_data(tmp_path)
    (tmp_path / "suite.yaml").write_text("name: own\ndatasets: ['seq:own.txt']\nprotocol: {ks: [2, 5, 10]}\nmodels:\n  pop: {model: pop}\n")
    (tmp_path / "my_popularity.py").write_text(popularity_script())

    def run(*argv, script=str(REPO_ROOT / "run_bench.py")):
        done = subprocess.run([sys.executable, script, *map(str, argv)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    assert not tmp_path.resolve().is_relative_to(REPO_ROOT)
    run("--suite", "suite.yaml", "--export-split", "export")
    run("export", "lists.tsv", script="my_popularity.py")
    out = run("--suite", "suite.yaml", "--score", "lists.tsv", "--label", "mine", "--results-dir", "results")
    assert "on Ray" in out and "[1/1] seq-own-" in out and " mine seed=0  NDCG@10 " in out
    [folder] = (tmp_path / "results" / "own").iterdir()
    run("--report", folder.relative_to(tmp_path))
    mine = record(folder, "mine")
    assert mine["status"] == "ok" and mine["predictions"] == "external"
    assert "mine" in (folder / "report" / "accuracy.md").read_text() and (folder / "report" / "metrics.png").is_file()
