"""Runs a suite's trials one after another in this process, without Ray (``run_bench.py --no-ray``).

For a machine where Ray cannot be installed (a borrowed GPU box with no
package index) and for debugging with plain tracebacks. The trials, the run
folder, resuming and the reports are the same as with ``tune_runner``; only
the scheduling differs: no parallel trials, no cluster.
"""

from __future__ import annotations

import time

from bench.config import SuiteConfig
from bench.latency import measure_pending, snapshot
from bench.results import RunDir
from bench.splits import Split
from bench.trial import train_and_test
from bench.tune_runner import (EPOCH_LINE_SECONDS, crashed_trial_record, epoch_line, latency_threads, progress_line, stamp,
                               unfinished_specs)


def run_suite_in_process(suite: SuiteConfig, run: RunDir, splits: dict[str, Split], echo=print,
                         specs: list[dict] | None = None) -> int:
    """Run every unfinished trial in this process; returns the number of failed trials.

    A failing trial is recorded (with its traceback) and the suite goes on,
    as under Ray; Ctrl-C stops at once and keeps the finished trials. Once
    every trial has trained, the latency phase times the trained models.
    """
    pending, total = unfinished_specs(suite, run, specs, echo)
    if not pending:
        measure_pending(run, splits, latency_threads(suite), echo=echo)
        return 0
    already_done = total - len(pending)
    echo(f"running {len(pending)} trials in this process, one after another (no Ray)"
         + (f"; {already_done} of {total} already finished" if already_done else ""))
    run.update_metadata(attempts=run.metadata().get("attempts", 0) + 1)
    started = time.monotonic()
    for finished, spec in enumerate(pending, start=already_done + 1):
        last_line = [0.0]

        def on_validation(record: dict, key=spec["key"]) -> None:
            now = time.monotonic()
            if now - last_line[0] >= EPOCH_LINE_SECONDS:
                last_line[0] = now
                echo(epoch_line(key, record["epoch"], suite.protocol.monitor, record))

        try:
            record, arrays, model = train_and_test(spec, splits[spec["dataset"]], on_validation)
            run.save_pending_model(spec["key"], snapshot(model))
            del model
        except Exception as error:  # the trial fails, the suite goes on
            record, arrays = crashed_trial_record(spec, error), None
        run.write_trial(stamp(record, run), arrays)
        echo(progress_line(record, finished, total, already_done, time.monotonic() - started))
        run.write_tables()
    measure_pending(run, splits, latency_threads(suite), echo=echo)
    frame = run.write_tables()
    return int((frame["status"] != "ok").sum())
