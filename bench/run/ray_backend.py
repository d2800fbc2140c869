"""The Ray Tune back-end: a suite's trials as one grid of Tune trials, locally or on a cluster (``--address``).

The driver ships the project to the workers as Ray's ``working_dir``, the
user's plugins as its ``py_modules`` (``bench.plugins``), and
the splits through Ray's object store (``tune.with_parameters``); a
finished trial's record, per-user arrays and trained model come back in its
last reported result, so a cluster needs no shared file system. A Tune
callback turns Tune's events into the engine's ``TrialSink`` calls. A trial
whose worker dies (OOM-killed, node lost) starts again from scratch up to
``resources.max_retries`` times; an exception inside a model never reaches
Ray (``_trainable`` records it), so it fails at once.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bench.errors import DrbenchError
from bench.plugins import import_plugins, ship_paths
from bench.protocol.splits import Split
from bench.records.run_dir import RunDir
from bench.run.config import SuiteConfig
from bench.run.engine import TrialSink, crashed_trial_record
from bench.run.latency_phase import latency_job, snapshot
from bench.run.trial import train_and_test

ROOT = Path(__file__).resolve().parents[2]
RECORD_KEY, ARRAYS_KEY, MODEL_KEY = "trial_record", "trial_arrays", "trial_model"


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


def make_callback(sink: TrialSink):
    """A Tune callback that reports every trial event to ``sink``."""
    from ray import tune

    class ReportToSink(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            sink.trial_started(trial.config["spec"]["key"])

        def on_step_end(self, iteration, trials, **info):
            sink.tick()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "epoch" in result and not result.get("finished"):
                sink.trial_validated(trial.config["spec"]["key"], result["epoch"], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if RECORD_KEY not in result:
                sink.trial_failed(trial.config["spec"], "the trial ended without reporting a result")
                return
            arrays = _decode_arrays(result[ARRAYS_KEY]) if result.get(ARRAYS_KEY) else None
            model = base64.b64decode(result[MODEL_KEY]) if result.get(MODEL_KEY) else None
            sink.trial_finished(json.loads(result[RECORD_KEY]), arrays, model)

        # Ray Tune (2.60) calls on_trial_recover, not on_trial_error, after each failed
        # attempt it will retry (the trial goes back to PENDING, on_trial_start comes again
        # with the new worker), and on_trial_error once, when no retry is left. So a trial
        # is counted once: on_trial_complete, or on_trial_error after its last attempt.
        def on_trial_recover(self, iteration, trials, trial, **info):
            died, reason = self._latest_failure(trial)
            sink.trial_retried(trial.config["spec"]["key"], f"worker {'died' if died else 'crashed'} ({reason}); retrying "
                               f"(attempt {trial.num_failures + 1} of {trial.max_failures + 1})")

        def on_trial_error(self, iteration, trials, trial, **info):
            died, reason = self._latest_failure(trial)
            if died:
                times = trial.num_failures
                message = (f"the trial's worker died {times} time{'s' if times != 1 else ''} ({reason}); "
                           "raise resources.max_retries or give trials more memory")
            else:
                message = f"the trial's worker crashed: {reason}"
            sink.trial_failed(trial.config["spec"], message)

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

    return ReportToSink()


def start_ray(address: str | None, debug: bool, plugins=()) -> None:
    """Connect to (or start) Ray, shipping the project to the workers as the working_dir and the plugins as py_modules."""
    import ray

    runtime_env = {"working_dir": str(ROOT), "excludes": ["/results/", "/.git/", "__pycache__/", "/.cache/", "*.pyc"]}
    if plugins:
        # each file or package folder goes to every worker under the name the driver imported it by: no shared file system
        runtime_env["py_modules"] = ship_paths(plugins)
    try:
        ray.init(
            # Without --address, a Ray of our own: "local" never joins another Ray already running on
            # this machine (address=None would, e.g. a second suite's, and stall when that one ends).
            address=address or "local",
            runtime_env=runtime_env,
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


class RayBackend:
    """Trials as Ray Tune trials with ``resources.cpus_per_trial`` CPUs (and ``gpus_per_trial`` where Ray sees GPUs)."""

    def __init__(self, address: str | None = None, debug: bool = False):
        self.address, self.debug = address, debug
        self.resources: dict = {}

    @contextmanager
    def session(self, suite: SuiteConfig):
        import ray

        start_ray(self.address, self.debug, suite.plugins)
        try:
            has_gpu = ray.cluster_resources().get("GPU", 0) > 0
            self.resources = {"cpu": suite.resources.cpus_per_trial, "gpu": suite.resources.gpus_per_trial if has_gpu else 0}
            yield self
        finally:
            ray.shutdown()

    def train(self, suite: SuiteConfig, run: RunDir, pending: list[dict], splits: dict[str, Split], sink: TrialSink) -> None:
        import ray
        from ray import tune

        resources = self.resources
        sink.echo(f"running {len(pending)} trials on Ray ({ray.cluster_resources().get('CPU', 0):.0f} CPUs"
                  f"{', GPUs' if resources['gpu'] else ''}; {resources['cpu']:g} CPU"
                  f"{' + %g GPU' % resources['gpu'] if resources['gpu'] else ''} per trial)")
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trainable, splits=splits), resources),
            param_space={"spec": tune.grid_search(pending)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=suite.resources.max_concurrent_trials or None,
                trial_name_creator=lambda trial: trial.config["spec"]["key"],
                trial_dirname_creator=lambda trial: trial.config["spec"]["key"],
            ),
            run_config=tune.RunConfig(
                # Ray's own bookkeeping stays in Ray's storage (~/ray_results by default),
                # out of the results folder; the run directory holds only our files.
                name=f"drbench-{suite.name}-{run.path.name}-attempt{run.metadata().get('attempts', 1)}",
                verbose=0,
                callbacks=[make_callback(sink)],
                failure_config=tune.FailureConfig(max_failures=suite.resources.max_retries),
            ),
        )
        tuner.fit()

    def latency_job(self, suite: SuiteConfig):
        """The latency measurement as a Ray task with one trial's resources; the engine waits for each in turn."""
        import ray

        task = ray.remote(num_cpus=self.resources["cpu"], num_gpus=self.resources["gpu"],
                          max_retries=suite.resources.max_retries)(_latency_job_with_plugins)
        plugins = [asdict(plugin) for plugin in suite.plugins]
        return lambda payload, record, eval_set, threads: ray.get(task.remote(plugins, payload, record, eval_set, threads))


def _latency_job_with_plugins(plugins: list[dict], payload: bytes, record: dict, eval_set, threads: int) -> dict:
    """``latency_job`` on a worker that first imports the plugins: a plugin model's pickle names its module."""
    import_plugins(plugins)
    return latency_job(payload, record, eval_set, threads)
