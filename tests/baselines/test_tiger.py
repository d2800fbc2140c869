"""TIGER: training pairs, the history's SID tokens, causal decoding, constrained generation, learning the planted pattern."""

import numpy as np
import pytest
import torch

from baselines.tiger import Tiger, TigerConfig
from bench.models.sid_layers import PAD, history_target_batches
from bench.run.config import ProtocolConfig, build_config
from bench.errors import DrbenchError
from bench.models.base import FitSummary
from bench.run.trial import make_trial_spec, run_trial
from bench.data.sequences import Sequences
from tests.planted import planted_split
from bench.models.batching import Batching

SMALL = {"max_len": 4, "hidden_size": 32, "n_blocks": 1, "n_heads": 2, "ffn_size": 64, "levels": 2, "codebook_size": 8}


@pytest.fixture(autouse=True)
def private_sid_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_SID_CACHE", str(tmp_path / "sids"))


class NoTraining:
    """Stands in for the trainer: ``fit`` builds the SIDs and the network, then stops."""

    def fit(self, model, train, validate):
        return FitSummary()


def untrained(model_class, config_class, **changes):
    torch.manual_seed(0)
    split = planted_split(n_users=60, n_items=30)
    model = model_class(config_class(**{**SMALL, "dropout": 0.0, **changes}), split.n_items)
    model.fit(split.train, NoTraining(), None)
    return model.eval(), split


def test_training_pairs_are_every_next_item_with_its_left_padded_history():
    train = Sequences.from_lists([[1, 2, 3], [4], [5, 6]])
    batches = list(history_target_batches(train, 2, 0, Batching(10), np.random.default_rng(0)))
    pairs = sorted(zip(batches[0]["histories"].tolist(), batches[0]["targets"].tolist()))
    assert pairs == [([0, 1], 2), ([0, 5], 6), ([1, 2], 3)]
    recent = list(history_target_batches(train, 2, 1, Batching(10), np.random.default_rng(0)))[0]
    assert sorted(zip(recent["histories"].tolist(), recent["targets"].tolist())) == [([0, 5], 6), ([1, 2], 3)]


def test_history_becomes_digit_tokens_with_padding_masked():
    model, _ = untrained(Tiger, TigerConfig)
    n_digits = model.sids.n_digits
    _, padding = model.embedding.history(model.codes, torch.tensor([[0, 0, 3, 7]]))
    assert padding[0].tolist() == [True] * 2 * n_digits + [False] * 2 * n_digits
    tokens = model.embedding.digit_tokens(model.codes[torch.tensor([3, 7])])  # one codebook per digit: no overlap
    for digit in range(n_digits):
        low = int(model.embedding.offsets[digit])
        assert (tokens[:, digit] >= low).all() and (tokens[:, digit] < low + model.sids.vocab_sizes[digit]).all()
    assert PAD not in tokens.tolist()


def test_decoder_state_of_a_digit_ignores_later_digits():
    model, _ = untrained(Tiger, TigerConfig)
    memory, padding = model.encode(torch.tensor([[0, 1, 2, 3]]))
    codes = model.codes[torch.tensor([5, 9])]  # two SIDs; compare states before the first digit they differ in
    differ = int((codes[0] != codes[1]).nonzero()[0])
    states = model.decode(codes[:, :-1], memory.expand(2, -1, -1), padding.expand(2, -1))
    torch.testing.assert_close(states[0, : differ + 1], states[1, : differ + 1])


@pytest.mark.parametrize("beam_size, k", [(20, 10), (5, 10)])
def test_generation_returns_distinct_real_items(beam_size, k):
    model, split = untrained(Tiger, TigerConfig, beam_size=beam_size)
    histories = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 7]])
    top = model.generate(histories, k)
    assert model.generates_lists and top.shape == (3, min(k, beam_size))
    for row in top.tolist():
        assert len(set(row)) == len(row) and all(1 <= item <= split.n_items for item in row)


@pytest.mark.parametrize("values, message", [({"beam_size": 0}, "beam_size"), ({"targets_per_user": -1}, "targets_per_user"),
                                             ({"hidden_size": 30, "n_heads": 4}, "divisible"), ({"quantizer": "vq"}, "quantizer")])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(TigerConfig, values, "models.tiger.params")


def test_tiger_learns_planted_pattern():
    training = {"epochs": 12, "batch_size": 128, "lr": 0.01, "eval_every": 4, "patience": 2}
    record, _ = run_trial(make_trial_spec("planted", "tiger", "tiger", 0, {**SMALL, "dropout": 0.0}, training, ProtocolConfig()),
                          planted_split())
    assert record["ranking"] == "generated" and record["test_hr@10"] > 0.85
    assert record["sid_n_digits"] == 3 and 0.0 <= record["sid_collision_rate"] <= 1.0  # the SID report travels with the results


def sid_model(model_name, **changes):
    from diffusion.sid_diffusion import SidDiffusion, SidDiffusionConfig

    model_class, config_class = {"tiger": (Tiger, TigerConfig), "sid_diffusion": (SidDiffusion, SidDiffusionConfig)}[model_name]
    return untrained(model_class, config_class, **changes)


@pytest.mark.parametrize("model_name", ["tiger", "sid_diffusion"])
@pytest.mark.parametrize("beam_size", [20, 10])
def test_generation_with_seen_items_excluded_fills_the_list_with_unseen_items(model_name, beam_size):
    model, split = sid_model(model_name, beam_size=beam_size)  # 30 items
    histories = torch.tensor([[0] * 12 + list(range(1, 9)),  # 8 seen items
                              list(range(1, 21)),  # 20 seen: exactly 10 unseen left
                              list(range(2, 31, 2)) + [0] * 5,  # every even item (padding in the middle is ignored)
                              [0] * 19 + [7]])
    top = model.generate(histories, 10, exclude_seen=True)
    assert top.shape == (4, 10)
    for row, history in zip(top.tolist(), histories.tolist()):
        assert len(set(row)) == 10 and all(1 <= item <= split.n_items for item in row)  # full: no empty slot
        assert not set(row) & set(history)
    assert sorted(top[1].tolist()) == list(range(21, 31))  # the only unseen items
    torch.testing.assert_close(model.generate(histories, 10, exclude_seen=True), top)  # deterministic
    # a user who has seen nearly everything gets the few items left, then empty slots
    few = model.generate(torch.tensor([list(range(1, 28))]), 10, exclude_seen=True)[0].tolist()
    assert sorted(i for i in few if i) == [28, 29, 30] and few.count(0) == min(10, beam_size) - 3


@pytest.mark.parametrize("model_name", ["tiger", "sid_diffusion"])
def test_seen_filtered_evaluation_generates_without_the_history(model_name):
    from bench.protocol.evaluation import evaluate

    model, split = sid_model(model_name)
    plain = evaluate(model, split.test, split.n_items, ks=(5, 10), batch_size=16)
    excluded = evaluate(model, split.test, split.n_items, ks=(5, 10), exclude_history=True, batch_size=16)
    assert plain.list_length == excluded.list_length == 10
    for row, top in enumerate(excluded.top_items):
        seen = set(split.test.histories[row].tolist())
        assert not set(top.tolist()) & seen
        assert np.count_nonzero(top) == min(10, split.n_items - len(seen))  # full unless the user has seen nearly everything
    again = evaluate(model, split.test, split.n_items, ks=(5, 10), exclude_history=True, batch_size=7)
    assert again.ranks.tolist() == excluded.ranks.tolist() and again.metrics == excluded.metrics  # deterministic


def test_metrics_beyond_the_beam_are_not_measured():
    from bench.protocol.evaluation import evaluate

    model, split = sid_model("tiger", beam_size=5)
    result = evaluate(model, split.test, split.n_items, ks=(5, 10), batch_size=16)
    assert result.list_length == 5 and model.report()["list_length"] == 5
    assert not np.isnan(result.metrics["hr@5"]) and np.isnan(result.metrics["hr@10"]) and np.isnan(result.metrics["ndcg@10"])
