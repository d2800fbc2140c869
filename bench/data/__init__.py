"""Datasets: registry of named sources, readers, preprocessing to sequences, caching."""

from bench.data.download import download
from bench.data.interactions import InteractionData, PreprocessConfig, dataset_stats, preprocess
from bench.data.registry import REGISTRY, dataset_available, dataset_family, dataset_names, describe_datasets, load_dataset, resolve_data_root
from bench.data.sequences import Sequences
from bench.data.synthetic import synthetic_dataset

__all__ = [
    "REGISTRY", "dataset_available", "dataset_family", "InteractionData", "PreprocessConfig", "Sequences", "dataset_names", "dataset_stats",
    "describe_datasets", "download", "load_dataset", "preprocess", "resolve_data_root", "synthetic_dataset",
]
