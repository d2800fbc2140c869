"""DiffSASRec: the LLaDA objective by hand, masking, single- and multi-step inference, learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.run.config import ProtocolConfig, build_config
from bench.errors import DrbenchError
from bench.run.trial import make_trial_spec, run_trial
from bench.data.sequences import Sequences
from diffusion.diffsasrec import DiffSASRec, DiffSASRecConfig
from tests.planted import planted_split
from bench.models.batching import Batching


def tiny(**changes):
    torch.manual_seed(0)
    return DiffSASRec(DiffSASRecConfig(max_len=8, hidden_size=8, n_heads=1, dropout=0.0, **changes), n_items=9)


def test_training_masks_only_real_items_at_rate_p():
    model = tiny(eps=0.5)
    train = Sequences.from_lists([[1, 2, 3, 4, 5, 6, 7, 8]] * 400 + [[1, 2]] * 400)
    batch = next(iter(model.training_batches(train, Batching(800), np.random.default_rng(0))))
    inputs, labels, p_mask = batch["inputs"].numpy(), batch["labels"].numpy(), batch["p_mask"].numpy()
    masked = inputs == model.mask_token
    assert (labels > 0).tolist() == masked.tolist()
    assert not masked[inputs == 0].any()
    assert p_mask.min() >= 0.5 and p_mask.max() <= 1.0  # p = (1 - eps) t + eps
    assert batch["n_real"].item() == 400 * 8 + 400 * 2
    full = (inputs > 0).sum(axis=1) == 8  # batches are shuffled: find the long rows
    assert full.sum() == 400
    assert abs(masked[full].mean() - p_mask[full].mean()) < 0.03


def test_loss_is_cross_entropy_over_p_normalised_by_real_positions():
    model = tiny()
    inputs = torch.tensor([[0, 0, 1, 10, 3, 10], [0, 0, 0, 0, 10, 5]])  # 10 = [MASK]
    labels = torch.tensor([[0, 0, 0, 2, 0, 4], [0, 0, 0, 0, 7, 0]])
    p_mask = torch.tensor([0.5, 0.25])
    loss = model.loss({"inputs": inputs, "labels": labels, "p_mask": p_mask, "n_real": torch.tensor(6)})
    logits = model.logits(model.encoder(inputs))
    ce = lambda row, pos: F.cross_entropy(logits[row, pos][None], labels[row, pos][None])
    expected = (ce(0, 3) / 0.5 + ce(0, 5) / 0.5 + ce(1, 4) / 0.25) / 6
    torch.testing.assert_close(loss, expected)


def test_single_step_appends_one_mask_and_never_sees_the_target():
    model = tiny().eval()
    seen = []
    model.encoder.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    scores = model.score(torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8]]))
    assert seen[0].tolist() == [[2, 3, 4, 5, 6, 7, 8, model.mask_token]]
    assert scores.shape == (1, 10) and torch.isneginf(scores[0, 0])
    torch.testing.assert_close(model.score(torch.tensor([[2, 3, 4, 5, 6, 7, 8]])), scores)


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_multi_step_returns_k_distinct_real_items(steps):
    model = tiny(inference="multi", steps=steps).eval()
    assert model.generates_lists
    top = model.generate(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]), k=5)  # k < n_masks: k slots
    assert top.shape == (2, 5)
    for row in top.tolist():
        assert len(set(row)) == 5 and all(1 <= item <= 9 for item in row)


@pytest.mark.parametrize("steps", [1, 3, 20])
def test_multi_step_with_seen_items_excluded_fills_every_slot_with_unseen_items(steps):
    model = tiny(inference="multi", steps=steps, n_masks=5).eval()
    histories = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [1, 2, 3, 4], [0, 0, 0, 9]])
    # the history is cut to max_len - n_masks = 3 items for the network, but every item of it is excluded
    long = torch.tensor([[9, 8, 7, 1, 2, 3]])
    top = model.generate(histories, k=10, exclude_seen=True)  # k > n_masks: n_masks slots
    assert top.shape == (4, 5)
    for row, history in zip(top.tolist(), histories.tolist()):
        assert len(set(row)) == 5 and all(1 <= item <= 9 for item in row) and not set(row) & set(history)
    assert sorted(top[1].tolist()) == [1, 2, 3, 8, 9]  # exactly the 5 unseen items
    torch.testing.assert_close(model.generate(histories, k=10, exclude_seen=True), top)  # deterministic
    few = model.generate(long, k=10, exclude_seen=True)[0].tolist()
    assert sorted(i for i in few if i) == [4, 5, 6] and few.count(0) == 2  # only 3 unseen items left: the rest stays empty
    assert model.report() == {"list_length": 5} and tiny().report() == {}


def test_multi_step_validates_with_single_step_while_fitting():
    model = tiny(inference="multi")

    class Recorder:
        def fit(self, fitted, train, validate):
            return fitted.generates_lists

    assert model.fit(None, Recorder(), None) is False
    assert model.generates_lists is True


@pytest.mark.parametrize("values, message", [({"inference": "many"}, "inference"), ({"eps": 0.0}, "eps"),
                                             ({"steps": 0}, "steps"), ({"threshold_decay": 1.0}, "threshold"),
                                             ({"n_masks": 8, "max_len": 8}, "n_masks")])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(DiffSASRecConfig, values, "models.diffsasrec.params")


@pytest.mark.parametrize("seed", [0, 2])
def test_diffsasrec_learns_planted_pattern_single_and_multi_step(seed):
    # Masked inputs leave a plateau of 10-25 epochs before the pattern is found, hence the patience
    # (with 6, seeds 2 and 7 of 0-7 stopped on it).
    split = planted_split()
    params = {"max_len": 30, "hidden_size": 32, "dropout": 0.1}
    training = {"epochs": 100, "batch_size": 64, "patience": 15, "lr": 0.005}
    single, _ = run_trial(make_trial_spec("planted", "d", "diffsasrec", seed, params, training, ProtocolConfig()), split)
    multi, _ = run_trial(make_trial_spec("planted", "d", "diffsasrec", seed, {**params, "inference": "multi", "steps": 5},
                                         training, ProtocolConfig()), split)
    assert single["test_hr@10"] > 0.85 and single["ranking"] == "full"
    # Generating the 10-item list step by step loses a little against full scoring: 0.72 was seen for
    # seed 0 on an H100 (other random streams than the CPU's); the untrained level is about 0.2.
    assert multi["test_hr@10"] > 0.65 and multi["ranking"] == "generated"
    # a list of n_masks = 10 items: HR@20 is not measured (NaN, "–" in the tables), not counted as misses
    assert multi["list_length"] == 10 and np.isnan(multi["test_hr@20"]) and np.isnan(multi["test_ndcg@20"])
    assert not np.isnan(single["test_hr@20"]) and "list_length" not in single
    # seen-filtered: generated again without the history (a fifth of the planted targets are seen items, hence below)
    assert multi["test_filtered_hr@10"] > 0.5 and np.isnan(multi["test_filtered_hr@20"])


def test_sft_batches_mask_only_the_last_item():
    model = tiny(sft_epochs=1)
    model._stage = "sft"
    train = Sequences.from_lists([[1, 2, 3], [4], [5, 6]])
    batch = next(iter(model.training_batches(train, Batching(10), np.random.default_rng(0))))
    rows = sorted(zip(batch["inputs"].tolist(), batch["labels"].tolist()))
    # [4] alone has no history to predict from; windows are left-padded to the batch's longest (3, not max_len 8)
    assert rows == [([0, 5, 10], [0, 0, 6]), ([1, 2, 10], [0, 0, 3])]
    assert batch["p_mask"].tolist() == [1.0, 1.0] and batch["n_real"].item() == 2


class ScriptedTrainer:
    """Stands in for bench.trainer.Trainer: each stage perturbs the weights and reports a scripted validation score."""

    def __init__(self, scores):
        self.scores = list(scores)
        self.stages = []

    def with_epochs(self, epochs):
        self.stages.append(epochs)
        return self

    def fit(self, model, train, validate):
        from bench.models.base import FitSummary

        with torch.no_grad():
            model.encoder.item_embedding.weight.add_(1.0)
        score = self.scores.pop(0)
        history = [{"epoch": 1, "valid_ndcg@10": score, "best_valid": score}, {"epoch": 2, "valid_ndcg@10": score / 2, "best_valid": score}]
        return FitSummary(epochs_run=2, best_epoch=1, train_time_s=1.0, history=history)


@pytest.mark.parametrize("sft_score, kept_sft", [(0.6, True), (0.4, False)])
def test_sft_stage_is_kept_only_when_it_beats_pretraining_on_validation(sft_score, kept_sft):
    model = tiny(sft_epochs=3)
    trainer = ScriptedTrainer([0.5, sft_score])
    before = model.encoder.item_embedding.weight.detach().clone()
    summary = model.fit(None, trainer, None)
    assert trainer.stages == [3]
    shift = (model.encoder.item_embedding.weight - before).mean().item()
    assert shift == pytest.approx(2.0 if kept_sft else 1.0)  # pre-trained weights restored when SFT did not help
    assert [h["epoch"] for h in summary.history] == [1, 2, 3, 4]
    assert [h.get("stage") for h in summary.history] == [None, None, "sft", "sft"]
    assert summary.epochs_run == 4 and summary.best_epoch == (3 if kept_sft else 1)
    assert model._stage == "diffusion"


@torch.no_grad()
def reference_generate(model, histories, k, exclude_seen=False):
    """The per-row multi-step decoder DiffSASRec.generate replaced (host loop over rows at every step), kept verbatim."""
    k = min(model.config.n_masks, k)
    tokens = model._with_masks(histories, k)
    batch = len(tokens)
    ranked = torch.zeros(batch, k, dtype=torch.long, device=tokens.device)
    n_ranked = [0] * batch
    used = torch.zeros(batch, model.n_items + 1, dtype=torch.bool, device=tokens.device)
    if exclude_seen:
        used.scatter_(1, histories, True)
    threshold = [model.config.threshold] * batch
    for step in range(model.config.steps):
        last_step = step == model.config.steps - 1
        open_slots = tokens[:, -k:] == model.mask_token
        if not open_slots.any():
            break
        logits = model.logits(model.encoder(tokens)[:, -k:]).masked_fill(used[:, None, :], -torch.inf)
        confidence, candidate = logits.softmax(-1).max(-1)
        confidence = confidence.masked_fill(~open_slots, -1.0).cpu()
        candidate = candidate.cpu()
        for row in range(batch):
            slots = [s for s in confidence[row].argsort(descending=True).tolist() if confidence[row, s] >= 0]
            if not slots:
                continue
            passing = [s for s in slots if confidence[row, s] >= threshold[row]]
            if last_step:
                passing = slots
            elif not passing:
                passing = slots[:1]
                threshold[row] *= model.config.threshold_decay
            taken = set()
            for slot in passing:
                item = int(candidate[row, slot])
                if item in taken:
                    if not last_step:
                        continue
                    scores = logits[row, slot].clone()
                    scores[list(taken)] = -torch.inf
                    item = int(scores.argmax())
                taken.add(item)
                tokens[row, tokens.shape[1] - k + slot] = item
                used[row, item] = True
                ranked[row, n_ranked[row]] = item
                n_ranked[row] += 1
    return ranked


def random_histories(generator, n_rows, width, n_items):
    lengths = torch.randint(0, width + 1, (n_rows,), generator=generator)
    items = torch.randint(1, n_items + 1, (n_rows, width), generator=generator)
    padded = torch.arange(width)[None, :] < (width - lengths)[:, None]  # left padding, some rows empty
    return items.masked_fill(padded, 0)


# (n_items, n_masks, steps, threshold, decay, temperature): a tiny catalogue makes duplicate candidates (and, with
# the history excluded, exhausted catalogues: slots left 0, ties at confidence 1.0) common; threshold 0.99 on an
# untrained model takes the decay path every step, a scaled-up embedding makes confident slots pass 0.5.
GENERATE_CASES = [
    (4, 5, 1, 0.9, 0.9, 1.0), (4, 5, 2, 0.9, 0.9, 1.0), (4, 5, 5, 0.99, 0.5, 1.0), (5, 6, 5, 0.05, 0.9, 1.0),
    (6, 4, 5, 0.3, 0.9, 3.0), (3, 6, 5, 0.5, 0.9, 3.0), (30, 10, 20, 0.9, 0.9, 1.0), (30, 10, 5, 0.5, 0.8, 4.0),
    (30, 10, 2, 0.2, 0.9, 4.0), (12, 16, 20, 0.6, 0.7, 3.0), (200, 20, 5, 0.9, 0.9, 4.0), (8, 3, 1, 1.0, 0.9, 1.0),
]


@pytest.mark.parametrize("n_items, n_masks, steps, threshold, decay, temperature", GENERATE_CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_multi_step_decoding_equals_the_per_row_reference(n_items, n_masks, steps, threshold, decay, temperature, seed):
    torch.manual_seed(seed)
    config = DiffSASRecConfig(max_len=24, hidden_size=16, n_heads=2, dropout=0.0, inference="multi", n_masks=n_masks,
                              steps=steps, threshold=threshold, threshold_decay=decay)
    model = DiffSASRec(config, n_items=n_items).eval()
    with torch.no_grad():
        model.encoder.item_embedding.weight.mul_(temperature)  # sharper softmax: more slots pass the threshold
    generator = torch.Generator().manual_seed(100 + seed)
    histories = random_histories(generator, 40, 30, n_items)  # wider than max_len - n_masks: cut for the network
    for k in (n_masks, max(1, n_masks - 2), n_masks + 5):
        for exclude_seen in (False, True):
            expected = reference_generate(model, histories, k, exclude_seen)
            got = model.generate(histories, k, exclude_seen)
            assert got.dtype == expected.dtype and torch.equal(got, expected), (k, exclude_seen)


def test_batched_multi_step_decoding_exercises_decay_duplicates_and_empty_slots():
    """The cases above reach the paths they are meant for (checked on the reference decoder's inputs)."""
    torch.manual_seed(0)
    model = DiffSASRec(DiffSASRecConfig(max_len=24, hidden_size=16, n_heads=2, dropout=0.0, inference="multi", n_masks=5,
                                        steps=2, threshold=0.99), n_items=4).eval()
    histories = random_histories(torch.Generator().manual_seed(100), 40, 30, 4)
    _, candidate = model.logits(model.encoder(model._with_masks(histories, 5))[:, -5:]).softmax(-1).max(-1)
    assert any(len(set(row)) < len(row) for row in candidate.tolist())  # duplicate candidates in the first step
    excluded = model.generate(histories, 5, exclude_seen=True)
    assert (excluded == 0).any() and (excluded > 0).any()  # exhausted catalogues leave slots empty
    assert torch.equal(excluded, reference_generate(model, histories, 5, exclude_seen=True))


def test_multi_step_decoding_never_syncs_with_the_host(monkeypatch):
    torch.manual_seed(0)
    model = DiffSASRec(DiffSASRecConfig(max_len=16, hidden_size=8, n_heads=1, dropout=0.0, inference="multi", n_masks=6,
                                        steps=6, threshold=0.3), n_items=7).eval()
    histories = random_histories(torch.Generator().manual_seed(0), 16, 12, 7)
    expected = reference_generate(model, histories, 6, exclude_seen=True)

    def forbidden(self, *args, **kwargs):
        raise AssertionError("host round trip inside generate")

    for name in ("cpu", "item", "tolist", "numpy", "__bool__", "__int__", "__float__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    top = model.generate(histories, 6, exclude_seen=True)
    with pytest.raises(AssertionError, match="host round trip"):
        reference_generate(model, histories, 6, exclude_seen=True)  # the patches do catch the per-row decoder
    monkeypatch.undo()
    assert torch.equal(top, expected)


@pytest.mark.parametrize("n_masks", [10, 16])
def test_batched_multi_step_decoding_orders_tied_confidences_like_the_reference(n_masks):
    # Saturated logits: many slots at confidence exactly 1.0, all committing in the same step, so the ranked order
    # is the tie order. The reference's CPU argsort is stable up to 16 elements (libstdc++'s std::sort ends in an
    # insertion sort there); from 17 slots on its tie order is an artefact of introsort, which a stable sort on
    # (-confidence, slot) does not reproduce, so ties are only checked up to 16 slots.
    torch.manual_seed(0)
    model = DiffSASRec(DiffSASRecConfig(max_len=30, hidden_size=16, n_heads=2, dropout=0.0, inference="multi",
                                        n_masks=n_masks, steps=20), n_items=50).eval()
    logits = model.logits
    model.logits = lambda states: logits(states) * 1000
    histories = random_histories(torch.Generator().manual_seed(0), 40, 30, 50)
    confidence, _ = model.logits(model.encoder(model._with_masks(histories, n_masks))[:, -n_masks:]).softmax(-1).max(-1)
    assert ((confidence == 1.0).sum(1) > 1).all()
    for exclude_seen in (False, True):
        assert torch.equal(model.generate(histories, n_masks, exclude_seen), reference_generate(model, histories, n_masks, exclude_seen))
