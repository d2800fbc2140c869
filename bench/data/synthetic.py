"""A built-in dataset with planted sequential structure, for demos and tests.

Items form ``n_clusters`` cycles of consecutive ids. Each user lives in one
cycle and, with probability ``follow``, moves to the next item of it;
otherwise the next item is drawn from a Zipf-like popularity over the whole
catalogue. A sequential model can learn the transitions (high HR@10);
popularity alone cannot. Timestamps are increasing per user and interleaved
across users, so both the leave-one-out and the temporal split work.
"""

from __future__ import annotations

import numpy as np

from bench.data.interactions import InteractionData, PreprocessConfig
from bench.data.sequences import Sequences


def synthetic_dataset(n_users: int = 1000, n_items: int = 400, n_clusters: int = 20, follow: float = 0.8,
                      min_len: int = 8, max_len: int = 40, seed: int = 0,
                      config: PreprocessConfig | None = None) -> InteractionData:
    rng = np.random.default_rng(seed)
    cluster_size = n_items // n_clusters
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    items, times = [], []
    for _ in range(n_users):
        cluster = int(rng.integers(n_clusters))
        position = int(rng.integers(cluster_size))
        clock = int(rng.integers(0, 1_000_000))
        sequence, stamps = [], []
        for _ in range(int(rng.integers(min_len, max_len + 1))):
            if rng.random() < follow:
                position = (position + 1) % cluster_size
                item = cluster * cluster_size + position + 1
            else:
                item = int(rng.choice(n_items, p=popularity)) + 1
            if sequence and item == sequence[-1]:
                continue
            sequence.append(item)
            clock += int(rng.integers(1, 20_000))
            stamps.append(clock)
        items.append(sequence)
        times.append(stamps)
    item_ids = np.array(["[PAD]"] + [str(i) for i in range(1, n_items + 1)])
    user_ids = np.array([str(u) for u in range(n_users)])
    return InteractionData("synthetic", Sequences.from_lists(items), Sequences.from_lists(times), user_ids, item_ids,
                           source="built-in")
