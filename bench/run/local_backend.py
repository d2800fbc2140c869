"""The in-process back-end (``run_bench.py --no-ray``): trials one after another in this process.

For a machine where Ray cannot be installed (a borrowed GPU box with no
package index) and for debugging with plain tracebacks. Same specs, run
folder, resuming and reports as with Ray; only the scheduling differs: no
parallel trials, no cluster.
"""

from __future__ import annotations

from contextlib import nullcontext

from bench.protocol.splits import Split
from bench.records.run_dir import RunDir
from bench.run.config import SuiteConfig
from bench.run.engine import TrialSink, crashed_trial_record
from bench.run.latency_phase import latency_job, snapshot
from bench.run.trial import train_and_test


class LocalBackend:
    """A failing trial is recorded (with its traceback) and the suite goes on; Ctrl-C stops at once, finished trials kept."""

    def session(self, suite: SuiteConfig):
        return nullcontext(self)

    def train(self, suite: SuiteConfig, run: RunDir, pending: list[dict], splits: dict[str, Split], sink: TrialSink) -> None:
        sink.echo(f"running {len(pending)} trials in this process, one after another (no Ray)")
        for spec in pending:
            sink.trial_started(spec["key"])
            model = None
            try:
                record, arrays, trained = train_and_test(
                    spec, splits[spec["dataset"]], lambda r, key=spec["key"]: sink.trial_validated(key, r["epoch"], r))
                model = snapshot(trained)
            except Exception as error:  # the trial fails, the suite goes on
                record, arrays = crashed_trial_record(spec, error), None
            sink.trial_finished(record, arrays, model)

    def latency_job(self, suite: SuiteConfig):
        return latency_job
