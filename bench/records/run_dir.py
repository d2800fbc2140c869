"""The run directory: the single source of truth for a suite's results.

Layout of ``results/<suite>/<run-id>/``::

    suite.json            the resolved suite and trial specs of this run
    trials/<key>.json     one finished trial (record + validation curve)
    trials/<key>.npz      its per-user test ranks
    pending-latency/      trained models waiting for the latency phase (deleted once timed)
    trials.csv            one row per trial, regenerated from trials/
    steps.csv             diffusion models' test metrics and latency per number of
                          denoising steps (when a suite sweeps steps), idem
    results.md            the summary table, regenerated from trials/

Every file is written to a temporary name and renamed into place, so a crash
never leaves a half-written file; a trial counts as finished exactly when
its JSON exists.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import DrbenchError
from bench.files import atomic_write, json_default

RUN_MARKER = "suite.json"


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def trials_dir(self) -> Path:
        return self.path / "trials"

    @classmethod
    def create(cls, results_root: Path, suite_name: str, metadata: dict) -> "RunDir":
        suite_root = Path(results_root) / suite_name
        run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        path, suffix = suite_root / run_id, 1
        while True:  # mkdir, not exists(): runs started in the same second by parallel processes get distinct folders
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                suffix += 1
                path = suite_root / f"{run_id}-{suffix}"
            except OSError as error:
                raise DrbenchError(
                    f"cannot create the results directory {path}: {error.strerror}. "
                    "Choose a writable location with --results-dir."
                ) from None
        run = cls(path)
        run.write_json(RUN_MARKER, metadata)
        return run

    @classmethod
    def open(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / RUN_MARKER).is_file():
            raise DrbenchError(
                f"{path} is not a drbench run directory (no {RUN_MARKER} in it). "
                "Pass a folder like results/<suite>/<run-id>, or --resume without a path for the latest run of the suite."
            )
        return cls(path)

    @classmethod
    def latest(cls, results_root: Path, suite_name: str) -> "RunDir":
        suite_root = Path(results_root) / suite_name
        runs = sorted(p for p in suite_root.glob("*") if (p / RUN_MARKER).is_file()) if suite_root.is_dir() else []
        if not runs:
            raise DrbenchError(f"--resume found no earlier run of suite '{suite_name}' under {suite_root}; start one without --resume")
        return cls(runs[-1])

    def metadata(self) -> dict:
        return json.loads((self.path / RUN_MARKER).read_text(encoding="utf-8"))

    def update_metadata(self, **values) -> None:
        self.write_json(RUN_MARKER, {**self.metadata(), **values})

    def write_json(self, name: str, value) -> None:
        atomic_write(self.path / name, json.dumps(value, indent=2, default=json_default) + "\n")

    def write_trial(self, record: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        key = record["key"]
        if arrays:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **arrays)
            atomic_write(self.trials_dir / f"{key}.npz", buffer.getvalue())
        atomic_write(self.trials_dir / f"{key}.json", json.dumps(record, indent=2, default=json_default) + "\n")

    @property
    def pending_dir(self) -> Path:
        return self.path / "pending-latency"

    def save_pending_model(self, key: str, payload: bytes) -> None:
        """A trained model kept until the latency phase times it (written before its trial's record)."""
        atomic_write(self.pending_dir / f"{key}.pt", payload)

    def pending_model(self, key: str) -> bytes | None:
        path = self.pending_dir / f"{key}.pt"
        return path.read_bytes() if path.is_file() else None

    def drop_pending_model(self, key: str) -> None:
        (self.pending_dir / f"{key}.pt").unlink(missing_ok=True)
        if self.pending_dir.is_dir() and not any(self.pending_dir.iterdir()):
            self.pending_dir.rmdir()

    def records(self) -> list[dict]:
        if not self.trials_dir.is_dir():
            return []
        return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.trials_dir.glob("*.json"))]

    def finished_keys(self) -> set[str]:
        """Trials that finished successfully; failed ones are retried on resume."""
        return {r["key"] for r in self.records() if r.get("status") == "ok"}

    def trial_arrays(self, key: str) -> dict[str, np.ndarray]:
        with np.load(self.trials_dir / f"{key}.npz") as loaded:
            return dict(loaded)

    def trials_frame(self) -> pd.DataFrame:
        rows = []
        for record in self.records():
            row = {k: v for k, v in record.items() if k not in ("history", "steps_sweep")}
            if "stopped_early" in row and "converged" not in record:
                # a record from before stop reasons: it reached the epoch cap if it ran every allowed epoch without
                # stopping early; otherwise (patience, the time budget, or a model with no epochs) it does not say
                stopped_early = row.pop("stopped_early")
                allowed = (record.get("training") or {}).get("epochs")
                if not stopped_early and allowed and record.get("epochs_run", 0) >= allowed:
                    row.update(stop_reason="epoch cap", converged=False)
            for nested in ("params", "training", "protocol"):
                if isinstance(row.get(nested), dict):
                    row[nested] = json.dumps(row[nested], sort_keys=True)
            rows.append(row)
        return pd.DataFrame(rows)

    def steps_frame(self) -> pd.DataFrame:
        """One row per (trial, number of denoising steps) of the trials that swept steps."""
        rows = []
        for record in self.records():
            for entry in record.get("steps_sweep") or []:
                rows.append({key: record[key] for key in ("key", "dataset", "model", "seed")} | entry)
        return pd.DataFrame(rows)
