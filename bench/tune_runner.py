"""Runs a suite as a grid of Ray Tune trials: one per (dataset, model, seed).

The driver loads each dataset and computes its split once, ships the splits
to the workers through Ray's object store (``tune.with_parameters``), and
collects every finished trial into the run directory from a Tune callback.
The same code runs on a local Ray or on a cluster (``--address``): the
project is shipped to workers as the Ray ``working_dir``.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import logging
import time
import traceback
from pathlib import Path

import numpy as np

from bench.config import ProtocolConfig, SuiteConfig
from bench.errors import DrbenchError
from bench.results import RunDir
from bench.splits import Split, make_split
from bench.latency import latency_job, measure_pending, pending_latency, snapshot
from bench.provenance import code_version
from bench.trial import make_trial_spec, train_and_test
from bench.models import model_entry
from datasets import PreprocessConfig, dataset_family, dataset_stats, load_dataset
from datasets.registry import dataset_label, default_dedup, portable_spec
from datasets.item_text import has_item_text, item_texts

ROOT = Path(__file__).resolve().parents[1]
RECORD_KEY, ARRAYS_KEY, MODEL_KEY = "trial_record", "trial_arrays", "trial_model"


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
                                    spec.steps_sweep)
                )
    return specs


def prepare_splits(suite: SuiteConfig, data_root: Path, echo=print) -> tuple[dict[str, Split], dict[str, dict]]:
    """Load every dataset of the suite and split it once; all models share the result (with the item texts, where the dataset has them).

    Returns the splits and, per dataset, its source file, statistics and split fingerprint.
    """
    protocol: ProtocolConfig = suite.protocol
    splits, described = SplitsByLabel(), {}
    for name in suite.datasets:
        started = time.perf_counter()
        preprocess = PreprocessConfig(min_rating=protocol.min_rating, dedup=protocol.dedup or default_dedup(name), core=protocol.core)
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
        split_stats = dict(getattr(split, "stats", None) or {})
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
                                      "users_not_evaluated": not_tested, **split_stats}}
    return splits, described


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


def _encode_arrays(arrays: dict[str, np.ndarray]) -> str:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode_arrays(payload: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(base64.b64decode(payload))) as stored:
        return dict(stored)


def _trainable(config: dict, splits: dict[str, Split]) -> None:
    """Ray Tune function trainable: one trial; never raises for a failure inside the trial.

    The finished record (and the trained model, for the latency phase)
    travels back in the last reported result, through Ray itself, so a
    cluster needs no shared storage.
    """
    from ray import tune

    spec = config["spec"]

    def on_validation(record: dict) -> None:
        tune.report({"epoch": record["epoch"], **{k: v for k, v in record.items() if k.startswith("valid_")}})

    model = b""
    try:
        record, arrays, trained = train_and_test(spec, splits[spec["dataset"]], on_validation)
        model = snapshot(trained)
    except Exception as error:  # the trial fails, the suite goes on
        record, arrays = crashed_trial_record(spec, error), {}
    tune.report({"finished": True, "failed": record["status"] != "ok",
                 RECORD_KEY: json.dumps(record, default=float), ARRAYS_KEY: _encode_arrays(arrays) if arrays else "",
                 MODEL_KEY: base64.b64encode(model).decode("ascii")})


def _format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


HEARTBEAT_SECONDS = 300.0
EPOCH_LINE_SECONDS = 15.0  # at most one validation line per trial this often


def heartbeat_line(running: dict[str, tuple[float, int | None]], now: float) -> str:
    """One line naming every running trial, how long it has run and its last validated epoch.

    ``running`` maps a trial key to (start time, last validated epoch or None).
    It keeps a long epoch (TIGER or DiffuRec on a CPU: tens of minutes) from
    looking like a hang.
    """
    parts = [f"{key} {_format_seconds(now - started)}" + (f" (epoch {epoch} validated)" if epoch else " (first epoch)")
             for key, (started, epoch) in sorted(running.items())]
    return "    still running: " + "; ".join(parts)


def progress_line(record: dict, finished: int, total: int, already_done: int, elapsed: float) -> str:
    """'[3/8] dataset model seed=0  NDCG@10 ...  (elapsed, ETA)' for a trial that just finished."""
    done_here = finished - already_done
    eta = elapsed / done_here * (total - finished) if done_here else 0.0
    if record["status"] == "ok":
        outcome = (f"NDCG@10 {record.get('test_ndcg@10', float('nan')):.4f}  HR@10 {record.get('test_hr@10', float('nan')):.4f}  "
                   f"{record['epochs_run']} epochs, {record['fit_time_s']:.1f}s")
    else:
        outcome = f"FAILED: {record['error']}"
    return (f"[{finished}/{total}] {record['dataset']} {record['model']} seed={record['seed']}  {outcome}  "
            f"(elapsed {_format_seconds(elapsed)}, ETA {_format_seconds(eta)})")


def failure_record(spec: dict, message: str) -> dict:
    return {"key": spec["key"], "dataset": spec["dataset"], "model": spec["label"], "model_type": spec["model"],
            "seed": spec["seed"], "status": "failed", "error": message}


def stamp(record: dict, run: RunDir) -> dict:
    """A finished trial's record with its run and the driver's code version (workers have no git checkout)."""
    return {**record, "run_id": run.path.name, **code_version()}


def latency_threads(suite: SuiteConfig) -> int:
    """Torch threads for timing inference: the cores one trial is given (at least one)."""
    return max(1, int(suite.resources.cpus_per_trial))


def crashed_trial_record(spec: dict, error: Exception) -> dict:
    """The failure record of a trial that raised ``error``; call it in the ``except`` block (it keeps the traceback)."""
    message = str(error) if isinstance(error, DrbenchError) else f"{type(error).__name__}: {error}"
    return {**failure_record(spec, message), "traceback": traceback.format_exc()}


def epoch_line(key: str, epoch: int, monitor: str, metrics: dict) -> str:
    return f"    {key}: epoch {epoch}, valid {monitor} {metrics.get(f'valid_{monitor}', float('nan')):.4f}"


def unfinished_specs(suite: SuiteConfig, run: RunDir, specs: list[dict] | None, echo=print) -> tuple[list[dict], int]:
    """(the trials still to run, the number of trials in all); with none left, says so and rebuilds the tables."""
    total = len(specs if specs is not None else trial_specs(suite))
    pending = pending_specs(suite, run, specs)
    if not pending:
        echo(f"all {total} trials of {run.path} are already finished; nothing to run.")
        run.write_tables()
    return pending, total


def make_callback(run: RunDir, total: int, already_done: int, monitor: str, echo=print):
    from ray import tune

    class CollectResults(tune.Callback):
        """Writes each finished trial into the run directory and prints progress."""

        def __init__(self):
            self.finished = already_done
            self.started = time.monotonic()
            self.last_epoch_line: dict[str, float] = {}
            self.running: dict[str, tuple[float, int | None]] = {}
            self.last_heartbeat = time.monotonic()

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running[trial.config["spec"]["key"]] = (time.monotonic(), None)

        def on_step_end(self, iteration, trials, **info):
            now = time.monotonic()
            if self.running and now - self.last_heartbeat >= HEARTBEAT_SECONDS:
                self.last_heartbeat = now
                echo(heartbeat_line(self.running, now))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "epoch" not in result or result.get("finished"):
                return
            key = trial.config["spec"]["key"]
            now = time.monotonic()
            if key in self.running:
                self.running[key] = (self.running[key][0], result["epoch"])
            if now - self.last_epoch_line.get(key, 0.0) >= EPOCH_LINE_SECONDS:
                self.last_epoch_line[key] = now
                echo(epoch_line(key, result["epoch"], monitor, result))

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.running.pop(trial.config["spec"]["key"], None)
            result = trial.last_result or {}
            if RECORD_KEY not in result:
                self._store_failure(trial, "the trial ended without reporting a result")
                return
            record = json.loads(result[RECORD_KEY])
            arrays = _decode_arrays(result[ARRAYS_KEY]) if result.get(ARRAYS_KEY) else None
            if result.get(MODEL_KEY):
                run.save_pending_model(record["key"], base64.b64decode(result[MODEL_KEY]))
            run.write_trial(stamp(record, run), arrays)
            self._progress(record)

        # Ray Tune (2.60) calls on_trial_recover, not on_trial_error, after each failed
        # attempt it will retry (the trial goes back to PENDING, on_trial_start comes again
        # with the new worker), and on_trial_error once, when no retry is left. So a trial
        # is counted once: on_trial_complete, or on_trial_error after its last attempt.
        def on_trial_recover(self, iteration, trials, trial, **info):
            key = trial.config["spec"]["key"]
            self.running.pop(key, None)
            self.last_epoch_line.pop(key, None)
            died, reason = self._latest_failure(trial)
            echo(f"    {key}: worker {'died' if died else 'crashed'} ({reason}); retrying "
                 f"(attempt {trial.num_failures + 1} of {trial.max_failures + 1})")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.running.pop(trial.config["spec"]["key"], None)
            died, reason = self._latest_failure(trial)
            if died:
                times = trial.num_failures
                message = (f"the trial's worker died {times} time{'s' if times != 1 else ''} ({reason}); "
                           "raise resources.max_retries or give trials more memory")
            else:
                message = f"the trial's worker crashed: {reason}"
            self._store_failure(trial, message)

        @staticmethod
        def _latest_failure(trial) -> tuple[bool, str]:
            """(whether the trial's worker process died, one line on why) for the trial's latest failure."""
            import re

            from ray import cloudpickle
            from ray.exceptions import RayActorError, RayTaskError

            # Ray writes the latest error to the trial's local staging folder first and uploads
            # it to storage only later (trial.get_pickled_error reads storage): read it locally.
            error = None
            for read in (lambda: cloudpickle.loads(Path(trial.pickled_error_file).read_bytes()), trial.get_pickled_error):
                try:
                    error = read()
                except Exception:  # not there (yet), or it cannot be unpickled here: try the next, else the text trace
                    continue
                if error is not None:
                    break
            if isinstance(error, RayTaskError) and isinstance(error.as_instanceof_cause(), RayActorError):
                error = error.as_instanceof_cause()
            if isinstance(error, RayActorError):
                detail = getattr(error, "error_msg", "") or str(error)
                pid = re.search(r"\bpid: (\d+)", detail)
                ip = re.search(r"\bip: (\S+)", detail)
                exit_detail = re.search(r"Worker exit detail: (.*?)(?:\s+(?:Some common causes|There are some potential root causes)|$)", detail, re.S)
                where = f"pid {pid.group(1)}" + (f" on {ip.group(1)}" if ip else "") if pid else "its worker process"
                why = (" ".join(exit_detail.group(1).split()) if exit_detail else detail.strip().splitlines()[0]).rstrip(".")
                return True, f"{where}: {why}"[:300]
            if error is not None:
                return False, str(error).strip().splitlines()[-1][:300] if str(error).strip() else type(error).__name__
            text = ""
            for read in (lambda: Path(trial.error_file).read_text(), trial.get_error):
                try:
                    text = read() or ""
                except Exception:
                    continue
                if text.strip():
                    break
            return False, (text.strip().splitlines()[-1][:300] if text.strip() else "no error was recorded")

        def _store_failure(self, trial, message: str):
            record = stamp(failure_record(trial.config["spec"], message), run)
            run.write_trial(record)
            self._progress(record)

        def _progress(self, record: dict):
            self.finished += 1
            echo(progress_line(record, self.finished, total, already_done, time.monotonic() - self.started))
            run.write_tables()

    return CollectResults()


def pending_specs(suite: SuiteConfig, run: RunDir, specs: list[dict] | None = None) -> list[dict]:
    """Trial specs (default: the suite's grid) that have no successful record in the run yet."""
    finished = run.finished_keys()
    return [spec for spec in (specs if specs is not None else trial_specs(suite)) if spec["key"] not in finished]


def start_ray(address: str | None, debug: bool) -> None:
    """Connect to (or start) Ray, shipping the project to the workers as the working_dir."""
    import ray

    try:
        ray.init(
            address=address,
            runtime_env={"working_dir": str(ROOT), "excludes": ["/results/", "/.git/", "__pycache__/", "/.cache/", "*.pyc"]},
            include_dashboard=False,
            logging_level=logging.INFO if debug else logging.ERROR,
            log_to_driver=debug,
            ignore_reinit_error=True,
        )
    except ConnectionError as error:  # only a failed connection; other start-up errors keep their own message
        if address is None:
            raise
        last_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise DrbenchError(
            f"could not connect to the Ray cluster at --address {address} ({last_line}). Check that the cluster is "
            "running (`ray status --address ...`) and, if it uses token authentication, that RAY_AUTH_MODE=token and "
            "its token are set for this shell; or leave out --address to start a local Ray."
        ) from error


def run_suite(suite: SuiteConfig, run: RunDir, splits: dict[str, Split], address: str | None = None,
              debug: bool = False, echo=print, specs: list[dict] | None = None) -> int:
    """Run every unfinished trial (default: the suite's grid, else ``specs``), then the latency phase; returns the number of failed trials."""
    import ray

    pending, total = unfinished_specs(suite, run, specs, echo)
    if not pending and not pending_latency(run):
        return 0
    already_done = total - len(pending)
    if already_done and pending:
        echo(f"resuming {run.path}: {already_done} of {total} trials already finished, {len(pending)} to run")
    start_ray(address, debug)
    try:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        resources = {"cpu": suite.resources.cpus_per_trial, "gpu": suite.resources.gpus_per_trial if has_gpu else 0}
        if pending:
            train_on_ray(suite, run, splits, pending, total, resources, has_gpu, echo)
        measure_pending(run, splits, latency_threads(suite), echo=echo,
                        job=_ray_latency_job({**resources, "max_retries": suite.resources.max_retries}))
    finally:
        ray.shutdown()
    frame = run.write_tables()
    failed = frame[frame["status"] != "ok"] if not frame.empty else frame
    return len(failed)


def _ray_latency_job(resources: dict):
    """The latency phase's measurement as a Ray task with one trial's resources (the runner waits for each in turn)."""
    import ray

    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=resources["max_retries"])(latency_job)
    return lambda payload, record, eval_set, threads: ray.get(task.remote(payload, record, eval_set, threads))


def train_on_ray(suite: SuiteConfig, run: RunDir, splits: dict[str, Split], pending: list[dict], total: int, resources: dict,
                 has_gpu: bool, echo=print) -> None:
    """The training trials of ``pending`` as one Ray Tune grid; each finished trial is written by the callback."""
    import ray
    from ray import tune

    already_done = total - len(pending)
    trainable = tune.with_resources(tune.with_parameters(_trainable, splits=splits), resources)
    echo(f"running {len(pending)} trials on Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs"
         f"{', GPUs' if has_gpu else ''}; {resources['cpu']:g} CPU{' + %g GPU' % resources['gpu'] if has_gpu else ''} per trial)")
    attempt = run.metadata().get("attempts", 0) + 1
    run.update_metadata(attempts=attempt)
    callback = make_callback(run, total, already_done, suite.protocol.monitor, echo)
    tuner = tune.Tuner(
        trainable,
        param_space={"spec": tune.grid_search(pending)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=suite.resources.max_concurrent_trials or None,
            trial_name_creator=lambda trial: trial.config["spec"]["key"],
            trial_dirname_creator=lambda trial: trial.config["spec"]["key"],
        ),
        run_config=tune.RunConfig(
            # Ray's own bookkeeping stays in Ray's storage (~/ray_results by default),
            # out of the results folder; the run directory holds only our files.
            name=f"drbench-{suite.name}-{run.path.name}-attempt{attempt}",
            verbose=0,
            callbacks=[callback],
            # A trial whose worker dies (OOM-killed, node lost) starts again from scratch up to
            # max_retries times; an exception inside the model never reaches Ray (see _trainable).
            failure_config=tune.FailureConfig(max_failures=suite.resources.max_retries),
        ),
    )
    tuner.fit()
