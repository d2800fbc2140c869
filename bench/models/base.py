"""The interface every recommender implements, and the registry of them by name.

A model file in ``baselines/`` or ``diffusion/`` defines a config dataclass
(its hyperparameters and their defaults, in one place) and a class, and
registers both with ``@register_model("name", ConfigClass)``. The protocol
only ever calls ``fit`` (after ``set_item_text`` for a model that
``needs_item_text``), ``score`` or, for a model that ``generates_lists``,
``generate``, and ``num_parameters`` and ``report``.
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import nn

from bench.errors import DrbenchError
from bench.data.sequences import Sequences
from bench.models.batching import Batching

MODEL_PACKAGES = ("baselines", "diffusion")


CAPS = ("epoch cap", "time budget")  # stop reasons that leave a trial not converged


@dataclass
class FitSummary:
    epochs_run: int = 0
    best_epoch: int = 0
    train_time_s: float = 0.0
    epoch_time_s: float = 0.0
    # why training ended: "patience" (validation stopped improving), "epoch cap" (ran every allowed epoch),
    # "time budget" (training.max_minutes), "fitted" (no iterative training: Pop, Markov) or "elsewhere"
    # (ranked lists scored with --score)
    stop_reason: str = "fitted"
    history: list[dict] = field(default_factory=list)  # one entry per validation round

    @property
    def converged(self) -> bool:
        """False where training was cut by a safety cap (epochs or minutes) before validation stopped improving."""
        return self.stop_reason not in CAPS

    def followed_by(self, stage: "FitSummary", name: str, improved: bool) -> "FitSummary":
        """This summary extended by a later training stage; epochs of the stage continue the count.

        ``improved``: whether the stage's best checkpoint beat this one's (and was kept).
        """
        offset = self.epochs_run
        history = self.history + [{**entry, "epoch": entry["epoch"] + offset, "stage": name,
                                   **({"train_time_s": entry["train_time_s"] + self.train_time_s} if "train_time_s" in entry else {})}
                                  for entry in stage.history]
        epochs = self.epochs_run + stage.epochs_run
        train_time = self.train_time_s + stage.train_time_s
        return FitSummary(
            epochs_run=epochs,
            best_epoch=stage.best_epoch + offset if improved else self.best_epoch,
            train_time_s=train_time,
            epoch_time_s=train_time / max(epochs, 1),
            # convergence is the main fit's: a later stage (DiffSASRec's SFT) runs the epochs its recipe gives it,
            # unless the trial's time budget cut it short
            stop_reason="time budget" if stage.stop_reason == "time budget" else self.stop_reason,
            history=history,
        )


class Recommender(abc.ABC):
    """Scores the whole catalogue for a batch of users given their histories."""

    def __init__(self, config, n_items: int):
        self.config = config
        self.n_items = n_items

    @abc.abstractmethod
    def fit(self, train: Sequences, trainer, validate: Callable[["Recommender"], dict]) -> FitSummary:
        """Learn from training sequences; ``validate`` returns validation metrics only."""

    def score(self, histories: torch.Tensor) -> torch.Tensor:
        """histories: [B, L] int64, left-padded with 0, most recent item last.

        Returns [B, n_items + 1] scores, column = item id (column 0 is ignored).
        Only a model that always generates ranked lists (``generates_lists``,
        see ``bench.evaluation``) does without it.
        """
        raise DrbenchError(f"model {type(self).__name__} generates ranked lists and does not score the catalogue")

    #: True for a model whose config field ``steps`` is its number of denoising
    #: steps at inference: a run-time knob that a trial may sweep after one training run.
    has_denoising_steps = False

    @property
    def inference_steps(self) -> int | None:
        return self.config.steps if self.has_denoising_steps else None

    def set_inference_steps(self, steps: int) -> None:
        """Use ``steps`` denoising steps from now on (no retraining); the config checks the value."""
        if not self.has_denoising_steps:
            raise DrbenchError(f"model {type(self).__name__} has no denoising steps to set; steps_sweep applies to diffusion models")
        config = dataclasses.replace(self.config, steps=steps)
        config.validate()
        self.config = config

    #: True for a model that reads the items' texts (e.g. to build text-based semantic IDs):
    #: the trial then hands them over with ``set_item_text`` before ``fit``.
    needs_item_text = False

    def set_item_text(self, texts: list[str]) -> None:
        """``texts[i]`` describes item i (title, genres); ``texts[0]``, padding, is empty."""
        raise DrbenchError(f"model {type(self).__name__} reads no item texts")

    def report(self) -> dict:
        """Flat facts about the fitted model to store with its results (e.g. codebook usage); keys become result columns."""
        return {}

    def num_parameters(self) -> int:
        return 0

    def to(self, device):
        return self

    def eval(self):
        return self


class NeuralRecommender(nn.Module, Recommender):
    """A torch model trained by ``bench.trainer.Trainer`` through ``loss``."""

    def __init__(self, config, n_items: int):
        nn.Module.__init__(self)
        Recommender.__init__(self, config, n_items)

    @abc.abstractmethod
    def training_batches(self, train: Sequences, batching: Batching, rng) -> Iterable[dict]:
        """One epoch of training batches (dicts of tensors on CPU), cut by ``batching`` (``bench.models.batching``)."""

    @abc.abstractmethod
    def loss(self, batch: dict) -> torch.Tensor:
        """Scalar training loss of one batch (already on the model's device)."""

    def fit(self, train, trainer, validate):
        return trainer.fit(self, train, validate)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config_class: type
    model_class: type
    # Hyperparameters that differ by dataset family ("movielens", "amazon"),
    # applied over the config defaults and under a suite's own params.
    family_defaults: dict = field(default_factory=dict)
    # The model's own default space for --tune, in bench/spaces.yaml's flat format
    # ({"params.x" | "training.y": {sampler: [args]}}): how a plugin brings one without editing this repository.
    search_space: dict | None = None

    def defaults_for(self, family: str) -> dict:
        return dict(self.family_defaults.get(family, {}))


_REGISTRY: dict[str, ModelEntry] = {}
_discovered = False


def register_model(name: str, config_class: type, family_defaults: dict | None = None, search_space: dict | None = None):
    """Register ``model_class`` under ``name`` with its config dataclass (``--list-models``, suites' ``model:``).

    ``search_space``: the model's default space for ``--tune`` (see ``bench.run.spaces``).
    """

    def decorate(model_class):
        where = f"{model_class.__module__}.{model_class.__qualname__}"
        if not dataclasses.is_dataclass(config_class) or not isinstance(config_class, type):
            raise DrbenchError(f"register_model('{name}', ...) in {where}: the config {config_class!r} must be a dataclass")
        if not (isinstance(model_class, type) and issubclass(model_class, Recommender)):
            raise DrbenchError(f"register_model('{name}', ...): {where} must subclass bench.models.base.Recommender")
        if search_space is not None and not isinstance(search_space, dict):
            raise DrbenchError(f"register_model('{name}', ...) in {where}: search_space must be a dict, got {search_space!r}")
        known = _REGISTRY.get(name)
        # The same class defined again (a plugin file imported anew after an edit) keeps its name; another class may not take it.
        if known is not None and (known.model_class.__module__, known.model_class.__qualname__) != (model_class.__module__, model_class.__qualname__):
            raise DrbenchError(f"model name '{name}' is registered twice: by {known.model_class.__module__}."
                               f"{known.model_class.__qualname__} and by {where}; give one of them another name")
        _REGISTRY[name] = ModelEntry(name, config_class, model_class, family_defaults or {}, search_space)
        return model_class

    return decorate


def _discover() -> None:
    """Import every module of the model packages so that they register themselves."""
    global _discovered
    if _discovered:
        return
    for package_name in MODEL_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package_name}.{module.name}")
    _discovered = True


def model_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    _discover()
    if name not in _REGISTRY:
        raise DrbenchError(f"unknown model '{name}'; registered models: {', '.join(sorted(_REGISTRY))} "
                           "(a model of your own is loaded with --plugin FILE.py or a suite's plugins: key, see docs/plugins.md)")
    return _REGISTRY[name]


def build_model(name: str, config, n_items: int) -> Recommender:
    return model_entry(name).model_class(config, n_items)
