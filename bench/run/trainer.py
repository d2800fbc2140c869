"""The training loop shared by every neural model.

Adam, epochs, batches of similar-length histories (``bench.models.batching``),
optionally a bfloat16 forward pass (``precision``) and a step learning-rate
schedule, validation every ``eval_every`` epochs, early stopping with
patience, and the kept checkpoint (best on the protocol's monitor, or the
last at which any metric improved: ``checkpoint``) restored before the
model is tested. The trainer only ever sees a ``validate``
callable bound to the validation set; test data is out of its reach.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings
from typing import Callable

import numpy as np
import torch

from bench.run.config import TrainConfig
from bench.protocol.evaluation import TrialDiverged
from bench.models.base import FitSummary
from bench.models.batching import Batching


def move_to(batch: dict, device) -> dict:
    return {key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()}


def improved(rule: str, metrics: dict, monitor: str, bests: dict) -> bool:
    """Whether a validation round keeps its checkpoint under ``rule`` (``training.checkpoint``).

    ``bests`` holds the best value so far of each watched metric and is updated: "monitor" watches the
    protocol's monitor; "any_metric" every HR@K and NDCG@K, each against its own best.
    """
    watched = [monitor] if rule == "monitor" else [name for name in metrics if name.partition("@")[0] in ("hr", "ndcg")]
    gained = [name for name in watched if metrics[name] > bests.get(name, -math.inf)]
    bests.update({name: metrics[name] for name in gained})
    return bool(gained)


class Trainer:
    def __init__(
        self,
        config: TrainConfig,
        monitor: str,
        device: torch.device | str,
        seed: int,
        on_validation: Callable[[dict], None] | None = None,
    ):
        self.config = config
        self.monitor = monitor
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.on_validation = on_validation or (lambda record: None)
        self.deadline: float | None = None  # set by the first fit; later stages (with_epochs) share it

    def with_epochs(self, epochs: int) -> "Trainer":
        """The same trainer (same random stream, device, monitor, time budget) for a further stage of ``epochs`` epochs."""
        stage = copy.copy(self)
        stage.config = dataclasses.replace(self.config, epochs=epochs)
        return stage

    def fit(self, model, train, validate: Callable[[object], dict]) -> FitSummary:
        config = self.config
        model.to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        if config.precision == "bf16" and self.device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            warnings.warn("training.precision bf16 on a CPU without native bfloat16 (no avx512_bf16 or AMX): its matmuls "
                          "are emulated, many times slower than fp32 (docs/results.md, training cost); use fp32 here", stacklevel=2)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_every, config.lr_step_factor) if config.lr_step_every else None
        batching = Batching(config.batch_size, by_length=config.bucket_by_length)
        summary = FitSummary()
        kept_score, best_state, rounds_without_gain, bests = -math.inf, None, 0, {}
        train_seconds = 0.0
        if self.deadline is None:  # training.max_minutes caps the whole trial, every stage of it together
            self.deadline = time.monotonic() + config.max_minutes * 60 if config.max_minutes else math.inf
        deadline = self.deadline
        for epoch in range(1, config.epochs + 1):
            model.train()
            started = time.perf_counter()
            total_loss, n_batches = 0.0, 0
            for batch in model.training_batches(train, batching, self.rng):
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                    loss = model.loss(move_to(batch, self.device))
                if not torch.isfinite(loss):
                    raise TrialDiverged(
                        f"training loss became {loss.item()} at epoch {epoch} (lr={config.lr}); "
                        "the run diverged. Lower training.lr or add weight decay / dropout."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item()
                n_batches += 1
            train_seconds += time.perf_counter() - started
            if schedule is not None:
                schedule.step()
            summary.epochs_run = epoch
            out_of_time = time.monotonic() > deadline
            if epoch % config.eval_every and epoch != config.epochs and not out_of_time:
                continue
            metrics = validate(model)
            score = metrics[self.monitor]
            record = {"epoch": epoch, "loss": total_loss / max(n_batches, 1), "train_time_s": train_seconds,
                      **{f"valid_{k}": v for k, v in metrics.items()}}
            summary.history.append(record)
            if improved(config.checkpoint, metrics, self.monitor, bests):
                kept_score, rounds_without_gain = score, 0
                summary.best_epoch = epoch
                best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            else:
                rounds_without_gain += 1
            record["best_valid"] = kept_score  # the monitor at the checkpoint kept so far
            self.on_validation(record)
            if rounds_without_gain > config.patience:
                summary.stop_reason = "patience"
                break
            if out_of_time:
                summary.stop_reason = "time budget"
                break
        else:
            summary.stop_reason = "epoch cap"
        if best_state is not None:
            model.load_state_dict(best_state)
        summary.train_time_s = train_seconds
        summary.epoch_time_s = train_seconds / max(summary.epochs_run, 1)
        return summary
