"""Validation at equal epochs: how far each model has come after the same number of epochs.

Read from the trials' saved validation curves (``history``), never from live
models. For a model and an epoch E the value is the best validation score
reached by epoch E, i.e. the score of the checkpoint the harness would keep
if training had stopped there; mean ± sample std over seeds.

The epochs compared are those every model of the dataset reached in every
seed (E = the smallest last epoch), at a quarter, half and all of E. The
next column sets each model against the best baseline (``baselines/``) at E,
the question "does it learn as well as SASRec, epoch for epoch?"; the last
gives each model's best over its whole run and the mean epoch it came at.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tabulate import tabulate


def best_by_epoch(history: list[dict], monitor: str, epoch: int) -> float:
    """The best validation ``monitor`` among the curve's points at or before ``epoch`` (NaN if none)."""
    values = [h[f"valid_{monitor}"] for h in history if h["epoch"] <= epoch and h.get(f"valid_{monitor}") is not None]
    return max(values) if values else np.nan


def compared_epochs(last_epochs: list[int]) -> list[int]:
    """A quarter, half and all of the smallest last epoch (distinct, at least 1)."""
    common = min(last_epochs)
    return sorted({max(1, round(common / 4)), max(1, round(common / 2)), common})


def equal_epoch_frame(records: list[dict], monitor: str, baselines: set[str], order: list[str] | None = None) -> pd.DataFrame:
    """One row per dataset × model × compared epoch: mean and std over seeds, the ratio to the best baseline at the last
    compared epoch, and each model's best over its whole run (``run_best``, at mean epoch ``run_best_epoch``).

    Models appear in ``order`` (e.g. the suite's), then any others in record order.
    """
    rows = []
    curves = [r for r in records if r.get("status") == "ok" and r.get("history")]
    for dataset in dict.fromkeys(r["dataset"] for r in curves):
        group = [r for r in curves if r["dataset"] == dataset]
        if len({r["model"] for r in group}) < 2:
            continue  # nothing to compare
        epochs = compared_epochs([max(h["epoch"] for h in r["history"]) for r in group])
        models = dict.fromkeys([m for m in order or [] if any(r["model"] == m for r in group)] + [r["model"] for r in group])
        for model in models:
            trials = [r for r in group if r["model"] == model]
            finals = [max((h for h in r["history"] if h.get(f"valid_{monitor}") is not None), key=lambda h: h[f"valid_{monitor}"],
                          default=None) for r in trials]
            finals = [h for h in finals if h is not None]
            run_best = np.mean([h[f"valid_{monitor}"] for h in finals]) if finals else np.nan
            run_best_epoch = np.mean([h["epoch"] for h in finals]) if finals else np.nan
            for epoch in epochs:
                values = np.array([best_by_epoch(r["history"], monitor, epoch) for r in trials], dtype=float)
                rows.append({"dataset": dataset, "model": model, "baseline": model in baselines, "epoch": epoch,
                             "mean": np.nanmean(values) if np.isfinite(values).any() else np.nan,
                             "std": np.nanstd(values, ddof=1) if np.isfinite(values).sum() > 1 else np.nan,
                             "seeds": int(np.isfinite(values).sum()), "run_best": run_best, "run_best_epoch": run_best_epoch})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["vs_best_baseline"] = np.nan
    for dataset, group in frame.groupby("dataset", sort=False):
        last = group[group["epoch"] == group["epoch"].max()]
        reference = last[last["baseline"]]
        if reference.empty:
            continue
        best = reference.loc[reference["mean"].idxmax()]
        index = last.index
        frame.loc[index, "vs_best_baseline"] = last["mean"] / best["mean"]
        frame.loc[frame["dataset"] == dataset, "reference"] = best["model"]
    return frame


def equal_epoch_markdown(frame: pd.DataFrame, monitor: str) -> str:
    """A table per dataset: the model's best validation score by each compared epoch, and its ratio to the best baseline."""
    if frame.empty:
        return ""
    lines = []
    for dataset, group in frame.groupby("dataset", sort=False):
        epochs = sorted(group["epoch"].unique())
        reference = group["reference"].dropna().iloc[0] if "reference" in group and group["reference"].notna().any() else None
        headers = ["model", "seeds", *[f"by epoch {e}" for e in epochs]]
        if reference:
            headers.append(f"vs {reference} at {epochs[-1]}")
        headers.append("best of the run (epoch)")
        rows = []
        for model, rows_of_model in group.groupby("model", sort=False):
            by_epoch = rows_of_model.set_index("epoch")
            cells = [model, str(int(by_epoch["seeds"].iloc[-1]))]
            for epoch in epochs:
                mean, std = by_epoch.loc[epoch, "mean"], by_epoch.loc[epoch, "std"]
                cells.append("–" if np.isnan(mean) else f"{mean:.4f}" + ("" if np.isnan(std) else f" ± {std:.4f}"))
            if reference:
                ratio = by_epoch.loc[epochs[-1], "vs_best_baseline"]
                cells.append("–" if np.isnan(ratio) else f"{ratio:.2f}x")
            best, at = by_epoch["run_best"].iloc[-1], by_epoch["run_best_epoch"].iloc[-1]
            cells.append("–" if np.isnan(best) else f"{best:.4f} ({at:.0f})")
            rows.append(cells)
        table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True,
                         colalign=("left",) + ("right",) * (len(headers) - 1))
        lines += [f"### {dataset}", "", table, ""]
    lines.append(f"Best validation {monitor.upper()} reached by each epoch (the checkpoint kept had training stopped there), "
                 "mean ± sample std over seeds; the epochs are a quarter, half and all of the fewest epochs any trial ran; "
                 "the last column is the best of each whole run (mean over seeds) and the mean epoch it came at. "
                 "Validation only: no test number is used here.")
    return "\n".join(lines) + "\n"
