"""External predictions: a recommender that replays ranked lists made outside drbench (``run_bench.py --score``).

It learns nothing and scores nothing. It is handed each test user's list
(internal item ids, best first) and the test users' inputs, never their
targets, and it answers ``generate`` with the list of the user whose input
it is given. So the protocol judges a file of lists exactly as it judges a
generator such as TIGER: the same ranks and metric code, the same
``exclude_history`` handling (the user's items are dropped from the list,
as a generator leaves them out), n/a at a K beyond the list length.

Whose list: ``generate`` sees histories only, and two test users can have
the same input. The evaluator visits users in an order that keeps users with
equal inputs in their eval-set order (a stable sort on the input's length),
so the n-th visit of an input within one pass over the test set is the n-th
user with that input; ``tests/models/test_external.py`` holds the evaluator
to it.

The model is not in the registry: no suite can name it, and only an
``--score`` trial builds it (``bench.run.trial``). Its lists travel inside
the trial spec (``encode_lists``), because a Ray cluster has no shared files.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.sequences import Sequences
from bench.models.base import FitSummary, Recommender

EXTERNAL = "external"  # the model type of an --score trial, in its spec and record
NO_LATENCY = "not applicable (external predictions)"  # its record's latency: the model that made the lists is not here to time


@dataclass
class ExternalListsConfig:
    """What the record keeps of the lists: where they came from (the file's name, never its folder) and their size."""

    source: str = ""
    sha256: str = ""
    list_length: int = 0  # the longest list of the file


def encode_lists(lists: np.ndarray) -> str:
    """[U, L] item ids (0 = empty slot) as text, for a JSON trial spec."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, lists=np.asarray(lists, dtype=np.int32))
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_lists(payload: str) -> np.ndarray:
    with np.load(io.BytesIO(base64.b64decode(payload)), allow_pickle=False) as stored:
        return stored["lists"].astype(np.int64)


class ExternalLists(Recommender):
    generates_lists = True

    def __init__(self, config: ExternalListsConfig, n_items: int, lists: np.ndarray, inputs: Sequences):
        super().__init__(config, n_items)
        if len(lists) != len(inputs):
            raise ValueError(f"{len(lists)} lists for {len(inputs)} test users")
        self.lists = np.asarray(lists, dtype=np.int64)
        self.rows: dict[bytes, list[int]] = {}  # a test input -> the eval-set rows of the users with it, in order
        for row, history in enumerate(inputs):
            self.rows.setdefault(_key(history), []).append(row)
        self.visits = dict.fromkeys(self.rows, 0)

    def fit(self, train, trainer, validate) -> FitSummary:
        # nothing to learn, and no validation lists were given: no curve, and no training time to report
        return FitSummary(train_time_s=float("nan"), epoch_time_s=float("nan"), stop_reason="elsewhere")

    def generate(self, histories: torch.Tensor, k: int, exclude_seen: bool = False) -> torch.Tensor:
        out = np.zeros((len(histories), min(k, self.lists.shape[1])), dtype=np.int64)
        for i, padded in enumerate(histories.cpu().numpy()):
            history = padded[padded > 0]
            items = self.lists[self._row(history)]
            items = items[items > 0]
            if exclude_seen:
                items = items[~np.isin(items, history)]
            items = items[: out.shape[1]]
            out[i, : len(items)] = items
        return torch.from_numpy(out).to(histories.device)

    def _row(self, history: np.ndarray) -> int:
        key = _key(history)
        if key not in self.rows:
            raise RuntimeError("external lists were asked for a user whose input is not a test input of the split")
        rows = self.rows[key]
        row = rows[self.visits[key] % len(rows)]
        self.visits[key] += 1
        return row

    def num_parameters(self) -> float:
        return float("nan")  # unknown: the model that made the lists is not here

    def report(self) -> dict:
        return {"predictions": "external", "predictions_file": self.config.source, "predictions_sha256": self.config.sha256,
                "list_length": self.config.list_length}


def _key(history: np.ndarray) -> bytes:
    return np.asarray(history, dtype=np.int64).tobytes()
