"""What decides a run's numbers, recorded with the run so that two runs are never mixed.

A run folder's ``suite.json`` keeps a fingerprint: the suite's name and
protocol, every dataset's source, checksum, preprocessing and split
fingerprint, and every trial's model, hyperparameters and training
settings (and, for ``--tune``, the search settings), and the sha256 of
every plugin's code (``bench.plugins``). ``--resume`` computes
the fingerprint of what it is asked to run and refuses, naming the
difference, when it is not the run's own: a run resumed with another suite
file, another ``exclude_history`` or another dataset file would otherwise
average two protocols into one mean. Resuming with fewer trials (``--models``,
``--seeds``) is fine, and so is running a suite in parts: a run started
with ``--models`` or ``--seeds`` records the whole suite's trials (every
model and seed, on the datasets it runs), so a later ``--resume --models
other`` adds the other models as long as their settings are those the run
began with; a seed beyond the suite's is taken when its settings are those
of the run's trial with another seed. Any other trial is refused.

drbench's code version is not part of it: resuming after a bug fix is
allowed, and every trial record carries its own commit (``bench.provenance``).
A plugin's code is, because no commit records it.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from bench.errors import DrbenchError

SHOWN = 4  # differences named in the message; the rest are counted


def run_fingerprint(suite, described: dict[str, dict], specs: list[dict], tuned: bool) -> dict:
    """The fingerprint of running ``specs`` of ``suite`` on the datasets ``described`` by ``prepare_splits``."""
    data_keys = ("source", "sha256", "preprocess", "split_fingerprint")
    return {
        "suite": suite.name,
        "protocol": _plain(asdict(suite.protocol)),
        "datasets": {name: {k: _plain(info.get(k)) for k in data_keys if k in info} for name, info in described.items()},
        "trials": {spec["key"]: _plain({k: spec.get(k) for k in ("model", "params", "training", "steps_sweep")}) for spec in specs},
        "tuned": tuned,
        "tune": _plain(asdict(suite.tune)) if tuned else None,
        # only when there are any, so that a run without plugins keeps the fingerprint it always had
        **({"plugins": {plugin.module: plugin.sha256 for plugin in suite.plugins}} if suite.plugins else {}),
    }


def _plain(value):
    """JSON's view of a value (tuples become lists), so a fingerprint read back from suite.json compares equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        flat = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(recorded: dict, current: dict) -> list[str]:
    """Human-readable differences between a run's fingerprint and the current one (empty: the same run)."""
    found = []
    recorded_data = recorded.get("datasets", {})
    found += [f"dataset {name} is not part of the run" for name in current.get("datasets", {}) if name not in recorded_data]
    for section in ("suite", "protocol", "datasets", "tuned", "tune"):
        before, now = recorded.get(section), current.get(section)
        if section == "datasets":  # resuming on fewer datasets is fine
            before, now = before or {}, now or {}
            before, now = ({n: i for n, i in before.items() if n in now}, {n: i for n, i in now.items() if n in before})
        before, now = _flatten(before, section), _flatten(now, section)
        for key in sorted(set(before) | set(now)):
            if before.get(key, "<absent>") != now.get(key, "<absent>"):
                found.append(f"{key}: run has {before.get(key, '<absent>')!r}, now {now.get(key, '<absent>')!r}")
    before, now = recorded.get("plugins") or {}, current.get("plugins") or {}
    for name in sorted(set(before) | set(now)):
        if before.get(name) != now.get(name):
            found.append(f"plugin {name}: run has {_code(before.get(name))}, now {_code(now.get(name))}")
    recorded_trials = recorded.get("trials", {})
    for key, config in current.get("trials", {}).items():
        reference = key if key in recorded_trials else other_seed(key, recorded_trials)
        if reference is None:
            found.append(f"trial {key} is not part of the run")
            continue
        before, now = _flatten(recorded_trials[reference]), _flatten(config)
        for name in sorted(set(before) | set(now)):
            if before.get(name, "<absent>") != now.get(name, "<absent>"):
                found.append(f"{key} {name}: run has {before.get(name, '<absent>')!r}, now {now.get(name, '<absent>')!r}")
    return found


def other_seed(key: str, recorded_trials: dict) -> str | None:
    """A trial of the run that differs from ``key`` (``dataset__label__seedN``) only in its seed, if any."""
    stem, separator, _ = key.rpartition("__seed")
    return next((k for k in recorded_trials if separator and k.rpartition("__seed")[0] == stem), None)


def extend_run(run, current: dict) -> list[str]:
    """Add to ``run`` the trials of ``current`` it was not asked to run before (checked by ``check_resume``); returns their keys.

    A run started with ``--models`` or ``--seeds`` already holds the whole suite's trials in its fingerprint, so a later
    part only joins ``trial_keys``; a seed beyond the suite's (``--seeds 3``) is recorded in the fingerprint as well.
    """
    metadata = run.metadata()
    fingerprint, keys = metadata["fingerprint"], metadata.get("trial_keys", [])
    added = [key for key in current["trials"] if key not in keys]
    if added:
        trials = {**fingerprint["trials"], **{key: current["trials"][key] for key in added if key not in fingerprint["trials"]}}
        run.update_metadata(fingerprint={**fingerprint, "trials": trials}, trial_keys=[*keys, *added])
    return added


def _code(sha256: str | None) -> str:
    return f"code sha256 {sha256[:12]}" if sha256 else "no such plugin"


def check_resume(run, current: dict) -> None:
    """Raise a one-line ``DrbenchError`` unless ``current`` may continue ``run``."""
    recorded = run.metadata().get("fingerprint")
    if recorded is None:
        raise DrbenchError(f"--resume: {run.path} was made by an older drbench that recorded no fingerprint of its protocol, "
                           "so resuming could mix two protocols; start a new run (leave out --resume)")
    found = differences(recorded, current)
    if found:
        more = f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
        raise DrbenchError(f"--resume: {run.path} was run with other settings, so its trials and new ones would be mixed: "
                           f"{'; '.join(found[:SHOWN])}{more}. Resume with the run's own suite and options, or start a new run")


COMPARED_PROTOCOL = ("split", "temporal_quantile", "exclude_history", "monitor", "min_rating", "core", "dedup")


def protocol_identity(row) -> tuple:
    """What makes two trials' test numbers comparable: the split's fingerprint and the protocol flags that change them."""
    protocol = row.get("protocol")
    if isinstance(protocol, str):
        protocol = json.loads(protocol)
    if not isinstance(protocol, dict):  # records written before the protocol was stored in full
        protocol = {"split": row.get("split"), "exclude_history": row.get("exclude_history")}
    return (row.get("split_fingerprint"),) + tuple((k, _plain(protocol.get(k))) for k in COMPARED_PROTOCOL if k in protocol)


def check_comparable(frame) -> None:
    """Refuse a table over trials of one dataset that were split or judged differently (one line naming two of them)."""
    if frame.empty or "status" not in frame:
        return
    ok = frame[frame["status"] == "ok"]
    for dataset, group in ok.groupby("dataset", sort=False):
        identities = {}
        for _, row in group.iterrows():
            identities.setdefault(protocol_identity(row.to_dict()), row["key"])
        if len(identities) > 1:
            (first, a), (second, b) = list(identities.items())[:2]
            what = [f"{x[0]} {x[1]!r} vs {y[1]!r}" for x, y in zip(first[1:], second[1:]) if x != y]
            if first[0] != second[0]:
                what.insert(0, f"split fingerprint {first[0]} vs {second[0]}")
            raise DrbenchError(f"the trials of dataset '{dataset}' were not produced under one protocol ({a} and {b}: "
                               f"{', '.join(what) or 'protocol flags differ'}), so their mean would mix protocols; "
                               "move the odd trials into a run folder of their own and report each run separately")
