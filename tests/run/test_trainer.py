"""The training loop: a wall-clock budget that holds for the whole trial, checked after each epoch; batching and precision."""

import pytest
import torch
from torch import nn

import bench.run.trainer as trainer_module
from bench.errors import DrbenchError
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
    assert first.epochs_run == 4 and first.stop_reason == "time budget" and not first.converged
    assert [h["epoch"] for h in first.history] == [4]

    second = trainer.with_epochs(10).fit(model, None, validate)
    assert second.epochs_run == 1 and second.stop_reason == "time budget"  # the budget is spent: one epoch, then stop


def test_without_a_budget_all_epochs_run_and_the_epoch_cap_leaves_the_fit_unconverged(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(trainer_module.time, "monotonic", clock)
    summary = Trainer(TrainConfig(epochs=6, batch_size=1, lr=0.1, eval_every=3, patience=100), "ndcg@10", "cpu", 0).fit(
        OneBatchModel(clock), None, lambda m: {"ndcg@10": m.weight.item()})
    assert summary.epochs_run == 6 and summary.stop_reason == "epoch cap" and not summary.converged
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


class ScriptedValidation:
    """A validation whose rounds return scripted metrics."""

    def __init__(self, rounds):
        self.rounds = list(rounds)

    def __call__(self, model):
        return self.rounds.pop(0)


class LrModel(RecordingModel):
    def training_batches(self, train, batching, rng):
        yield {"x": torch.ones(3, 4)}


def test_any_metric_keeps_the_last_checkpoint_at_which_any_hr_or_ndcg_improved():
    from bench.run.trainer import improved

    bests = {}
    assert improved("any_metric", {"ndcg@10": 0.1, "hr@10": 0.2, "mrr@10": 0.1}, "ndcg@10", bests)
    assert improved("any_metric", {"ndcg@10": 0.09, "hr@10": 0.21, "mrr@10": 0.1}, "ndcg@10", bests)  # hr alone
    assert not improved("any_metric", {"ndcg@10": 0.095, "hr@10": 0.205, "mrr@10": 0.5}, "ndcg@10", bests)  # mrr is not watched
    assert bests == {"ndcg@10": 0.1, "hr@10": 0.21}
    assert not improved("monitor", {"ndcg@10": 0.1, "hr@10": 0.9}, "ndcg@10", {"ndcg@10": 0.1})


@pytest.mark.parametrize("rule, best_epoch, epochs_run", [("monitor", 1, 4), ("any_metric", 3, 6)])
def test_the_checkpoint_rule_decides_the_kept_epoch_and_the_patience(rule, best_epoch, epochs_run):
    rounds = [{"ndcg@10": 0.3, "hr@10": 0.5}, {"ndcg@10": 0.2, "hr@10": 0.6}, {"ndcg@10": 0.25, "hr@10": 0.7},
              {"ndcg@10": 0.1, "hr@10": 0.1}, {"ndcg@10": 0.1, "hr@10": 0.1}, {"ndcg@10": 0.1, "hr@10": 0.1}]
    config = TrainConfig(epochs=10, batch_size=3, patience=2, checkpoint=rule)
    summary = Trainer(config, "ndcg@10", "cpu", 0).fit(LrModel(), None, ScriptedValidation(rounds))
    assert (summary.best_epoch, summary.epochs_run, summary.stop_reason, summary.converged) == (best_epoch, epochs_run, "patience", True)
    kept = rounds[best_epoch - 1]["ndcg@10"]
    assert summary.history[-1]["best_valid"] == kept  # the monitor at the kept checkpoint, not the best seen


def test_a_step_schedule_multiplies_the_learning_rate_every_n_epochs(monkeypatch):
    seen = []
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    config = TrainConfig(epochs=7, batch_size=3, lr=1.0, lr_step_every=3, lr_step_factor=0.1, patience=100)
    Trainer(config, "ndcg@10", "cpu", 0).fit(LrModel(), None, lambda m: {"ndcg@10": 0.0})
    assert seen == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])
    with pytest.raises(DrbenchError, match="lr_step_factor"):
        TrainConfig(lr_step_factor=0.0).validate()
    with pytest.raises(DrbenchError, match="training.checkpoint must be one of monitor, any_metric"):
        TrainConfig(checkpoint="last").validate()


def test_patience_running_out_at_the_last_allowed_epoch_is_convergence_not_the_cap():
    rounds = [{"ndcg@10": 0.3}, {"ndcg@10": 0.2}, {"ndcg@10": 0.1}]  # patience 1: the third round ends it, also the last epoch
    summary = Trainer(TrainConfig(epochs=3, batch_size=3, patience=1), "ndcg@10", "cpu", 0).fit(LrModel(), None, ScriptedValidation(rounds))
    assert (summary.epochs_run, summary.stop_reason, summary.converged) == (3, "patience", True)


@pytest.mark.parametrize("first, second, combined", [("patience", "epoch cap", "patience"), ("epoch cap", "patience", "epoch cap"),
                                                     ("time budget", "patience", "time budget"), ("patience", "time budget", "time budget")])
def test_a_fit_in_stages_converges_with_its_main_fit_unless_the_time_budget_cut_a_later_stage(first, second, combined):
    from bench.models.base import FitSummary

    # a later stage (DiffSASRec's SFT) runs the epochs its recipe gives it; that is no cap on the fit
    fit = FitSummary(epochs_run=5, stop_reason=first).followed_by(FitSummary(epochs_run=2, stop_reason=second), "sft", improved=True)
    assert fit.stop_reason == combined and fit.converged == (combined == "patience")
