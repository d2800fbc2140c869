"""A tiny dataset with a planted sequential pattern, for model tests.

Item i is followed by item i + 1 (cyclically) with probability 0.9, so a
sequential model should reach HR@10 close to 1 while popularity cannot.
"""

import numpy as np

from bench.protocol.splits import leave_one_out
from bench.data.sequences import Sequences


def planted_split(n_users: int = 300, n_items: int = 50, follow: float = 0.9, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_users):
        sequence = [int(rng.integers(1, n_items + 1))]
        for _ in range(int(rng.integers(10, 30)) - 1):
            successor = sequence[-1] % n_items + 1
            sequence.append(successor if rng.random() < follow else int(rng.integers(1, n_items + 1)))
        rows.append(sequence)
    return leave_one_out(Sequences.from_lists(rows), n_items)
