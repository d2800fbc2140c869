"""Published reference numbers (bench/report/published.yaml), for printing beside measured ones; a report may cite several."""

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


# model label -> (the source its published numbers come from, the model's name there)
PublishedModels = dict[str, tuple[PublishedSource, str]]


def _read_sources() -> dict:
    return yaml.safe_load(PUBLISHED_FILE.read_text(encoding="utf-8"))


def _unknown_source(key: str, keys) -> DrbenchError:
    return DrbenchError(f"unknown published source '{key}'; {PUBLISHED_FILE.name} has: {', '.join(sorted(keys))}")


def load_source(key: str) -> PublishedSource:
    sources = _read_sources()
    if key not in sources:
        raise _unknown_source(key, sources)
    raw = sources[key]
    scale = float(raw.get("scale", 1))
    results = {dataset: {model: {metric: float(value) / scale for metric, value in metrics.items()}
                         for model, metrics in models.items()}
               for dataset, models in raw["results"].items()}
    return PublishedSource(key, " ".join(raw["citation"].split()), raw.get("protocol", ""), " ".join(raw.get("checked", "").split()), results)


def split_model(value: str) -> tuple[str, str]:
    """A report.published_models value: "source-key:Model" -> (source-key, Model); a bare "Model" -> ("", Model)."""
    key, colon, name = value.partition(":")
    return (key, name) if colon else ("", value)


def check_published(default: str, models: dict) -> None:
    """One readable error for a report.published / published_models pair that names no source, or an unknown one."""
    keys = sorted(_read_sources())
    if default and default not in keys:
        raise _unknown_source(default, keys)
    if models and not default:
        raise DrbenchError("report.published_models needs report.published, the source of its bare model names; "
                           "set it to one of " + ", ".join(keys) + " (a value 'source-key:Model' takes that model from another source)")
    for label, value in models.items():
        key, name = split_model(str(value))
        if key and key not in keys:
            raise DrbenchError(f"report.published_models.{label}: unknown published source '{key}' in '{value}'; "
                               f"write 'source-key:Model' with source-key one of {', '.join(keys)}, or a bare 'Model' of report.published")
        if not name:
            raise DrbenchError(f"report.published_models.{label}: '{value}' names no model; write 'source-key:Model'")


def published_models(default: PublishedSource, models: dict[str, str]) -> PublishedModels:
    """Where each model's published numbers come from: a prefixed value's own source, else ``default``."""
    sources = {default.key: default}
    resolved = {}
    for label, value in models.items():
        key, name = split_model(str(value))
        if key and key not in sources:  # each other source read once
            sources[key] = load_source(key)
        resolved[label] = (sources[key or default.key], name)
    return resolved


def sources_of(published: PublishedModels, default: PublishedSource | None = None) -> list[PublishedSource]:
    """The sources a report cites: the default one (even if no model maps to it), then each other one used, once."""
    cited = {default.key: default} if default else {}
    for source, _ in published.values():
        cited.setdefault(source.key, source)
    return list(cited.values())
