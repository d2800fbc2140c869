"""Figures of a run, from its saved trials (PNG for screens, PDF for papers).

- ``metrics``: per dataset, NDCG@10 and HR@10 per model, error bars = sample std over seeds.
- ``pareto``: accuracy vs per-user latency; diffusion models get one point per
  number of denoising steps, connected; the Pareto front over all points is drawn;
  a run trained on several machines draws each machine with its own marker.
- ``steps``: quality vs denoising steps, per diffusion model.
- ``validation``: the validation metric per epoch, per model (one line per seed).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bench.files import atomic_write  # noqa: E402
from bench.report.machines import SPLIT_MARKER, machine_letters, machine_marker, machine_of  # noqa: E402

ACCURACY = "test_ndcg@10"


def _save(figure, out_dir: Path, name: str) -> list[Path]:
    written = []
    for extension in ("png", "pdf"):
        path = out_dir / f"{name}.{extension}"
        buffer = BytesIO()
        # no creation date in a PDF: a rebuilt report is byte for byte the committed one
        metadata = {"CreationDate": None} if extension == "pdf" else None
        figure.savefig(buffer, format=extension, dpi=150, bbox_inches="tight", metadata=metadata)
        atomic_write(path, buffer.getvalue())
        written.append(path)
    plt.close(figure)
    return written


def _palette(models: list[str]) -> dict[str, tuple]:
    return dict(zip(models, sns.color_palette("tab10" if len(models) <= 10 else "husl", len(models))))


def metric_bars(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    ok = frame[frame["status"] == "ok"]
    long = ok.melt(id_vars=["dataset", "model", "seed"], value_vars=["test_ndcg@10", "test_hr@10"], var_name="metric", value_name="value")
    long["metric"] = long["metric"].map({"test_ndcg@10": "NDCG@10", "test_hr@10": "HR@10"})
    models = list(dict.fromkeys(ok["model"]))
    grid = sns.catplot(data=long, kind="bar", x="model", y="value", hue="model", order=models, hue_order=models, palette=_palette(models),
                       col="dataset", row="metric", errorbar="sd", capsize=0.2, sharey=False, height=3.2, aspect=max(1.2, len(models) / 5),
                       legend=False)
    grid.set_titles("{col_name} — {row_name}")
    grid.set_axis_labels("", "test value")
    for axis in grid.axes.flat:
        axis.tick_params(axis="x", rotation=45)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
    grid.figure.suptitle("Test accuracy (mean, error bars: std over seeds)", y=1.02)
    return _save(grid.figure, out_dir, "metrics")


def _points(frame: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One point per dataset x model (x steps): mean NDCG@10 and latency over seeds."""
    ok = frame[frame["status"] == "ok"]
    swept = set(zip(steps["dataset"], steps["model"])) if not steps.empty else set()
    single = ok[[(d, m) not in swept for d, m in zip(ok["dataset"], ok["model"])]]
    points = single.groupby(["dataset", "model"], sort=False)[[ACCURACY, "latency_p50_ms"]].mean().reset_index()
    points["steps"] = np.nan
    if swept:
        per_step = steps.groupby(["dataset", "model", "inference_steps"], sort=False)[[ACCURACY, "latency_p50_ms"]].mean().reset_index()
        points = pd.concat([points, per_step.rename(columns={"inference_steps": "steps"})], ignore_index=True)
    return points


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Points no other point beats on both latency (lower) and accuracy (higher), by increasing latency."""
    ordered = points.sort_values(["latency_p50_ms", ACCURACY], ascending=[True, False])
    front, best = [], -np.inf
    for index, row in ordered.iterrows():
        if row[ACCURACY] > best:
            front.append(index)
            best = row[ACCURACY]
    return ordered.loc[front]


def pareto(frame: pd.DataFrame, steps: pd.DataFrame, out_dir: Path) -> list[Path]:
    points = _points(frame, steps)
    datasets = list(dict.fromkeys(points["dataset"]))
    models = list(dict.fromkeys(frame["model"]))
    colors = _palette(models)
    letters = machine_letters(frame)  # several machines: latency compares only within one, so each gets a marker
    machines = machine_of(frame, letters) if letters else pd.Series(dtype=str)
    figure, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4.2), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        subset = points[points["dataset"] == dataset]
        front = pareto_front(subset)
        axis.step(front["latency_p50_ms"], front[ACCURACY], where="post", color="0.6", linestyle="--", linewidth=1, label="Pareto front")
        for model, group in subset.groupby("model", sort=False):
            group = group.sort_values("steps")
            swept = group["steps"].notna().any()
            axis.plot(group["latency_p50_ms"], group[ACCURACY], marker=machine_marker(machines.get((dataset, model), "A")),
                      linestyle="-" if swept else "none", color=colors[model], label=model)
            if swept:
                for i, (_, row) in enumerate(group.iterrows()):
                    # alternate above/below so that labels of nearby step counts do not overprint
                    axis.annotate(f"{int(row['steps'])}", (row["latency_p50_ms"], row[ACCURACY]), textcoords="offset points",
                                  xytext=(0, 6 if i % 2 == 0 else -11), ha="center", fontsize=7, color=colors[model])
        axis.set_xscale("log")
        axis.set_title(dataset)
        axis.set_xlabel("latency per user, p50 (ms, log scale)")
        axis.set_ylabel("test NDCG@10")
        axis.grid(True, which="both", alpha=0.3)
    by_label = {}
    for axis in axes[0]:  # every model once, also one that ran on only some datasets
        for handle, label in zip(*axis.get_legend_handles_labels()):
            # with several machines the marker tells the machine, so a model's entry shows its colour only
            by_label.setdefault(label, plt.Line2D([], [], color=colors[label], linewidth=3) if letters and label in colors else handle)
    for hardware, letter in letters.items():
        by_label[f"machine {letter}: {hardware}"] = plt.Line2D([], [], marker=machine_marker(letter), color="0.35", linestyle="none")
    if letters and (machines.str.len() > 1).any():
        by_label["seeds on several machines"] = plt.Line2D([], [], marker=SPLIT_MARKER, color="0.35", linestyle="none")
    figure.legend(list(by_label.values()), list(by_label), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    figure.suptitle("Accuracy vs latency (numbers: denoising steps" + ("; marker: machine)" if letters else ")"))
    figure.tight_layout()
    return _save(figure, out_dir, "pareto")


def quality_vs_steps(steps: pd.DataFrame, out_dir: Path, order: list[str]) -> list[Path]:
    if steps.empty:
        return []
    colors = _palette(order)  # the same colour per model in every figure
    swept = [m for m in order if m in set(steps["model"])]
    grid = sns.relplot(data=steps, kind="line", x="inference_steps", y=ACCURACY, hue="model", hue_order=swept,
                       palette={m: colors[m] for m in swept}, col="dataset", marker="o",
                       errorbar="sd", facet_kws={"sharey": False}, height=3.5, aspect=1.2)
    for axis in grid.axes.flat:
        axis.set_xscale("log", base=2)
        ticks = sorted(steps["inference_steps"].unique())
        axis.set_xticks(ticks, [str(int(t)) for t in ticks])
        axis.grid(True, alpha=0.3)
    grid.set_axis_labels("denoising steps at inference (log scale)", "test NDCG@10")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Quality vs denoising steps (one training run per seed; band: std over seeds)", y=1.03)
    return _save(grid.figure, out_dir, "steps")


def validation_curves(records: list[dict], monitor: str, out_dir: Path, order: list[str] | None = None) -> list[Path]:
    rows = [{"dataset": r["dataset"], "model": r["model"], "seed": r["seed"], "epoch": h["epoch"], "value": h.get(f"valid_{monitor}")}
            for r in records if r.get("status") == "ok" for h in r.get("history") or []]
    curves = pd.DataFrame(rows).dropna() if rows else pd.DataFrame()
    if curves.empty:
        return []
    models = [m for m in order or [] if m in set(curves["model"])] or list(dict.fromkeys(curves["model"]))
    grid = sns.relplot(data=curves, kind="line", x="epoch", y="value", hue="model", hue_order=models, palette=_palette(models),
                       units="seed", estimator=None, col="dataset", facet_kws={"sharey": False, "sharex": False}, height=3.5, aspect=1.3,
                       linewidth=1.2, marker="o", markersize=3, markeredgewidth=0)
    grid.set_axis_labels("epoch", f"validation {monitor.upper().replace('@', '@')}")
    grid.set_titles("{col_name}")
    for axis in grid.axes.flat:
        axis.grid(True, alpha=0.3)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs are whole numbers
    grid.figure.suptitle("Validation curves (one line per seed; the best epoch's checkpoint is tested)", y=1.03)
    return _save(grid.figure, out_dir, "validation")


def write_plots(frame: pd.DataFrame, steps: pd.DataFrame, records: list[dict], monitor: str, out_dir: Path) -> list[Path]:
    sns.set_theme(style="whitegrid", context="paper")
    ok = frame[frame["status"] == "ok"] if not frame.empty else frame
    if ok.empty:
        return []
    written = metric_bars(frame, out_dir)
    if "latency_p50_ms" in ok and ok["latency_p50_ms"].notna().any():  # none before the latency phase has run
        written += pareto(frame, steps, out_dir)
    order = list(dict.fromkeys(frame["model"]))
    written += quality_vs_steps(steps, out_dir, order)
    written += validation_curves(records, monitor, out_dir, order)
    return written
