"""Datasets: registry of named sources, readers, preprocessing to sequences, caching."""

from datasets.download import download
from datasets.interactions import InteractionData, PreprocessConfig, dataset_stats, preprocess
from datasets.registry import REGISTRY, dataset_available, dataset_family, dataset_names, describe_datasets, load_dataset, resolve_data_root
from datasets.sequences import Sequences
from datasets.synthetic import synthetic_dataset

__all__ = [
    "REGISTRY", "dataset_available", "dataset_family", "InteractionData", "PreprocessConfig", "Sequences", "dataset_names", "dataset_stats",
    "describe_datasets", "download", "load_dataset", "preprocess", "resolve_data_root", "synthetic_dataset",
]
