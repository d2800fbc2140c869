"""Paper tables from a run's saved trials: accuracy with significance, efficiency, published numbers.

Everything here reads what the runner wrote (``trials/*.json`` and the
per-user ranks in ``trials/*.npz``); nothing is retrained or re-scored.

- Accuracy: mean ± sample std over seeds per dataset x model x metric; the
  best mean of each column in bold, the second underlined; a dagger where a
  non-baseline model is significantly better than the best baseline, an
  arrow where it is significantly worse (two-sided paired test on per-user
  values, Holm-corrected over every test of the table).
- Efficiency: parameters, training time per epoch and to the best
  validation epoch, inference latency p50/p95 per user and throughput, per
  model and, for diffusion models, per number of denoising steps.
- Published: measured numbers beside a source's numbers with the relative gap
  (``report.published_models`` may take a model's numbers from another source).
- Headline: per dataset, each model's NDCG@10 / HR@10, its verdict against
  the best baseline in words, its training time and latency, and its gap to
  the published number: the one table a README shows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tabulate import tabulate

from bench.report.machines import machine_letters, machine_of, machines_sentence
from bench.report.settings import ReportConfig
from bench.report.tables import NOT_APPLICABLE, NOT_CONVERGED, NOT_CONVERGED_NOTE, not_converged, write_tables
from bench.errors import DrbenchError
from bench.records.fingerprint import check_comparable
from bench.models.base import model_entry, model_names
from bench.models.external import NO_LATENCY
from bench.report.published import PublishedModels, PublishedSource, sources_of
from bench.records.run_dir import RunDir
from bench.report.significance import TEST_NAME, Comparison, compare_to_best_baseline, per_user_metric

METRIC_NAMES = {"hr": "HR", "ndcg": "NDCG", "mrr": "MRR"}


def metric_label(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{METRIC_NAMES[name]}@{k}"


@dataclass
class Cell:
    mean: float
    std: float  # nan with one seed
    n_seeds: int
    place: int = 0  # 1 = best mean of its column, 2 = second, 0 = neither
    verdict: str = ""  # against the best baseline: better, worse, no detectable difference ("" = not tested)
    p_holm: float = float("nan")
    not_converged: int = 0  # seeds whose training a safety cap cut short


@dataclass
class AccuracyTable:
    datasets: list[str]
    models: list[str]
    metrics: list[str]
    cells: dict  # (dataset, model, metric) -> Cell
    comparisons: list[Comparison]
    baselines: set[str]
    failed: pd.DataFrame  # failed trials (key, error)
    provenance: str = ""  # "Trained on <hardware>; code <commit>." for the caption
    ranking: str = "protocol"  # or "filtered": the user's own items removed from the ranking (RANKINGS)

    def cell(self, dataset: str, model: str, metric: str) -> Cell | None:
        return self.cells.get((dataset, model, metric))


def is_baseline(model_type: str) -> bool:
    """Models from the baselines/ package are the reference group of significance tests.

    External predictions (``--score``, model type ``external``, in no registry) are not a baseline: they are
    tested against the best one like any candidate.
    """
    # a plugin's model (docs/plugins.md) is a candidate, and --report rebuilds a run's tables without importing it
    return model_type in model_names() and model_entry(model_type).model_class.__module__.startswith("baselines.")


# which test ranks a table reads: the protocol's (the user's own items ranked or not, as the suite says), or the
# seen-filtered ones recorded beside them when the protocol keeps the history (the other papers' convention)
RANKINGS = {"protocol": ("test_", "test_ranks"), "filtered": ("test_filtered_", "test_filtered_ranks")}


def per_user_values(run: RunDir, ok: pd.DataFrame, metrics: list[str], ranking: str = "protocol"):
    """From the saved test ranks: (dataset, model) -> {metric: [U] per-user values averaged over seeds},
    and (dataset, model) -> (split fingerprint, [U] test users) for checking the pairing."""
    prefix, ranks_key = RANKINGS[ranking]
    values, evaluated = {}, {}
    for (dataset, model), group in ok.groupby(["dataset", "model"], sort=False):
        arrays = [run.trial_arrays(key) for key in group["key"]]
        users = arrays[0]["test_users"]
        splits = set(group["split_fingerprint"]) if "split_fingerprint" in group else {None}
        if len(splits) > 1 or any(not np.array_equal(a["test_users"], users) for a in arrays):
            raise DrbenchError(f"{dataset}/{model}: its seeds were tested on different users or splits; the split is not shared")
        ranks = [a[ranks_key] for a in arrays]
        # a metric the trials did not measure (K beyond a generated list) has no per-user values: NaN, never tested
        values[(dataset, model)] = {metric: per_user_metric(ranks, metric) if _measured(group, prefix + metric) else np.full(len(users), np.nan)
                                    for metric in metrics}
        evaluated[(dataset, model)] = (splits.pop(), users)
    return values, evaluated


def _measured(group: pd.DataFrame, column: str) -> bool:
    """False for a metric column that every trial of the group recorded as not measured (NaN: K beyond its generated list)."""
    return column not in group or not group[column].astype(float).isna().all()


def has_filtered_ranks(run: RunDir, frame: pd.DataFrame) -> bool:
    """Whether every successful trial kept seen-filtered per-user ranks (runs whose protocol keeps the history)."""
    ok = frame[frame["status"] == "ok"]
    return not ok.empty and all("test_filtered_ranks" in run.trial_arrays(key) for key in ok["key"])


def accuracy_table(run: RunDir, frame: pd.DataFrame, config: ReportConfig, ranking: str = "protocol") -> AccuracyTable:
    prefix = RANKINGS[ranking][0]
    ok = frame[frame["status"] == "ok"]
    metrics = list(config.metrics)
    datasets = list(dict.fromkeys(frame["dataset"]))
    models = list(dict.fromkeys(frame["model"]))
    baselines = {m for m, t in zip(ok["model"], ok["model_type"]) if is_baseline(t)}
    cells = {}
    for (dataset, model), group in ok.groupby(["dataset", "model"], sort=False):
        for metric in metrics:
            values = group[prefix + metric].astype(float)
            cells[(dataset, model, metric)] = Cell(values.mean(), values.std(ddof=1) if len(values) > 1 else float("nan"), len(values),
                                                   not_converged=not_converged(group))
    for dataset in datasets:
        for metric in metrics:
            column = {m: cells[(dataset, m, metric)].mean for m in models
                      if (dataset, m, metric) in cells and not np.isnan(cells[(dataset, m, metric)].mean)}  # NaN: not measured, no place
            distinct = sorted(set(np.round(list(column.values()), 12)), reverse=True)
            for model, mean in column.items():
                place = distinct.index(round(mean, 12)) + 1
                cells[(dataset, model, metric)].place = place if place <= 2 and len(column) > 1 else 0
    comparisons = []
    if baselines and set(ok["model"]) - baselines:
        values, evaluated = per_user_values(run, ok, metrics, ranking)
        comparisons = compare_to_best_baseline(values, baselines, metrics, config.significance_alpha, evaluated)
        for comparison in comparisons:
            cell = cells[(comparison.dataset, comparison.model, comparison.metric)]
            cell.verdict, cell.p_holm = comparison.verdict, comparison.p_holm
    failed = frame.loc[frame["status"] != "ok", ["key", "error"]] if "error" in frame else frame.iloc[0:0]
    return AccuracyTable(datasets, models, metrics, cells, comparisons, baselines, failed, provenance_sentence(ok), ranking)


def _number(value: float, scale: float) -> str:
    return f"{value * scale:.2f}" if scale >= 100 else f"{value * scale:.4f}"


VERDICT_MARKS = {"better": " †", "worse": " ↓"}  # against the best baseline; no mark: no detectable difference or not tested


def _cell_markdown(cell: Cell | None, scale: float) -> str:
    if cell is None:
        return "–"
    if np.isnan(cell.mean):  # K beyond the model's generated list
        return NOT_APPLICABLE
    text = _number(cell.mean, scale)
    text = f"**{text}**" if cell.place == 1 else f"<u>{text}</u>" if cell.place == 2 else text
    if not np.isnan(cell.std):
        text += f" ± {_number(cell.std, scale)}"
    return text + VERDICT_MARKS.get(cell.verdict, "") + (f" {NOT_CONVERGED}" if cell.not_converged else "")


def _cell_latex(cell: Cell | None, scale: float) -> str:
    if cell is None:
        return "--"
    if np.isnan(cell.mean):
        return NOT_APPLICABLE
    text = _number(cell.mean, scale)
    text = rf"\textbf{{{text}}}" if cell.place == 1 else rf"\underline{{{text}}}" if cell.place == 2 else text
    if not np.isnan(cell.std):
        text += rf"{{\scriptsize$\pm${_number(cell.std, scale)}}}"
    marks = VERDICT_MARKS.get(cell.verdict, "").strip() + (NOT_CONVERGED if cell.not_converged else "")
    return text + "".join(LATEX_SYMBOLS[mark] for mark in marks)


def _spread(table: AccuracyTable) -> str:
    seeds = sorted({c.n_seeds for c in table.cells.values()})
    return "one seed, so no std" if seeds == [1] else f"mean ± sample std over {'/'.join(map(str, seeds))} seeds"


def _citations(published: PublishedModels) -> str:
    """The sources' citations; with several, each says which models' numbers it gave."""
    sources = sources_of(published)
    if len(sources) == 1:
        return sources[0].citation
    cited = [f"{s.citation.rstrip('.')} ({', '.join(m for m, (source, _) in published.items() if source.key == s.key)})" for s in sources]
    return "; ".join(cited) + "."


def _setup(config: ReportConfig) -> str:
    """The suite's own sentence on how it was set up, as the opening of a caption ("" when it has none)."""
    return f"{config.setup.rstrip('.')}. " if config.setup else ""


def caption(table: AccuracyTable, config: ReportConfig, published: PublishedModels | None = None) -> str:
    unit = " (×100)" if config.scale == 100 else ""
    text = _setup(config) + (f"Test metrics{unit} ({_spread(table)}) of the checkpoint with the best validation score"
            + (", with each user's own training items removed from the ranking (seen-filtered)" if table.ranking == "filtered" else "")
            + ". Best mean per column in bold, second underlined.")
    if any(np.isnan(c.mean) for c in table.cells.values()):
        text += f" {NOT_APPLICABLE}: not applicable, K beyond the model's generated list."
    if table.comparisons:
        text += (f" Each other model is compared with the best baseline ({', '.join(sorted(table.baselines))}) by a "
                 + TEST_NAME.format(n=len(table.comparisons), alpha=config.significance_alpha)
                 + ": † significantly better, ↓ significantly worse, unmarked no detectable difference.")
    if published and config.layout == "metrics_as_rows":
        text += (f" (paper) columns: published by {_citations(published)} gap = (measured − published) / published;"
                 " – where the source reports no value.")
    if any(c.not_converged for c in table.cells.values()):
        text += f" {NOT_CONVERGED_NOTE}."
    if table.provenance:
        text += " " + table.provenance
    return text


def _distinct(frame: pd.DataFrame, column: str) -> list[str]:
    return [str(v) for v in dict.fromkeys(frame[column].dropna())] if column in frame else []


def provenance_sentence(frame: pd.DataFrame) -> str:
    """Which hardware and code produced the trials, e.g. "Trained on AMD EPYC (2 cores); code 8638526a."."""
    hardware = _distinct(frame, "hardware")
    commits = []
    for commit, dirty in dict.fromkeys(zip(frame.get("code_commit", pd.Series(dtype=str)), frame.get("code_dirty", pd.Series(dtype=str)))):
        if isinstance(commit, str):
            commits.append(commit[:10] + (" with uncommitted changes" if dirty is True or dirty == "True" else ""))
    parts = []
    if hardware:
        parts.append(f"Trained on {' and '.join(hardware)}")
    if commits:
        parts.append(f"code {', '.join(commits)}")
    return ("; ".join(parts) + ".") if parts else ""


def latency_sentence(frame: pd.DataFrame) -> str:
    """How the latency columns were measured, from the trials' own records."""
    methods = _distinct(frame, "latency_method")
    external = list(dict.fromkeys(frame.loc[frame["latency"] == NO_LATENCY, "model"])) if "latency" in frame else []
    untimed = f" Latency of {', '.join(external)}: {NO_LATENCY}." if external else ""
    if not methods:
        return untimed.strip() or "Latency: not measured by this version of drbench (older records)."
    pending = int((frame.get("latency") == "pending").sum()) if "latency" in frame else 0
    for hardware in machine_letters(frame):  # one method timed on several machines reads once, the machine per row
        methods = list(dict.fromkeys(m.replace(f"on {hardware}", "on the row's machine") for m in methods))
    text = "Latency: " + "; or ".join(methods) + "."
    return text + (f" {pending} trial(s) not timed yet (resume the run to time them)." if pending else "") + untimed


def published_columns(table: AccuracyTable, published: PublishedModels | None, scale: float, dataset: str,
                      metric: str) -> list[tuple[str, str]]:
    """(header, text) pairs beside a dataset x metric row: each mapped model's published value and our relative gap to it."""
    columns = []
    for label, (source, paper_name) in (published or {}).items():
        value = source.value(dataset, paper_name, metric)
        cell = table.cell(dataset, label, metric)
        gap = "–" if value is None or cell is None or np.isnan(cell.mean) else f"{(cell.mean - value) / value:+.1%}"
        columns += [(f"{paper_name} (paper)", "–" if value is None else _number(value, scale)), (f"gap {label}", gap)]
    return columns


def accuracy_markdown(table: AccuracyTable, config: ReportConfig, published: PublishedModels | None = None) -> str:
    """The accuracy table; in the metrics-as-rows layout, ``published`` ({label: (source, name there)}) adds paper columns."""
    labels = [metric_label(m) for m in table.metrics]
    blocks = []
    if config.layout == "metrics_as_rows":
        rows, extra = [], []
        for dataset in table.datasets:
            for i, (metric, label) in enumerate(zip(table.metrics, labels)):
                extra = published_columns(table, published, config.scale, dataset, metric)
                rows.append([dataset if i == 0 else "", label, *[_cell_markdown(table.cell(dataset, model, metric), config.scale) for model in table.models],
                             *[text for _, text in extra]])
        headers = ["dataset", "metric", *table.models, *[header for header, _ in extra]]
        blocks.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    else:
        for dataset in table.datasets:
            rows = [[model, *[_cell_markdown(table.cell(dataset, model, metric), config.scale) for metric in table.metrics]]
                    for model in table.models if any(table.cell(dataset, model, m) for m in table.metrics)]
            blocks.append(f"**{dataset}**\n\n" + tabulate(rows, headers=["model", *labels], tablefmt="github", disable_numparse=True))
    text = "\n\n".join(blocks) + f"\n\n{caption(table, config, published)}\n"
    return text + _failed_note(table)


def _failed_note(table: AccuracyTable) -> str:
    if table.failed.empty:
        return ""
    lines = [f"- `{key}`: {error}" for key, error in zip(table.failed["key"], table.failed["error"])]
    return "\nFailed trials (not in the table; `--resume` retries them):\n\n" + "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


LATEX_SYMBOLS = {"±": r"$\pm$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "↓": r"$^\downarrow$", "×": r"$\times$", "–": "--"}


def _latex_text(text: str) -> str:
    text = _latex_escape(text)
    for symbol, latex in LATEX_SYMBOLS.items():
        text = text.replace(symbol, latex)
    return text


def accuracy_latex(table: AccuracyTable, config: ReportConfig, published: PublishedModels | None = None) -> str:
    labels = [metric_label(m) for m in table.metrics]
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if config.layout == "metrics_as_rows":
        extra = published_columns(table, published, config.scale, table.datasets[0], table.metrics[0])
        lines += [rf"\begin{{tabular}}{{ll{'r' * (len(table.models) + len(extra))}}}", r"\toprule",
                  " & ".join(["Dataset", "Metric", *map(_latex_escape, table.models), *[_latex_escape(h) for h, _ in extra]]) + r" \\",
                  r"\midrule"]
        for d, dataset in enumerate(table.datasets):
            if d:
                lines.append(r"\midrule")
            for i, (metric, label) in enumerate(zip(table.metrics, labels)):
                cells = [_cell_latex(table.cell(dataset, model, metric), config.scale) for model in table.models]
                cells += [_latex_text(text) for _, text in published_columns(table, published, config.scale, dataset, metric)]
                lines.append(" & ".join([_latex_escape(dataset) if i == 0 else "", label, *cells]) + r" \\")
    else:
        n = len(table.metrics)
        lines += [rf"\begin{{tabular}}{{l{('r' * n) * len(table.datasets)}}}", r"\toprule",
                  " & ".join(["", *[rf"\multicolumn{{{n}}}{{c}}{{{_latex_escape(d)}}}" for d in table.datasets]]) + r" \\",
                  " ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + (i + 1) * n}}}" for i in range(len(table.datasets))),
                  " & ".join(["Model", *labels * len(table.datasets)]) + r" \\", r"\midrule"]
        for model in table.models:
            cells = [_cell_latex(table.cell(dataset, model, metric), config.scale) for dataset in table.datasets for metric in table.metrics]
            lines.append(" & ".join([_latex_escape(model), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_text(caption(table, config, published))}}}", r"\label{tab:accuracy}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def accuracy_frame(table: AccuracyTable) -> pd.DataFrame:
    """One tidy row per dataset x model x metric (unscaled), with the significance test's outcome."""
    tested = {(c.dataset, c.model, c.metric): c for c in table.comparisons}
    rows = []
    for (dataset, model, metric), cell in table.cells.items():
        comparison = tested.get((dataset, model, metric))
        rows.append({"dataset": dataset, "model": model, "metric": metric, "mean": cell.mean, "std": cell.std,
                     "seeds": cell.n_seeds, "place": cell.place, "baseline": model in table.baselines,
                     "compared_to": comparison.reference if comparison else "", "p_value": comparison.p_value if comparison else np.nan,
                     "p_holm": cell.p_holm, "verdict": cell.verdict, "not_converged_seeds": cell.not_converged})
    return pd.DataFrame(rows)


EFFICIENCY_COLUMNS = {
    "num_parameters": "params", "epoch_time_s": "s/epoch", "best_epoch": "best epoch",
    "time_to_best_s": "s to best", "train_time_s": "train s", "latency_p50_ms": "ms/user p50",
    "latency_p95_ms": "ms/user p95", "latency_p99_ms": "ms/user p99", "users_per_s": "users/s",
}


def _time_to_best(record_history: list[dict], best_epoch: int, epoch_time: float) -> float:
    entry = next((h for h in record_history if h.get("epoch") == best_epoch), None)
    if entry is not None and "train_time_s" in entry:
        return float(entry["train_time_s"])
    return best_epoch * epoch_time


def efficiency_frame(run: RunDir, frame: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per dataset x model (x denoising steps): size, training cost, inference cost."""
    ok = frame[frame["status"] == "ok"].copy()
    histories = {r["key"]: r.get("history", []) for r in run.records()}
    ok["time_to_best_s"] = [_time_to_best(histories.get(k, []), int(b), float(t))
                            for k, b, t in zip(ok["key"], ok["best_epoch"], ok["epoch_time_s"])]
    columns = [c for c in EFFICIENCY_COLUMNS if c in ok]
    rows = ok.groupby(["dataset", "model"], sort=False)[columns].mean().reset_index()
    rows.insert(2, "steps", ok.groupby(["dataset", "model"], sort=False)["inference_steps"].first().values
                if "inference_steps" in ok else np.nan)
    letters = machine_letters(ok)
    if letters:
        rows.insert(2, "machine", machine_of(ok, letters).values)
    if not steps.empty:
        per_step = steps.groupby(["dataset", "model", "inference_steps"], sort=False)[
            [c for c in ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "users_per_s", "test_ndcg@10") if c in steps]].mean().reset_index()
        per_step = per_step.rename(columns={"inference_steps": "steps"})
        trained = rows.set_index(["dataset", "model"])
        for column in ("machine", "num_parameters", "epoch_time_s", "best_epoch", "time_to_best_s", "train_time_s"):
            if column in trained:
                per_step[column] = [trained.loc[(d, m), column] for d, m in zip(per_step["dataset"], per_step["model"])]
        swept = set(zip(per_step["dataset"], per_step["model"]))
        rows = pd.concat([rows[[(d, m) not in swept for d, m in zip(rows["dataset"], rows["model"])]], per_step], ignore_index=True)
        order = {key: i for i, key in enumerate(dict.fromkeys(zip(frame["dataset"], frame["model"])))}
        rows = rows.iloc[sorted(range(len(rows)), key=lambda i: (order[(rows["dataset"].iloc[i], rows["model"].iloc[i])],
                                                                   rows["steps"].fillna(0).iloc[i]))].reset_index(drop=True)
    return rows


def _efficiency_value(value, column: str) -> str:
    if pd.isna(value):
        return "–"
    if column == "num_parameters":
        return f"{value / 1e6:.2f}M" if value >= 1e4 else f"{value:,.0f}"
    if column in ("best_epoch", "steps"):
        return f"{value:.0f}"
    if column == "users_per_s":
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def efficiency_rows(rows: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    machine = ["machine"] if "machine" in rows else []
    columns = [*machine, "steps", *[c for c in EFFICIENCY_COLUMNS if c in rows]]
    headers = ["dataset", "model", *[EFFICIENCY_COLUMNS.get(c, c) for c in columns]]
    body = [[r["dataset"], r["model"], *[r[c] if c == "machine" else _efficiency_value(r[c], c) for c in columns]]
            for _, r in rows.iterrows()]
    return headers, body


def efficiency_caption(frame: pd.DataFrame, config: ReportConfig | None = None) -> str:
    sentences = [_setup(config or ReportConfig()).strip(),
                 "Means over seeds. `s to best`: training time (validation excluded) until the epoch whose checkpoint is tested.",
                 latency_sentence(frame),
                 "Diffusion models have one row per number of denoising steps (one training run, so training columns repeat).",
                 machines_sentence(machine_letters(frame)), provenance_sentence(frame)]
    return " ".join(s for s in sentences if s)


def _text_columns(rows: pd.DataFrame) -> int:
    """How many leading columns of the efficiency table are text (left-aligned): dataset, model and maybe machine."""
    return 3 if "machine" in rows else 2


def efficiency_markdown(rows: pd.DataFrame, frame: pd.DataFrame | None = None, config: ReportConfig | None = None) -> str:
    headers, body = efficiency_rows(rows)
    left = _text_columns(rows)
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True,
                     colalign=("left",) * left + ("right",) * (len(headers) - left))
    return table + "\n\n" + efficiency_caption(frame if frame is not None else pd.DataFrame(), config) + "\n"


def efficiency_latex(rows: pd.DataFrame, frame: pd.DataFrame | None = None, config: ReportConfig | None = None) -> str:
    headers, body = efficiency_rows(rows)
    left = _text_columns(rows)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{'l' * left}{'r' * (len(headers) - left)}}}", r"\toprule",
             " & ".join(map(_latex_escape, headers)) + r" \\", r"\midrule"]
    lines += [" & ".join(_latex_text(v) for v in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{Efficiency: parameters, training time per epoch and until the selected epoch, inference latency per user "
              rf"(p50/p95/p99) and throughput. {_latex_text(efficiency_caption(frame if frame is not None else pd.DataFrame(), config))}}}",
              r"\label{tab:efficiency}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def published_frame(table: AccuracyTable, published: PublishedModels) -> pd.DataFrame:
    """Measured vs published for every cell a model's source reports; gap = (measured - published) / published."""
    rows = []
    for label, (source, paper_name) in published.items():
        for dataset in table.datasets:
            for metric in table.metrics:
                published = source.value(dataset, paper_name, metric)
                cell = table.cell(dataset, label, metric)
                if published is None:
                    continue
                measured = cell.mean if cell else np.nan
                rows.append({"dataset": dataset, "metric": metric, "model": label, "source": source.key, "source_model": paper_name,
                             "measured": measured, "published": published, "gap": (measured - published) / published})
    return pd.DataFrame(rows)


def published_markdown(rows: pd.DataFrame, sources: list[PublishedSource], scale: float) -> str:
    """Measured beside published; the caption cites every source, and names each row's source when there are several."""
    if rows.empty:
        return f"No cell of this run is reported by {' or '.join(s.key for s in sources)}.\n"
    several = len(sources) > 1
    body = [[r["dataset"], metric_label(r["metric"]), f"{r['model']} ({r['source_model']}{', ' + r['source'] if several else ''})",
             "–" if pd.isna(r["measured"]) else _number(r["measured"], scale), _number(r["published"], scale),
             "–" if pd.isna(r["gap"]) else f"{r['gap']:+.1%}"] for _, r in rows.iterrows()]
    table = tabulate(body, headers=["dataset", "metric", "model (as in source)", "measured", "published", "gap"],
                     tablefmt="github", disable_numparse=True, colalign=("left", "left", "left", "right", "right", "right"))
    cited = "\n\n".join(f"Published{f' ({s.key})' if several else ''}: {s.citation} Protocol there: {s.protocol}. {s.checked}" for s in sources)
    return f"{table}\n\n{cited}\n\nGap = (measured − published) / published.\n"


HEADLINE_METRICS = ("ndcg@10", "hr@10")  # what a reader of a recommender paper looks at first


def headline_metrics(metrics: list[str]) -> list[str]:
    """NDCG@10 and HR@10 when the report has both, else its first two metrics; the verdict is on the first."""
    return list(HEADLINE_METRICS) if set(HEADLINE_METRICS) <= set(metrics) else list(metrics[:2])


def _headline_verdict(table: AccuracyTable, dataset: str, model: str, metric: str, reference: str) -> str:
    """In words, against the best baseline; "" where nothing was compared (no reference, or the metric not measured)."""
    if not reference:
        return ""
    if model == reference:
        return "best baseline"
    return "baseline" if model in table.baselines else table.cell(dataset, model, metric).verdict


def _first(rows: pd.DataFrame, column: str) -> float:
    return rows[column].iloc[0] if column in rows and not rows.empty else np.nan


def _headline_cost(efficiency: pd.DataFrame, dataset: str, model: str, steps) -> dict:
    """Training time to the tested epoch and latency p50 of a model, timed at the steps its accuracy was tested with."""
    rows = efficiency[(efficiency["dataset"] == dataset) & (efficiency["model"] == model)]
    # a swept diffusion model has one row per step count (its training columns repeat); a step count never timed reads –
    timed = rows[rows["steps"] == steps] if len(rows) > 1 else rows
    return {"time_to_best_s": _first(rows, "time_to_best_s"), "latency_steps": _first(timed, "steps"),
            "latency_p50_ms": _first(timed, "latency_p50_ms")}


def headline_frame(table: AccuracyTable, frame: pd.DataFrame, efficiency: pd.DataFrame, published: PublishedModels | None) -> pd.DataFrame:
    """One row per dataset x model: the headline metrics, the verdict on the first, training and inference cost, published gap."""
    metrics = headline_metrics(table.metrics)
    first = metrics[0]
    ok = frame[frame["status"] == "ok"]
    configured = ok.groupby(["dataset", "model"], sort=False)["inference_steps"].first() if "inference_steps" in ok else pd.Series(dtype=float)
    letters = machine_letters(ok)
    machine = machine_of(ok, letters) if letters else pd.Series(dtype=str)
    hardware = ok.groupby(["dataset", "model"], sort=False)["hardware"].agg(lambda v: " + ".join(dict.fromkeys(v.dropna()))) \
        if "hardware" in ok else pd.Series(dtype=str)
    references = {c.dataset: c.reference for c in table.comparisons if c.metric == first}
    rows = []
    for dataset in table.datasets:
        reference = references.get(dataset, "")
        for model in table.models:
            cells = [table.cell(dataset, model, metric) for metric in metrics]
            if cells[0] is None:  # no successful trial of this model on this dataset
                continue
            source, name = (published or {}).get(model, (None, ""))
            value = source.value(dataset, name, first) if source else None
            row = {"dataset": dataset, "model": model, "baseline": model in table.baselines, "compared_to": reference,
                   "verdict_metric": first, "verdict": _headline_verdict(table, dataset, model, first, reference), "p_holm": cells[0].p_holm}
            for metric, cell in zip(metrics, cells):
                row |= {f"{metric}_mean": cell.mean, f"{metric}_std": cell.std}
            row |= {"seeds": cells[0].n_seeds, **_headline_cost(efficiency, dataset, model, configured.get((dataset, model), np.nan)),
                    "published_source": source.key if source else "", "published_model": name,
                    "published": np.nan if value is None else value, "gap": np.nan if value is None else (cells[0].mean - value) / value,
                    "not_converged_seeds": cells[0].not_converged, "hardware": hardware.get((dataset, model), "")}
            if letters:
                row["machine"] = machine.get((dataset, model), "")
            rows.append(row)
    return pd.DataFrame(rows)


def headline_caption(table: AccuracyTable, config: ReportConfig, frame: pd.DataFrame, published: PublishedModels | None) -> str:
    labels = [metric_label(m) for m in headline_metrics(table.metrics)]
    unit = "×100, " if config.scale == 100 else ""
    text = _setup(config) + f"Test {' and '.join(labels)} ({unit}{_spread(table)}) of the checkpoint with the best validation score."
    if table.comparisons:
        text += (f" `vs` column: {labels[0]} against the dataset's best baseline by a "
                 + TEST_NAME.format(n=len(table.comparisons), alpha=config.significance_alpha)
                 + " (those of the accuracy table); † / ↓ beside a number: significantly better / worse on that metric.")
    else:
        text += " No significance test: the run needs a baseline and another model on a dataset."
    if any(np.isnan(c.mean) for c in table.cells.values()):
        text += f" {NOT_APPLICABLE}: K beyond the model's generated list."
    if any(c.not_converged for c in table.cells.values()):
        text += f" {NOT_CONVERGED_NOTE}."
    text += (" `s to best`: mean training seconds (validation excluded) until the tested epoch; `ms/user p50` at the model's configured "
             f"number of denoising steps. {latency_sentence(frame)}")
    if machines := machines_sentence(machine_letters(frame)):
        text += " " + machines
    if published:
        text += f" Published: {_citations(published)} Gap = (measured − published) / published; – where the source reports no value."
    if not table.failed.empty:
        text += f" {len(table.failed)} failed trial(s) not shown (listed under the accuracy table)."
    return (text + " " + table.provenance).strip()


def _headline_row(row: pd.Series, table: AccuracyTable, config: ReportConfig, metrics: list[str], with_published: bool) -> list[str]:
    # no bold / underline (unreadable in a terminal), and the ‡ marks the model once, not each of its numbers
    cells = [_cell_markdown(replace(table.cell(row["dataset"], row["model"], m), place=0, not_converged=0), config.scale) for m in metrics]
    text = [f"{row['model']} {NOT_CONVERGED}" if row["not_converged_seeds"] else row["model"], *cells, row["verdict"] or "–",
            *([row["machine"]] if "machine" in row else []),
            _efficiency_value(row["time_to_best_s"], "time_to_best_s"), _efficiency_value(row["latency_p50_ms"], "latency_p50_ms")]
    if with_published:
        text += ["–" if pd.isna(row["published"]) else _number(row["published"], config.scale),
                 "–" if pd.isna(row["gap"]) else f"{row['gap']:+.1%}"]
    return text


def headline_markdown(table: AccuracyTable, headline: pd.DataFrame, config: ReportConfig, frame: pd.DataFrame,
                      published: PublishedModels | None) -> str:
    """Per dataset: does each model beat the best baseline, and at what training and inference cost (README-sized)."""
    metrics = headline_metrics(table.metrics)
    labels = [metric_label(m) for m in metrics]
    blocks = []
    for dataset, rows in headline.groupby("dataset", sort=False):
        machine = ["machine"] if "machine" in rows else []
        headers = ["model", *labels, f"vs {rows['compared_to'].iloc[0] or 'best baseline'}", *machine, "s to best", "ms/user p50"]
        headers += [f"{labels[0]} published", "gap"] if published else []
        body = [_headline_row(row, table, config, metrics, bool(published)) for _, row in rows.iterrows()]
        align = ("left", *["right"] * len(metrics), "left", *["left"] * len(machine),
                 *["right"] * (len(headers) - len(metrics) - 2 - len(machine)))
        blocks.append(f"**{dataset}**\n\n" + tabulate(body, headers=headers, tablefmt="github", disable_numparse=True, colalign=align))
    return "\n\n".join(blocks) + f"\n\n{headline_caption(table, config, frame, published)}\n"


def report_config(run: RunDir) -> ReportConfig:
    """The run's own report settings (saved with it), else the defaults."""
    from bench.checked import build_config
    from bench.report.settings import default_report_metrics

    config = run.metadata().get("config") or {}
    report = build_config(ReportConfig, dict(config.get("report") or {}), "report")
    if not report.metrics:
        ks = (config.get("protocol") or {}).get("ks") or [10, 20]
        report = replace(report, metrics=default_report_metrics(ks))
    return report


def suite_order(run: RunDir, frame: pd.DataFrame) -> pd.DataFrame:
    """Trials in the suite's order of datasets and models (as written in its YAML), seeds ascending."""
    if frame.empty:
        return frame
    config = run.metadata().get("config") or {}
    labels = [m["label"] for m in config.get("models", [])]
    datasets = list(run.metadata().get("datasets") or config.get("datasets", []))  # keyed by label, in the suite's order
    position = lambda values, order: [order.index(v) if v in order else len(order) for v in values]  # noqa: E731
    keys = pd.DataFrame({"d": position(frame["dataset"], datasets), "m": position(frame["model"], labels), "s": frame["seed"]})
    return frame.iloc[keys.sort_values(["d", "m", "s"], kind="stable").index].reset_index(drop=True)


def write_report(run: RunDir) -> Path:
    """Tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) of a run into ``<run>/report/``; returns that folder."""
    from bench.report.curves import equal_epoch_frame, equal_epoch_markdown
    from bench.report.plots import write_plots
    from bench.report.published import load_source, published_models
    from bench.files import atomic_write

    config = report_config(run)
    out = run.path / "report"
    frame, steps = suite_order(run, write_tables(run)), run.steps_frame()
    check_comparable(frame)
    if frame.empty or not (frame["status"] == "ok").any():
        failed = f" ({len(frame)} failed: see trials.csv for their errors)" if not frame.empty else ""
        atomic_write(out / "report.md", f"# Report of {run.path.name}\n\nNo successful trials yet{failed}.\n")
        return out
    table = accuracy_table(run, frame, config)
    source = load_source(config.published) if config.published else None
    published = published_models(source, dict(config.published_models)) if source and config.published_models else None
    accuracy_md = accuracy_markdown(table, config, published)
    atomic_write(out / "accuracy.md", accuracy_md)
    atomic_write(out / "accuracy.tex", accuracy_latex(table, config, published))
    atomic_write(out / "accuracy.csv", accuracy_frame(table).to_csv(index=False))
    filtered_md = None
    if has_filtered_ranks(run, frame):
        filtered = accuracy_table(run, frame, config, ranking="filtered")
        filtered_md = accuracy_markdown(filtered, config)
        atomic_write(out / "accuracy-filtered.md", filtered_md)
        atomic_write(out / "accuracy-filtered.tex", accuracy_latex(filtered, config))
        atomic_write(out / "accuracy-filtered.csv", accuracy_frame(filtered).to_csv(index=False))
    efficiency = efficiency_frame(run, frame, steps)
    efficiency_md = efficiency_markdown(efficiency, frame, config)
    atomic_write(out / "efficiency.md", efficiency_md)
    atomic_write(out / "efficiency.tex", efficiency_latex(efficiency, frame, config))
    atomic_write(out / "efficiency.csv", efficiency.to_csv(index=False))
    headline = headline_frame(table, frame, efficiency, published)
    headline_md = headline_markdown(table, headline, config, frame, published)
    atomic_write(out / "headline.md", headline_md)
    atomic_write(out / "headline.csv", headline.to_csv(index=False))
    sections = [f"# Report of {run.path.name}", "", "## Headline", "", headline_md, "## Accuracy", "", accuracy_md]
    if filtered_md:
        sections += ["## Accuracy with the user's own items filtered out", "", filtered_md]
    sections += ["## Efficiency", "", efficiency_md]
    if source is not None:
        published_rows = published_frame(table, published or {})
        sources = sources_of(published or {}, source)
        published_md = published_markdown(published_rows, sources, config.scale)
        atomic_write(out / "published.md", published_md)
        atomic_write(out / "published.csv", published_rows.to_csv(index=False))
        sections += [f"## Measured vs published ({', '.join(s.key for s in sources)})", "", published_md]
    monitor = (run.metadata().get("config") or {}).get("protocol", {}).get("monitor", "ndcg@10")
    records = run.records()
    curves = equal_epoch_frame(records, monitor, table.baselines, order=list(dict.fromkeys(frame["model"])))
    if not curves.empty:
        curves_md = equal_epoch_markdown(curves, monitor)
        atomic_write(out / "equal-epochs.md", curves_md)
        atomic_write(out / "equal-epochs.csv", curves.to_csv(index=False))
        sections += ["## Validation at equal epochs", "", curves_md]
    figures = write_plots(frame, steps, records, monitor, out)
    pngs = [p for p in figures if p.suffix == ".png"]
    if pngs:
        sections += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    atomic_write(out / "report.md", "\n".join(sections))
    return out
