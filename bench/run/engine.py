"""The execution core: a suite's trials, run on a back-end, written into the run folder, then timed.

``run_suite`` finds the trials a run still lacks, hands them to a back-end
(``ray_backend.RayBackend``: Ray Tune, locally or on a cluster;
``local_backend.LocalBackend``: one after another in this process) and
then runs the latency phase. A back-end only schedules: it trains each
spec with ``trial.train_and_test`` and reports every event to a
``TrialSink``, which writes finished trials, prints progress and keeps the
heartbeat, so both back-ends write the same records and print the same lines.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import Protocol

from bench.data import PreprocessConfig, dataset_family, dataset_stats, load_dataset
from bench.data.item_text import has_item_text, item_texts
from bench.data.registry import dataset_label, default_dedup, portable_file, portable_spec, portable_suite_config
from bench.errors import DrbenchError
from bench.models.base import model_entry
from bench.protocol.splits import Split, make_split
from bench.provenance import code_version, environment
from bench.records.fingerprint import run_fingerprint
from bench.records.run_dir import RunDir
from bench.report.tables import write_tables
from bench.run.config import ProtocolConfig, SuiteConfig
from bench.run.latency_phase import latency_threads, measure_pending, pending_latency
from bench.run.progress import EPOCH_LINE_SECONDS, HEARTBEAT_SECONDS, epoch_line, heartbeat_line, progress_line
from bench.run.trial import make_trial_spec, pick_device


def trial_specs(suite: SuiteConfig) -> list[dict]:
    """One spec per (dataset, model, seed); params = family defaults < suite params < per-dataset overrides."""
    specs = []
    for dataset in suite.datasets:
        for spec in suite.models:
            if not spec.runs_on(dataset):
                continue
            params, training = spec.for_dataset(dataset)
            params = {**model_entry(spec.model).defaults_for(dataset_family(dataset)), **params}
            for seed in suite.seeds:
                specs.append(
                    make_trial_spec(dataset, spec.label, spec.model, seed, params, {**suite.training, **training}, suite.protocol,
                                    spec.steps_sweep, suite.plugins)
                )
    return specs


def pending_specs(suite: SuiteConfig, run: RunDir, specs: list[dict] | None = None) -> list[dict]:
    """Trial specs (default: the suite's grid) that have no successful record in the run yet."""
    finished = run.finished_keys()
    return [spec for spec in (specs if specs is not None else trial_specs(suite)) if spec["key"] not in finished]


def unfinished_specs(suite: SuiteConfig, run: RunDir, specs: list[dict] | None, echo=print) -> tuple[list[dict], int]:
    """(the trials still to run, the number of trials in all); with none left, says so."""
    total = len(specs if specs is not None else trial_specs(suite))
    pending = pending_specs(suite, run, specs)
    if not pending:
        echo(f"all {total} trials of {run.path} are already finished; nothing to run.")
    return pending, total


def driver_provenance() -> dict:
    """The code version and machine of the process that starts or resumes a run (each trial record has its worker's)."""
    return {**code_version(), **environment(pick_device())}


def create_run(results_root: Path, suite: SuiteConfig, recorded: SuiteConfig, data_root: Path, described: dict[str, dict],
               trials: list[dict], fingerprinted: list[dict], tuned: bool) -> RunDir:
    """A new run folder for the specs ``trials``, with the metadata that ``--resume`` checks and the report reads.

    ``recorded`` is the suite kept as the run's config and ``fingerprinted`` the specs its fingerprint covers: a part
    of a suite (--models, --seeds) records the whole, so that later parts are checked against the settings the run
    began with. The metadata holds no absolute path of this machine (dataset specs and the suite file made relative).
    """
    metadata = {"suite": suite.name, "source": portable_file(suite.source, data_root),
                "config": portable_suite_config(dataclasses.asdict(recorded), data_root), "tuned": tuned,
                "trial_keys": [spec["key"] for spec in trials],
                "fingerprint": run_fingerprint(suite, described, fingerprinted, tuned),
                "provenance": driver_provenance(), "datasets": described}
    return RunDir.create(results_root, suite.name, metadata)


def prepare_splits(suite: SuiteConfig, data_root: Path, echo=print) -> tuple[dict[str, Split], dict[str, dict]]:
    """Load every dataset of the suite and split it once; all models share the result (with the item texts, where the dataset has them).

    Both are keyed by the dataset's label (``dataset_label``), as trial specs name their dataset.
    Returns the splits and, per dataset, its source file, statistics and split fingerprint.
    """
    protocol: ProtocolConfig = suite.protocol
    splits, described = SplitsByLabel(), {}
    for name in suite.datasets:
        started = time.perf_counter()
        preprocess = preprocess_config(protocol, name)
        data = load_dataset(name, data_root, preprocess)
        label = dataset_label(name)  # resolved by load_dataset: a safe name for keys, files and tables
        split = make_split(data, protocol.split, protocol.temporal_quantile)
        if has_item_text(name, data_root):
            split = dataclasses.replace(split, item_text=tuple(item_texts(name, data_root, data.item_ids)))
        stats = dataset_stats(data)
        echo(
            f"dataset {label if label == name else f'{label} ({name})'}: {stats['users']:,} users, {stats['items']:,} items, "
            f"{stats['interactions']:,} interactions; "
            f"{protocol.split} split {split.fingerprint}: {len(split.valid):,} valid / {len(split.test):,} test users "
            f"({time.perf_counter() - started:.1f}s)"
        )
        for step in data.steps:
            echo(f"    {label}: {preprocessing_line(step)}")
        not_tested = data.n_users - len(split.test)
        if not_tested:
            reason = "fewer than 3 interactions" if protocol.split == "loo" else "no test target after the cutoff"
            echo(f"    {label}: {protocol.split} split: {not_tested:,} of {data.n_users:,} users not evaluated ({reason}; they only train)")
        if max(protocol.ks) > split.n_items:
            raise DrbenchError(f"protocol.ks: K = {max(protocol.ks)} is larger than the catalogue of '{label}' "
                               f"({split.n_items} items); use cut-offs up to {split.n_items}")
        splits[label] = split
        described[label] = {**stats, "spec": portable_spec(name, data_root), "split_fingerprint": split.fingerprint,
                            "preprocess": preprocess.as_dict(), "steps": [dict(step) for step in data.steps],
                            "split": {"protocol": protocol.split, "users_evaluated": len(split.test),
                                      "users_not_evaluated": not_tested, **split.stats}}
    return splits, described


def preprocess_config(protocol: ProtocolConfig, name: str) -> PreprocessConfig:
    """How the suite's protocol preprocesses dataset ``name`` (``dedup`` unset: the source's default)."""
    return PreprocessConfig(min_rating=protocol.min_rating, dedup=protocol.dedup or default_dedup(name), core=protocol.core)


def preprocessing_line(step: dict) -> str:
    """What one preprocessing step (an entry of ``InteractionData.steps``) did, in words."""
    dropped, kept = f"{step['dropped']:,}", f"{step['kept']:,}"
    if step["step"] == "dedup":
        if step["policy"] == "keep":
            return f"dedup keep: {step['repeats']:,} repeated (user, item) interactions kept, {kept} in all"
        return (f"dedup {step['policy']}: dropped {dropped} repeated (user, item) interactions "
                f"({step['policy']} occurrence kept), {kept} left")
    if step["step"] == "min_rating":
        return f"min_rating {step['threshold']:g}: dropped {dropped} interactions rated below it, {kept} left"
    if step["step"] == "k-core":
        return (f"{step['k']}-core: dropped {dropped} interactions, {step['users_dropped']:,} users and "
                f"{step['items_dropped']:,} items, {kept} interactions left")
    return f"{step['step']}: dropped {dropped}, {kept} left"


class SplitsByLabel(dict):
    """The splits of a suite, keyed by dataset label; a dataset's spec (``seq:/path``) finds its label's split too."""

    def __missing__(self, key):
        label = dataset_label(key) if isinstance(key, str) else key
        if label != key and label in self:
            return self[label]
        raise KeyError(key)


def failure_record(spec: dict, message: str) -> dict:
    return {"key": spec["key"], "dataset": spec["dataset"], "model": spec["label"], "model_type": spec["model"],
            "seed": spec["seed"], "status": "failed", "error": message}


def crashed_trial_record(spec: dict, error: Exception) -> dict:
    """The failure record of a trial that raised ``error``; call it in the ``except`` block (it keeps the traceback)."""
    message = str(error) if isinstance(error, DrbenchError) else f"{type(error).__name__}: {error}"
    return {**failure_record(spec, message), "traceback": traceback.format_exc()}


def stamp(record: dict, run: RunDir) -> dict:
    """A finished trial's record with its run and the driver's code version (workers have no git checkout)."""
    return {**record, "run_id": run.path.name, **code_version()}


class TrialSink:
    """Where a back-end reports its trials: writes each finished one into the run, prints progress and a heartbeat."""

    def __init__(self, run: RunDir, total: int, already_done: int, monitor: str, echo=print):
        self.run, self.total, self.already_done, self.monitor, self.echo = run, total, already_done, monitor, echo
        self.finished = already_done
        self.started = time.monotonic()
        self.running: dict[str, tuple[float, int | None]] = {}  # key -> (start time, last validated epoch)
        self.last_epoch_line: dict[str, float] = {}
        self.last_heartbeat = time.monotonic()

    def __getstate__(self) -> dict:
        # Ray Tune pickles its callbacks into the experiment state it keeps (drbench never
        # restores it: --resume reads the run folder). The printer may be a function Ray has
        # wrapped since, which pickle cannot name; a restored sink prints with print.
        return {k: v for k, v in self.__dict__.items() if k != "echo"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, echo=print)

    def trial_started(self, key: str) -> None:
        self.running[key] = (time.monotonic(), None)

    def trial_validated(self, key: str, epoch: int, metrics: dict) -> None:
        now = time.monotonic()
        if key in self.running:
            self.running[key] = (self.running[key][0], epoch)
        if now - self.last_epoch_line.get(key, 0.0) >= EPOCH_LINE_SECONDS:
            self.last_epoch_line[key] = now
            self.echo(epoch_line(key, epoch, self.monitor, metrics))

    def trial_retried(self, key: str, message: str) -> None:
        """A trial starts again (its worker died): it is not counted, its validation lines start afresh."""
        self.running.pop(key, None)
        self.last_epoch_line.pop(key, None)
        self.echo(f"    {key}: {message}")

    def tick(self) -> None:
        """Called often by a back-end: every HEARTBEAT_SECONDS, one line naming the running trials."""
        now = time.monotonic()
        if self.running and now - self.last_heartbeat >= HEARTBEAT_SECONDS:
            self.last_heartbeat = now
            self.echo(heartbeat_line(self.running, now))

    def trial_finished(self, record: dict, arrays: dict | None = None, model: bytes | None = None) -> None:
        """Write a finished (or failed) trial; its trained model waits in the run folder for the latency phase."""
        self.running.pop(record["key"], None)
        if model and record.get("latency") == "pending":  # external predictions have no model to time
            self.run.save_pending_model(record["key"], model)  # before the record, which marks it pending
        self.run.write_trial(stamp(record, self.run), arrays)
        self.finished += 1
        self.echo(progress_line(record, self.finished, self.total, self.already_done, time.monotonic() - self.started))
        write_tables(self.run)

    def trial_failed(self, spec: dict, message: str) -> None:
        self.trial_finished(failure_record(spec, message))


class Backend(Protocol):
    """Where trials run. ``session`` holds its resources (a Ray connection) for the training and the latency phase."""

    def session(self, suite: SuiteConfig):
        """A context manager around everything the back-end runs for one suite."""

    def train(self, suite: SuiteConfig, run: RunDir, pending: list[dict], splits: dict[str, Split], sink: TrialSink) -> None:
        """Train and test every spec of ``pending``, reporting each to ``sink``."""

    def latency_job(self, suite: SuiteConfig):
        """``job(payload, record, eval_set, threads) -> record`` for the latency phase."""


def run_suite(suite: SuiteConfig, run: RunDir, splits: dict[str, Split], backend: Backend, echo=print,
              specs: list[dict] | None = None) -> int:
    """Run every unfinished trial (default: the suite's grid, else ``specs``), then the latency phase.

    Returns the number of failed trials in the run.
    """
    pending, total = unfinished_specs(suite, run, specs, echo)
    if pending or pending_latency(run):
        already_done = total - len(pending)
        if already_done and pending:
            echo(f"resuming {run.path}: {already_done} of {total} trials already finished, {len(pending)} to run")
        with backend.session(suite):
            if pending:
                run.update_metadata(attempts=run.metadata().get("attempts", 0) + 1)
                backend.train(suite, run, pending, splits, TrialSink(run, total, already_done, suite.protocol.monitor, echo))
            measure_pending(run, splits, latency_threads(suite), job=backend.latency_job(suite), echo=echo)
    frame = write_tables(run)
    return int((frame["status"] != "ok").sum()) if not frame.empty else 0
