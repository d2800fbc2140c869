"""From a raw interaction log to implicit-feedback sequences.

Preprocessing, in this order (``PreprocessConfig``):

1. ratings: keep interactions with ``rating >= min_rating`` (default: keep all;
   a source without ratings refuses a threshold rather than ignoring it);
2. chronological order per user: by timestamp when the source has them, ties
   (and sources without timestamps) in file order, which is how S3-Rec,
   ICLRec and DiffuRec ordered the Amazon and MovieLens files;
3. duplicates of a (user, item) pair: ``first`` keeps the earliest
   occurrence, ``last`` the latest, ``keep`` keeps repeats; ``None`` is the
   source's default (``datasets.registry.default_dedup``: ``first`` for
   registered sources and ``csv:``/``recbole:`` logs, ``keep`` for ``seq:`` files, which
   are usually prepared benchmark files), ``first`` when called directly;
4. optional iterative k-core: drop users and items with fewer than ``core``
   interactions until none is left;
5. ids remapped to 1..n (sorted by original id; numeric ids sort
   numerically, so a sequence file keeps its own numbering), 0 is padding.

Every step that drops rows is recorded in ``InteractionData.steps`` (one
dict per step with ``dropped`` and ``kept`` row counts), so a run can say
what preprocessing did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from bench.errors import DrbenchError
from bench.data.sequences import Sequences

DEDUP_POLICIES = ("first", "last", "keep")


@dataclass(frozen=True)
class PreprocessConfig:
    min_rating: float | None = None
    dedup: str | None = None  # None: the source's default (see the module docstring)
    core: int = 0

    def __post_init__(self):
        if self.dedup is not None and self.dedup not in DEDUP_POLICIES:
            raise DrbenchError(f"dedup must be one of {', '.join(DEDUP_POLICIES)}, got '{self.dedup}'")
        if self.core < 0:
            raise DrbenchError(f"core must be >= 0, got {self.core}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InteractionData:
    """Chronological item sequences of every user, ids 1..n_items."""

    name: str
    items: Sequences  # row u = items of user u in order
    timestamps: Sequences | None  # aligned with ``items``; None when the source has none
    user_ids: np.ndarray  # str [n_users] original user id of row u
    item_ids: np.ndarray  # str [n_items + 1] original id of item i; item_ids[0] is padding
    source: str = ""  # the file it came from, relative to the data root (else its name only: never an absolute path)
    source_sha256: str = ""  # of that file ("" for the built-in dataset)
    # what preprocessing did, one dict per step: {"step": "dedup", "policy": ..., "dropped": n, "kept": m, ...}
    steps: tuple[dict, ...] = ()
    card: str = ""  # the dataset card it was registered by (datasets/<name>.yaml, never an absolute path); "" for none
    card_sha256: str = ""  # of that card file, so a run records which card it used

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def n_users(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return self.items.nnz

    @property
    def has_timestamps(self) -> bool:
        return self.timestamps is not None


def _sorted_codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes 0..n-1 ordered by original id: numerically when every id is an integer."""
    uniques = np.asarray(pd.unique(values), dtype=str)
    numeric = pd.to_numeric(pd.Series(uniques), errors="coerce")
    order = np.argsort(numeric.to_numpy() if not numeric.isna().any() else uniques, kind="stable")
    ordered = uniques[order]
    codes = pd.Categorical(values, categories=ordered).codes.astype(np.int64)
    return codes, ordered


def _k_core(log: pd.DataFrame, core: int) -> pd.DataFrame:
    while True:
        user_counts = log.groupby("user")["item"].transform("size")
        item_counts = log.groupby("item")["user"].transform("size")
        keep = (user_counts >= core) & (item_counts >= core)
        if keep.all():
            return log
        log = log[keep]


def _step(step: str, before: pd.DataFrame, after: pd.DataFrame, **details) -> dict:
    return {"step": step, **details, "dropped": len(before) - len(after), "kept": len(after)}


def preprocess(log: pd.DataFrame, name: str, config: PreprocessConfig, source: str = "") -> InteractionData:
    log = log.assign(order=np.arange(len(log), dtype=np.int64))
    steps = []
    if config.min_rating is not None:
        if log["rating"].isna().all():
            raise DrbenchError(
                f"dataset '{name}' has no ratings (source {source or 'unknown'}), so min_rating={config.min_rating} "
                "cannot be applied; remove protocol.min_rating or use a source with ratings"
            )
        kept = log[log["rating"] >= config.min_rating]
        steps.append(_step("min_rating", log, kept, threshold=config.min_rating))
        log = kept
    has_timestamps = "timestamp" in log.columns
    log = log.sort_values(["user", "timestamp", "order"] if has_timestamps else ["user", "order"], kind="stable")
    policy = config.dedup or "first"
    repeats = int(log.duplicated(["user", "item"]).sum())
    kept = log if policy == "keep" else log.drop_duplicates(["user", "item"], keep=policy)
    steps.append(_step("dedup", log, kept, policy=policy, repeats=repeats))
    log = kept
    if config.core > 0:
        kept = _k_core(log, config.core)
        steps.append(_step("k-core", log, kept, k=config.core, users_dropped=log["user"].nunique() - kept["user"].nunique(),
                           items_dropped=log["item"].nunique() - kept["item"].nunique()))
        log = kept
    if log.empty:
        raise DrbenchError(f"dataset '{name}' has no interactions left after preprocessing {config.as_dict()}")

    user_codes, user_ids = _sorted_codes(log["user"])
    item_codes, item_ids = _sorted_codes(log["item"])
    sort_keys = [log["timestamp"].to_numpy(), log["order"].to_numpy()] if has_timestamps else [log["order"].to_numpy()]
    order = np.lexsort(sort_keys[::-1] + [user_codes])
    lengths = np.bincount(user_codes, minlength=len(user_ids))
    items = Sequences.from_lengths(lengths, item_codes[order] + 1)
    timestamps = Sequences.from_lengths(lengths, log["timestamp"].to_numpy(dtype=np.int64)[order]) if has_timestamps else None
    return InteractionData(name, items, timestamps, user_ids, np.concatenate([["[PAD]"], item_ids]), source,
                           steps=tuple(steps))


def dataset_stats(data: InteractionData) -> dict:
    lengths = data.items.lengths
    return {
        "name": data.name,
        "users": data.n_users,
        "items": data.n_items,
        "interactions": data.n_interactions,
        "mean_len": float(lengths.mean()),
        "median_len": float(np.median(lengths)),
        "density": data.n_interactions / (data.n_users * data.n_items),
        "has_timestamps": data.has_timestamps,
        "source": data.source,
        "sha256": data.source_sha256,
        "card": data.card,
        "card_sha256": data.card_sha256,
    }
