"""Summary tables rendered from ``trials.csv`` rows (never from live models)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tabulate import tabulate

ACCURACY_COLUMNS = ["test_ndcg@10", "test_hr@10", "test_mrr@10", "test_ndcg@20", "test_hr@20", "test_coverage@10"]
COST_COLUMNS = {"num_parameters": "params", "epoch_time_s": "s/epoch", "train_time_s": "train s", "latency_p50_ms": "ms/user (p50)", "users_per_s": "users/s"}


METRIC_LABELS = {"ndcg": "NDCG", "hr": "HR", "mrr": "MRR", "coverage": "Cov"}


def _header(column: str) -> str:
    metric, _, k = column.removeprefix("test_").partition("@")
    return f"{METRIC_LABELS[metric]}@{k}"


NOT_APPLICABLE = "n/a"  # a metric at a K beyond the model's generated list: that cell has no value to measure
NOT_CONVERGED = "‡"  # beside a model: a seed's training ended at its epoch or time cap, not by early stopping
NOT_CONVERGED_NOTE = (f"{NOT_CONVERGED} = not converged: training of at least one seed ended at training.epochs or max_minutes, "
                      "not by early stopping (stop_reason in trials.csv)")


def not_converged(trials: pd.DataFrame) -> int:
    """How many of these trials were cut by a safety cap (records before stop reasons count as converged)."""
    return int((trials["converged"] == False).sum()) if "converged" in trials else 0  # noqa: E712 (NaN: unknown)


def model_label(model: str, trials: pd.DataFrame) -> str:
    """The model's name, marked where any of its trials did not converge."""
    return f"{model} {NOT_CONVERGED}" if not_converged(trials) else model


def _mean_std(values: pd.Series, digits: int = 4) -> str:
    values = values.astype(float).dropna()  # NaN: K beyond a generated list
    if values.empty:
        return NOT_APPLICABLE
    if len(values) == 1:
        return f"{values.iloc[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _cost(value: float, column: str) -> str:
    if pd.isna(value):
        return "–"
    if column == "num_parameters":
        return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{int(value):,}"
    if column == "users_per_s":
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def dataset_table(frame: pd.DataFrame, mark_best=lambda cell: f"**{cell}**") -> list[list[str]]:
    """Rows of one dataset's table: mean ± std over seeds, best mean marked (bold in Markdown)."""
    ok = frame[frame["status"] == "ok"]
    columns = [c for c in ACCURACY_COLUMNS if c in ok.columns]
    grouped = ok.groupby("model", sort=False)
    means = grouped[columns].mean()
    best = {c: means[c].max() for c in columns}
    rows = []
    for model, group in grouped:
        row = [model_label(model, group), str(len(group))]
        for column in columns:
            cell = _mean_std(group[column])
            # NaN means (not measured) are never best, and a column needs two measured models to have one
            row.append(mark_best(cell) if np.isclose(means.loc[model, column], best[column]) and means[column].notna().sum() > 1 else cell)
        row += [_cost(group[c].mean(), c) if c in group else "–" for c in COST_COLUMNS]
        rows.append(row)
    failed = frame[frame["status"] != "ok"]
    for _, trial in failed.iterrows():
        rows.append([f"{trial['model']} (seed {trial['seed']}: failed)", "0"] + ["–"] * (len(columns) + len(COST_COLUMNS)))
    return rows


def _generated_note(ok: pd.DataFrame) -> str:
    generated = sorted(ok.loc[ok["ranking"] == "generated", "model"].unique()) if "ranking" in ok else []
    return f" (generated top-K lists: {', '.join(generated)})" if generated else ""


STEPS_COLUMNS = {"test_ndcg@10": "NDCG@10", "test_hr@10": "HR@10", "latency_p50_ms": "ms/user (p50)",
                 "latency_p95_ms": "ms/user (p95)", "users_per_s": "users/s"}


def steps_rows(steps: pd.DataFrame) -> list[list[str]]:
    """Quality and latency per number of denoising steps: mean ± std over seeds."""
    rows = []
    for (model, n_steps), group in steps.groupby(["model", "inference_steps"], sort=True):
        row = [model, str(int(n_steps)), str(len(group))]
        for column in STEPS_COLUMNS:
            if column not in group:  # latency not measured yet (the latency phase runs after every trial has trained)
                row.append("–")
            else:
                row.append(_mean_std(group[column]) if column.startswith("test_") else _cost(group[column].mean(), column))
        rows.append(row)
    return rows


def results_markdown(frame: pd.DataFrame, title: str = "Results", terminal: bool = False, steps: pd.DataFrame | None = None) -> str:
    if frame.empty:
        return f"# {title}\n\nNo finished trials yet.\n"
    lines = [f"# {title}", ""]
    for dataset, group in frame.groupby("dataset", sort=False):
        ok = group[group["status"] == "ok"]
        columns = [c for c in ACCURACY_COLUMNS if c in ok.columns]
        headers = ["model", "seeds", *[_header(c) for c in columns], *COST_COLUMNS.values()]
        protocol = ""
        if not ok.empty:
            first = ok.iloc[0]
            protocol = (
                f" — split `{first['split']}` ({first['split_fingerprint']}), full ranking over "
                f"{int(first['n_items']):,} items{_generated_note(ok)}, {int(first['n_test_users']):,} test users, "
                f"history {'excluded' if first['exclude_history'] else 'not excluded'}"
            )
        rows = dataset_table(group, (lambda cell: f"{cell} *") if terminal else (lambda cell: f"**{cell}**"))
        table = tabulate(rows, headers=headers, tablefmt="simple" if terminal else "github", disable_numparse=True,
                         colalign=("left",) + ("right",) * (len(headers) - 1))
        lines += [f"## {dataset}{protocol}", "", table, ""]
        if steps is not None and not steps.empty and dataset in set(steps["dataset"]):
            headers = ["model", "steps", "seeds", *STEPS_COLUMNS.values()]
            table = tabulate(steps_rows(steps[steps["dataset"] == dataset]), headers=headers, tablefmt="simple" if terminal else "github",
                             disable_numparse=True, colalign=("left",) + ("right",) * (len(headers) - 1))
            lines += [f"### {dataset}: quality and latency per number of denoising steps (one training run each)", "", table, ""]
    best = "marked *" if terminal else "in bold"
    lines.append(f"Test metrics of the checkpoint with the best validation score; mean ± sample std over seeds; best mean {best}; "
                 f"{NOT_APPLICABLE} = not applicable (K beyond the model's generated list); – = not measured"
                 + (f"; {NOT_CONVERGED_NOTE}." if not_converged(frame[frame["status"] == "ok"]) else "."))
    return "\n".join(lines) + "\n"


def terminal_table(frame: pd.DataFrame, steps: pd.DataFrame | None = None) -> str:
    """The same tables, for the console."""
    return results_markdown(frame, title="Results", terminal=True, steps=steps)


def write_tables(run) -> pd.DataFrame:
    """Regenerate a run folder's ``trials.csv``, ``steps.csv`` and ``results.md`` from its saved trials; returns the trials."""
    from bench.files import atomic_write

    frame, steps = run.trials_frame(), run.steps_frame()
    atomic_write(run.path / "trials.csv", frame.to_csv(index=False))
    if not steps.empty:
        atomic_write(run.path / "steps.csv", steps.to_csv(index=False))
    atomic_write(run.path / "results.md", results_markdown(frame, title=f"Results of {run.path.name}", steps=steps))
    return frame
