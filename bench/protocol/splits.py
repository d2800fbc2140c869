"""Train / validation / test splits for next-item prediction.

A split is a pure function of the dataset and the protocol config: every model
of a suite receives the same object, and its fingerprint is written to every
result row so that anyone can check that two numbers came from one split.
``Split.stats`` holds counts the split produced (cut-offs, users and
interactions kept or dropped, and why); it is derived from the same inputs,
so it is not part of the fingerprint.

Leave-one-out (``loo``)
    Per user with at least 3 interactions: the last item is the test target,
    the second-last the validation target. Training sees ``seq[:-2]``; the
    validation input is ``seq[:-2]``, the test input the whole prefix
    ``seq[:-1]``. Users with fewer than 3 interactions only train.

Global temporal (``temporal``, after DiffSASRec)
    Source: DiffSASRec's public code, github.com/Shinypuff/DiffSASRec
    (commit be3ea58), ``utils.py`` ``split_by_time`` (l. 298-302) and
    ``get_data_split`` (l. 315-367), used by ``main.py`` (l. 130-199). Its
    rules:

    S1. The cut-off is ``quantile(q, interpolation="nearest")`` of the
        timestamps (q = ``--time_q``, 0.95): an observed timestamp, the
        sorted value at index ``round(q * (n - 1))`` (numpy's
        ``method="nearest"``, ties at .5 to even).
    S2. "After" is ``timestamp >= cut-off``; "before" is strictly earlier.
    S3. A user's target is the earliest "after" interaction whose item occurs
        "before" the cut-off; users need "before" history and a target.
    S4. The input is the user's "before" history only; "after"
        interactions preceding the target are not part of it.
    S5. Users are first split at random into 80 % training users and 20 %
        test users (``--test_size``), each group cut by its own quantile;
        the model trains on the training users' "before" sequences (the
        vanilla SASRec also on their S3 target), test users are never
        trained on, and the checkpoint is chosen on the test metrics every
        5 epochs (there is no validation set).

    Here: ``t_test`` is the S1 quantile of all timestamps and
    ``t_valid`` the S1 quantile of the timestamps strictly before
    ``t_test``. Training is every interaction with ``t < t_valid`` (S2). The
    validation target of a user is the first interaction with
    ``t_valid <= t < t_test``, the test target the first with
    ``t >= t_test`` (S3, S2), skipping items that never occur in training;
    only users with training interactions are evaluated. The validation
    input is the user's history before ``t_valid`` (= its training
    sequence), the test input its history before ``t_test`` (S4), so the
    validation window is input to the test but never trained on.

    Deviations from the source, and why:

    D1. One global cut-off pair over all users instead of S5's random
        user partition: a trial trains one model on ``split.train``,
        early-stops on ``split.valid`` and tests that same model, and every
        model of a suite must see the same split; with S5 the test users
        would never be trained on (and the split would depend on an
        unseeded draw).
    D2. A validation window ``[t_valid, t_test)`` carved out before
        ``t_test`` the same way, because early stopping must not look at
        the test set (S5 selects on test).
    D3. Every evaluated target item and every evaluated user occurs in
        ``split.train`` (before ``t_valid``). S3 only requires the item and
        user before the group's own cut-off; with one trained model and a
        validation window that is not trained on, that would evaluate items
        and users the model never saw (on Beauty: 334 of 2,966 test targets,
        157 users). Training the test model on everything before ``t_test``
        would need a second training run per trial, which this harness does
        not do.
    D4. Ties among a user's interactions keep the dataset's order (stable);
        the source's ``sort_values`` is not stable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from bench.errors import DrbenchError
from bench.data.sequences import Sequences

SPLITS = ("loo", "temporal")


@dataclass(frozen=True)
class EvalSet:
    """Users to evaluate, the history each is scored from, and the held-out target."""

    users: np.ndarray  # int64 [U] dataset row of each evaluated user
    histories: Sequences  # row i = input of users[i], chronological
    targets: np.ndarray  # int64 [U] item id to predict

    def __len__(self) -> int:
        return len(self.users)

    def head(self, n: int) -> "EvalSet":
        rows = np.arange(min(n, len(self)))
        return EvalSet(self.users[rows], self.histories.select(rows), self.targets[rows])


@dataclass(frozen=True)
class Split:
    protocol: str
    n_items: int
    train: Sequences  # row u = training sequence of dataset user u (may be empty)
    valid: EvalSet
    test: EvalSet
    cutoffs: dict  # temporal split: {"t_valid": ..., "t_test": ...}; empty for loo
    # Item descriptions (datasets.item_text), index = item id, for models that read them; they
    # travel with the split because trials on a cluster cannot reach the data root. Not
    # part of the fingerprint: they do not change what a model is judged on.
    item_text: tuple[str, ...] | None = None
    # Counts the split produced (cut-offs, users and interactions kept or dropped), JSON-serialisable
    # (int / float / str). Derived from the same inputs as the arrays, so not part of the fingerprint.
    stats: dict = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Short hash of everything a model sees or is judged on."""
        digest = hashlib.sha256()
        for array in (
            self.train.offsets, self.train.values,
            self.valid.users, self.valid.histories.values, self.valid.targets,
            self.test.users, self.test.histories.values, self.test.targets,
        ):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        digest.update(f"{self.protocol}:{self.n_items}".encode())
        return digest.hexdigest()[:12]


def make_split(data, protocol: str = "loo", temporal_quantile: float = 0.95) -> Split:
    """Split an ``InteractionData`` by the named protocol."""
    if protocol == "loo":
        return leave_one_out(data.items, data.n_items)
    if protocol == "temporal":
        if data.timestamps is None:
            raise DrbenchError(
                f"dataset '{data.name}' has no timestamps, so the global temporal split cannot be made. "
                "Use the leave-one-out split (protocol.split: loo), or provide a source with timestamps "
                "(see the dataset list: python run_bench.py --list-datasets)."
            )
        return global_temporal(data.items, data.timestamps, data.n_items, temporal_quantile)
    raise DrbenchError(f"unknown split protocol '{protocol}'; choose one of: {', '.join(SPLITS)}")


def leave_one_out(items: Sequences, n_items: int) -> Split:
    lengths = items.lengths
    evaluated = np.flatnonzero(lengths >= 3)
    train_lengths = np.where(lengths >= 3, lengths - 2, lengths)
    train = Sequences.from_lists([items[u][: train_lengths[u]] for u in range(len(items))])
    valid = EvalSet(
        evaluated,
        Sequences.from_lists([items[u][:-2] for u in evaluated]),
        np.array([items[u][-2] for u in evaluated], dtype=np.int64),
    )
    test = EvalSet(
        evaluated,
        Sequences.from_lists([items[u][:-1] for u in evaluated]),
        np.array([items[u][-1] for u in evaluated], dtype=np.int64),
    )
    stats = {
        "users": len(items),
        "users_evaluated": len(evaluated),
        "users_too_short": int(len(items) - len(evaluated)),  # fewer than 3 interactions: training only
        "interactions": items.nnz,
        "interactions_trained": train.nnz,
        "valid_users": len(evaluated),
        "test_users": len(evaluated),
    }
    return Split("loo", n_items, train, valid, test, {}, stats=stats)


def nearest_quantile(values: np.ndarray, quantile: float):
    """The source's ``Series.quantile(q, interpolation="nearest")``: an observed value (rule S1)."""
    return np.quantile(values, quantile, method="nearest").item()


def _first_known_in_window(items, timestamps, start, end, input_end, users, known_items):
    """Per user of ``users``, the first interaction with ``start <= t < end`` whose item is known.

    The input is the user's interactions with ``t < input_end`` (rule S4). Also
    returns how many users had interactions in the window but none with a
    known item, and how many targets were a later window interaction because
    the first ones were unknown.
    """
    chosen, histories, targets = [], [], []
    no_known_item = skipped = 0
    for u in users:
        seq, ts = items[u], timestamps[u]
        in_window = (ts >= start) & (ts < end)
        if not in_window.any():
            continue
        candidates = np.flatnonzero(in_window & known_items[seq])
        if len(candidates) == 0:
            no_known_item += 1
            continue
        position = candidates[0]
        skipped += int(position != np.flatnonzero(in_window)[0])
        chosen.append(u)
        histories.append(seq[ts < input_end])
        targets.append(seq[position])
    evalset = EvalSet(np.array(chosen, dtype=np.int64), Sequences.from_lists(histories), np.array(targets, dtype=np.int64))
    return evalset, no_known_item, skipped


def global_temporal(items: Sequences, timestamps: Sequences, n_items: int, quantile: float = 0.95) -> Split:
    """The global temporal split; rules and deviations from DiffSASRec's code in the module docstring."""
    if not 0.0 < quantile < 1.0:
        raise DrbenchError(f"protocol.temporal_quantile must be in (0, 1), got {quantile}")
    all_ts = timestamps.values
    if len(all_ts) == 0:
        raise DrbenchError("the temporal split got a dataset without interactions")
    t_test = nearest_quantile(all_ts, quantile)
    before_test = all_ts < t_test
    if not before_test.any():
        raise DrbenchError(
            f"the temporal split found no interaction before the test cutoff ({t_test}): too many timestamps "
            "are tied at the earliest time. Raise protocol.temporal_quantile or use the loo split."
        )
    t_valid = nearest_quantile(all_ts[before_test], quantile)
    in_train = all_ts < t_valid
    if not in_train.any():
        raise DrbenchError(
            f"the temporal split found no interaction before the validation cutoff ({t_valid}): too many "
            "timestamps are tied at the earliest time. Raise protocol.temporal_quantile or use the loo split."
        )
    row_ids = items.row_ids()
    train = Sequences.from_lengths(np.bincount(row_ids[in_train], minlength=len(items)).astype(np.int64),
                                   items.values[in_train])
    known_items = np.zeros(n_items + 1, dtype=bool)
    known_items[train.values] = True
    trained_users = np.flatnonzero(train.lengths > 0)
    valid, valid_no_item, valid_skipped = _first_known_in_window(
        items, timestamps, t_valid, t_test, t_valid, trained_users, known_items)
    test, test_no_item, test_skipped = _first_known_in_window(
        items, timestamps, t_test, np.inf, t_test, trained_users, known_items)

    def users_without_training(in_window: np.ndarray) -> int:
        return int(len(np.setdiff1d(np.unique(row_ids[in_window]), trained_users)))

    in_valid_window = (all_ts >= t_valid) & before_test
    in_test_window = ~before_test
    stats = {
        "quantile": float(quantile),
        "t_valid": t_valid,
        "t_test": t_test,
        "users": len(items),
        "users_with_training": len(trained_users),
        "interactions": int(len(all_ts)),
        "interactions_trained": train.nnz,
        "interactions_valid_window": int(in_valid_window.sum()),  # input to the test, never trained on
        "interactions_test_window": int(in_test_window.sum()),
        "valid_users": len(valid),
        "valid_users_dropped_no_training": users_without_training(in_valid_window),
        "valid_users_dropped_unseen_items": valid_no_item,  # every window item unseen in training
        "valid_targets_after_unseen_items": valid_skipped,  # first window item(s) unseen, a later one is the target
        "test_users": len(test),
        "test_users_dropped_no_training": users_without_training(in_test_window),
        "test_users_dropped_unseen_items": test_no_item,
        "test_targets_after_unseen_items": test_skipped,
    }
    return Split("temporal", n_items, train, valid, test, {"t_valid": t_valid, "t_test": t_test}, stats=stats)
