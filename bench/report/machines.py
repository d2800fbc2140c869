"""Which machine trained and timed each row, for runs whose trials ran on several.

A suite run in parts (``--models``, then ``--resume``) can land on different
computers. Accuracy does not depend on that; training time and latency do, so
tables label each row's machine (A, B, ...) and the Pareto figure draws each
machine with its own marker.
"""

from __future__ import annotations

import pandas as pd

MARKERS = "osD^v<>"  # machine A, B, ...
SPLIT_MARKER = "X"  # a model whose seeds trained on more than one machine


def machine_letters(frame: pd.DataFrame) -> dict[str, str]:
    """Hardware -> "A", "B", ... when the successful trials ran on more than one machine, else {} (nothing to label)."""
    ok = frame[frame["status"] == "ok"] if "status" in frame else frame
    hardware = [str(v) for v in dict.fromkeys(ok["hardware"].dropna())] if "hardware" in ok else []
    return {h: chr(ord("A") + i) for i, h in enumerate(hardware)} if len(hardware) > 1 else {}


def machine_of(frame: pd.DataFrame, letters: dict[str, str]) -> pd.Series:
    """Per dataset x model: the letters of the machines its seeds ran on ("A", or "A+B" for seeds split across two)."""
    ok = frame[frame["status"] == "ok"]
    return ok.groupby(["dataset", "model"], sort=False)["hardware"].agg(
        lambda values: "+".join(sorted({letters[v] for v in values.dropna()})))


def machine_marker(machine: str) -> str:
    """The Pareto figure's marker of a row's machine label ("A" -> "o", "B" -> "s", "A+B" -> "X")."""
    return MARKERS[(ord(machine) - ord("A")) % len(MARKERS)] if len(machine) == 1 else SPLIT_MARKER


def machines_sentence(letters: dict[str, str]) -> str:
    """Why a table has a `machine` column: its time and latency columns were measured on different CPUs or GPUs."""
    if not letters:
        return ""
    named = "; ".join(f"{letter} = {hardware}" for hardware, letter in letters.items())
    return (f"`machine`: where the model's trials trained and were timed ({named}); training time and latency compare"
            " reliably only between rows of one machine.")
