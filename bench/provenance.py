"""Provenance: which code, software and hardware produced a number.

Two halves, because on a cluster they are known in different places:

- ``code_version()`` is read by the driver, from the git checkout it runs
  in (Ray ships the project to workers without ``.git``): the commit and
  whether tracked files differ from it ("unknown" outside git).
- ``environment(device)`` is read where the trial runs: Python, torch,
  numpy and Ray versions, the CPU model or the GPU name and count, and the
  number of torch threads.

Both are flat dicts, so they become columns of ``trials.csv``.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
import subprocess
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN = "unknown"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@lru_cache(maxsize=1)
def code_version() -> dict:
    """{"code_commit": sha or "unknown", "code_dirty": True/False, or "unknown" outside git}.

    Only tracked files outside results/ count: a committed run folder that
    a ``--resume`` updates, or a new one, does not change the code.
    """
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"code_commit": UNKNOWN, "code_dirty": UNKNOWN}
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
    return {"code_commit": commit, "code_dirty": UNKNOWN if status is None else bool(status)}


def cpu_name() -> str:
    """The CPU's model name and the cores this process may use, e.g. "AMD EPYC (2 cores)"."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or UNKNOWN
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def hardware(device) -> str:
    """"NVIDIA H200 x1" on CUDA, else the CPU name."""
    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{torch.cuda.get_device_name(0)} x{count}"
    return cpu_name()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)  # without importing it (importing Ray takes a second)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(device) -> dict:
    """Software versions, hardware and torch threads of this process, as flat record fields."""
    import torch

    return {
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": _version("numpy"),
        "ray_version": _version("ray"),
        "device": str(device),
        "hardware": hardware(device),
        "torch_threads": torch.get_num_threads(),
    }
