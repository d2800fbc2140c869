"""Published reference numbers (bench/published.yaml), for printing beside measured ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.errors import DrbenchError

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")


@dataclass(frozen=True)
class PublishedSource:
    key: str
    citation: str
    protocol: str
    checked: str
    results: dict  # dataset -> model -> metric -> value on the 0..1 scale

    def value(self, dataset: str, model: str, metric: str) -> float | None:
        return self.results.get(dataset, {}).get(model, {}).get(metric)


def load_source(key: str) -> PublishedSource:
    sources = yaml.safe_load(PUBLISHED_FILE.read_text(encoding="utf-8"))
    if key not in sources:
        raise DrbenchError(f"unknown published source '{key}'; {PUBLISHED_FILE.name} has: {', '.join(sorted(sources))}")
    raw = sources[key]
    scale = float(raw.get("scale", 1))
    results = {dataset: {model: {metric: float(value) / scale for metric, value in metrics.items()}
                         for model, metrics in models.items()}
               for dataset, models in raw["results"].items()}
    return PublishedSource(key, " ".join(raw["citation"].split()), raw.get("protocol", ""), " ".join(raw.get("checked", "").split()), results)
