"""The ``report:`` section of a suite: how paper tables are laid out (``--report`` and the end of a run)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.errors import DrbenchError
from bench.report.published import check_published


REPORT_LAYOUTS = ("models_as_rows", "metrics_as_rows")
REPORT_METRICS = ("hr", "ndcg", "mrr")


@dataclass
class ReportConfig:
    """The ``report:`` section of a suite: how paper tables are laid out (``--report`` and the end of a run)."""

    metrics: list[str] = field(default_factory=list)  # empty: HR and NDCG at K = 10 and 20 (or every K) of protocol.ks
    scale: float = 1.0  # 100 prints metrics as percentages, as many papers do
    layout: str = "models_as_rows"  # "metrics_as_rows": one row per dataset x metric, one column per model
    significance_alpha: float = 0.05
    published: str = ""  # a source in bench/report/published.yaml to print beside the measured numbers
    published_models: dict = field(default_factory=dict)  # model label -> its name in `published`, or "source-key:Model" for another source
    # How the suite was set up (sizes, tuning, stopping), in a sentence or two: it opens every table's caption, so that a
    # table copied into a paper or a README says which reduced size and which hyperparameters it is of
    setup: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.setup, str):
            self.setup = " ".join(self.setup.split())  # a folded YAML block, on one line

    def validate(self) -> None:
        if self.layout not in REPORT_LAYOUTS:
            raise DrbenchError(f"report.layout must be one of {', '.join(REPORT_LAYOUTS)}, got '{self.layout}'")
        for metric in self.metrics:
            name, _, k = metric.partition("@")
            if name not in REPORT_METRICS or not k.isdigit():
                raise DrbenchError(f"report.metrics: '{metric}' is not NAME@K with NAME one of {', '.join(REPORT_METRICS)}")
        if self.scale <= 0 or not 0 < self.significance_alpha < 1:
            raise DrbenchError("report.scale must be > 0 and report.significance_alpha in (0, 1)")
        if self.published or self.published_models:
            check_published(self.published, dict(self.published_models))


def default_report_metrics(ks) -> list[str]:
    chosen = [k for k in sorted(ks) if k in (10, 20)] or sorted(ks)
    return [f"{name}@{k}" for k in chosen for name in ("hr", "ndcg")]
