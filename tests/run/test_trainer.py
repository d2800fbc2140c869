"""The training loop: a wall-clock budget that holds for the whole trial, checked after each epoch; batching and precision."""

import pytest
import torch
from torch import nn

import bench.run.trainer as trainer_module
from bench.run.config import TrainConfig
from bench.run.trainer import Trainer


class Clock:
    """A fake time.monotonic that each training batch moves on by one minute."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class OneBatchModel(nn.Module):
    def __init__(self, clock: Clock):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.clock = clock

    def training_batches(self, train, batching, rng):
        self.clock.now += 60.0
        yield {"x": torch.ones(1)}

    def loss(self, batch):
        return ((self.weight - batch["x"]) ** 2).sum()


def test_budget_stops_after_the_epoch_that_spends_it_and_later_stages_share_it(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(trainer_module.time, "monotonic", clock)
    model = OneBatchModel(clock)
    validate = lambda m: {"ndcg@10": m.weight.item()}  # improves every epoch: only the budget can stop it
    trainer = Trainer(TrainConfig(epochs=50, batch_size=1, lr=0.1, eval_every=5, patience=100, max_minutes=3.5), "ndcg@10", "cpu", 0)

    first = trainer.fit(model, None, validate)
    # minutes 1, 2, 3 are inside the budget; epoch 4 ends at minute 4, past it, and is validated although 4 % 5 != 0
    assert first.epochs_run == 4 and first.stopped_early
    assert [h["epoch"] for h in first.history] == [4]

    second = trainer.with_epochs(10).fit(model, None, validate)
    assert second.epochs_run == 1 and second.stopped_early  # the budget is spent: one epoch, then stop


def test_without_a_budget_all_epochs_run(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(trainer_module.time, "monotonic", clock)
    summary = Trainer(TrainConfig(epochs=6, batch_size=1, lr=0.1, eval_every=3, patience=100), "ndcg@10", "cpu", 0).fit(
        OneBatchModel(clock), None, lambda m: {"ndcg@10": m.weight.item()})
    assert summary.epochs_run == 6 and not summary.stopped_early
    assert [h["epoch"] for h in summary.history] == [3, 6]


class RecordingModel(nn.Module):
    """Records the dtype of its forward pass and the batching the trainer hands it."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.dtypes, self.batchings = [], []

    def training_batches(self, train, batching, rng):
        self.batchings.append(batching)
        yield {"x": torch.ones(3, 4)}

    def loss(self, batch):
        out = self.layer(batch["x"])
        self.dtypes.append(out.dtype)
        return (out.float() - 1.0).pow(2).mean()


@pytest.mark.filterwarnings("ignore:training.precision bf16 on a CPU without native bfloat16")
def test_bf16_precision_runs_the_forward_pass_in_bfloat16_and_keeps_fp32_weights():
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model = RecordingModel()
        config = TrainConfig(epochs=2, batch_size=3, precision=precision, bucket_by_length=precision == "fp32")
        Trainer(config, "ndcg@10", "cpu", 0).fit(model, None, lambda m: {"ndcg@10": 0.0})
        assert model.dtypes == [dtype, dtype]
        assert model.layer.weight.dtype == torch.float32 and model.layer.weight.grad.dtype == torch.float32
        assert [(b.size, b.by_length) for b in model.batchings] == [(3, precision == "fp32")] * 2


def test_precision_is_checked():
    from bench.errors import DrbenchError

    with pytest.raises(DrbenchError, match="training.precision must be one of fp32, bf16, got 'fp16'"):
        TrainConfig(precision="fp16").validate()
