"""Shared test settings, and where the tests find real data: the data root the harness itself would use."""

from pathlib import Path

import pytest
import torch

from bench.data import resolve_data_root

# The test models are tiny: a second intra-op thread only waits, and on a busy
# machine it waits a lot (a planted-pattern training took 30x longer with 2
# threads while a benchmark ran on both cores). Trials under Ray get 1 CPU each too.
torch.set_num_threads(1)

# $DRBENCH_DATA, else ../shared/data next to the repository (the CI mirror), else the user cache.
MIRROR = resolve_data_root()
# small files the tests read, kept in the repository
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def plugin_sandbox(monkeypatch):
    """Models and modules a test's plugins register are forgotten afterwards: later tests see the built-in registry only."""
    import sys

    import bench.models.base as base
    import bench.plugins as plugins

    base.model_names()  # the built-in models, registered before the copy
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))
    monkeypatch.setattr(plugins, "_IMPORTED", {})
    monkeypatch.setattr(plugins, "_FILES", {})
    yield
    tops = {name.partition(".")[0] for name in [*plugins._IMPORTED, *plugins._FILES]}
    for name in [n for n in sys.modules if n.partition(".")[0] in tops]:
        del sys.modules[name]
