"""Your own predictions: a suite's split as files (``--export-split``), and a file of ranked lists scored (``--score``).

Scoring runs one trial on the suite's own back-end (Ray Tune, or this
process with ``--no-ray``): its spec carries the lists and
``bench.models.external`` replays them, so the evaluation (the generated-list
path of ``bench.protocol.evaluation``), the record (per-user ranks, split
fingerprint, provenance), the run folder and the report are those of every
other trial. The trial goes into a new run folder or, with ``--resume``,
next to the harness's models of an existing run of the same split. Every
problem with the file, the label or the run is refused before anything is
written.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.data import InteractionData, load_dataset
from bench.errors import DrbenchError
from bench.models.external import EXTERNAL, encode_lists
from bench.protocol.export import check_destination, write_split
from bench.protocol.ranked_lists import RankedLists, read_ranked_lists
from bench.protocol.splits import Split
from bench.provenance import code_version
from bench.records.fingerprint import SHOWN, differences, run_fingerprint
from bench.records.run_dir import RunDir
from bench.run.config import SuiteConfig
from bench.run.engine import create_run, prepare_splits, preprocess_config, run_suite, trial_specs
from bench.run.trial import make_trial_spec

LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # it names files and Ray trials


def one_split(suite: SuiteConfig, data_root: Path, option: str, echo=print) -> tuple[str, Split, dict, InteractionData]:
    """(label, split, description, data) of the suite's one dataset, split as the suite splits it, with its raw ids."""
    if len(suite.datasets) != 1:
        raise DrbenchError(f"{option} works on one dataset, and suite '{suite.name}' has {len(suite.datasets)} "
                           f"({', '.join(suite.datasets)}); name one with --datasets")
    splits, described = prepare_splits(suite, data_root, echo)
    [(label, split)] = splits.items()
    name = suite.datasets[0]
    data = load_dataset(name, data_root, preprocess_config(suite.protocol, name))  # the split's data again: its raw ids
    if data.n_items != split.n_items or data.n_users != len(split.train):
        raise RuntimeError(f"dataset {label} loaded twice gave two catalogues ({data.n_items} and {split.n_items} items)")
    return label, split, described[label], data


def export_split(suite: SuiteConfig, directory: Path, data_root: Path, echo=print) -> Path:
    label, split, described, data = one_split(suite, data_root, "--export-split", echo)
    check_destination(directory, split.fingerprint)
    manifest = {"suite": suite.name, "dataset": label, "dataset_spec": described["spec"], "source": described.get("source"),
                "source_sha256": described.get("sha256"), "protocol": asdict(suite.protocol), **code_version()}
    write_split(directory, split, data, manifest)
    echo(f"split {split.fingerprint} of {label} ({len(split.test):,} test users, {split.n_items:,} items) written to {directory}; "
         f"ranked lists for it start with the line '# split {split.fingerprint}' (see {directory / 'manifest.json'})")
    return Path(directory)


def score_lists(suite: SuiteConfig, path: Path, label: str, data_root: Path, results_root: Path, backend,
                resume: str | None = None, echo=print) -> tuple[RunDir, dict]:
    """Score the ranked lists in ``path`` as model ``label``: (the run folder, the trial's record)."""
    models = [m.label for m in suite.models]
    if not LABEL.fullmatch(label) or "__" in label:
        raise DrbenchError(f"--label '{label}': use letters, digits, '.', '-' and '_' (no '__'), e.g. --label my-model")
    if label in models:
        raise DrbenchError(f"--label '{label}' is a model of suite '{suite.name}' ({', '.join(models)}); name the external model differently")
    run = None
    if resume:
        run = RunDir.latest(results_root, suite.name) if resume == "latest" else RunDir.open(Path(resume))
    dataset, split, described, data = one_split(suite, data_root, "--score", echo)
    lists = read_ranked_lists(path, split, data.user_ids, data.item_ids)
    params = {"source": lists.source, "sha256": lists.sha256, "list_length": lists.list_length}
    spec = {**make_trial_spec(suite.datasets[0], label, EXTERNAL, 0, params, {}, suite.protocol), "lists": encode_lists(lists.lists)}
    if run is not None:
        _check_run(run, suite, dataset, described, spec)
    _note_seen_items(lists, split, suite.protocol.exclude_history, echo)
    # nothing is written before this point
    if run is None:
        # the suite's trials recorded too, so that a later --suite ... --resume of this run can add the harness's models
        specs = [*trial_specs(suite), spec]
        run = create_run(results_root, suite, suite, data_root, {dataset: described}, specs, specs, False)
    else:
        recorded = run.metadata()
        fingerprint = recorded["fingerprint"]
        trials = {**fingerprint.get("trials", {}), **run_fingerprint(suite, {dataset: described}, [spec], False)["trials"]}
        keys = list(dict.fromkeys([*recorded.get("trial_keys", []), spec["key"]]))  # a failed earlier score of this label is retried
        run.update_metadata(trial_keys=keys, fingerprint={**fingerprint, "trials": trials})
    echo(f"scoring {lists.source} (sha256 {lists.sha256[:12]}) as model {label} on {dataset} -> {run.path}")
    run_suite(suite, run, {dataset: split}, backend, echo=echo, specs=[spec])
    record = next((r for r in run.records() if r["key"] == spec["key"]), None)
    if record is None:
        raise DrbenchError(f"--score: the run {run.path} has no record of {spec['key']} after scoring; rerun with --debug to see why")
    return run, record


def _check_run(run: RunDir, suite: SuiteConfig, dataset: str, described: dict, spec: dict) -> None:
    """Refuse a run whose split or protocol of ``dataset`` is not this one, or that already has a model of this label."""
    recorded = run.metadata().get("fingerprint")
    if recorded is None:
        raise DrbenchError(f"--resume: {run.path} was made by an older drbench that recorded no fingerprint; score into a new run")
    current = run_fingerprint(suite, {dataset: described}, [], False)
    sections = ("suite", "protocol", "datasets")  # what decides the numbers of this trial; the run's other trials do not
    if dataset not in (recorded.get("datasets") or {}):
        raise DrbenchError(f"--resume: {run.path} has no trials on {dataset}; score into a new run, or name the run's dataset")
    found = differences({k: recorded.get(k) for k in sections}, {k: current.get(k) for k in sections})
    if found:
        more = f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        raise DrbenchError(f"--resume: {run.path} was not run on this split and protocol, so the external model would not be comparable "
                           f"with its models: {'; '.join(found[:SHOWN])}{more}. Score into a new run, or use the run's suite and options")
    records = run.records()
    taken = {r["model"] for r in records if r["dataset"] == dataset and (r["key"] != spec["key"] or r.get("status") == "ok")}
    taken |= {m["label"] for m in (run.metadata().get("config") or {}).get("models", [])}
    if spec["label"] in taken:
        raise DrbenchError(f"--resume: {run.path} already has a model '{spec['label']}' on {dataset}; name the external model "
                           "differently with --label")


def _note_seen_items(lists: RankedLists, split: Split, exclude_history: bool, echo) -> None:
    """Say how many lists name items of the user's own input, and what the metrics do with them."""
    seen = sum(bool(np.isin(row[row > 0], history).any()) for row, history in zip(lists.lists, split.test.histories))
    if not seen:
        return
    what = ("the protocol excludes the user's history, so they are dropped from the lists before scoring" if exclude_history
            else "the headline metrics keep them; the filtered metrics (test_filtered_*) drop them")
    echo(f"note: {seen:,} of {len(split.test):,} lists name items of the user's own input (test_inputs.tsv); {what}, "
         "and a list left shorter than K counts its empty places as misses")
