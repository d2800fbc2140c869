"""The SID prefix trie and the constrained beam search: only real items, no duplicates, exact when the beam is wide."""

import numpy as np
import pytest
import torch

from bench.models.sid_decoding import SidTrie, constrained_beam_search, digit_groups
from bench.models.semantic_ids import disambiguate

# items 1..5; row 0 is padding
CODES = np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1], [2, 0, 0], [1, 1, 0], [2, 1, 0]])
VOCAB = (3, 2, 2)


def test_trie_children_follow_the_codes():
    trie = SidTrie.from_codes(CODES, VOCAB)
    root = trie.children[0][0].tolist()
    assert [value for value in range(3) if root[value] >= 0] == [0, 1, 2]
    after_0 = trie.children[1][root[0]].tolist()
    assert after_0[0] < 0 and after_0[1] >= 0  # no SID starts (0, 0)
    leaves = trie.children[2][after_0[1]].tolist()
    assert leaves == [1, 2]  # (0, 1, 0) is item 1, (0, 1, 1) item 2
    with pytest.raises(ValueError, match="share a SID"):
        SidTrie.from_codes(np.array([[0, 0], [1, 1], [1, 1]]), (2, 2))


def factorised(table):
    """A predictor whose digit distributions ignore the prefix: table[d] is [B, V_d] log-probs."""
    def predict(prefix, digits):
        batch, width = prefix.shape[:2]
        return [table[d][:, None, :].expand(batch, width, -1) for d in digits]
    return predict


def random_problem(seed, n_items=60, vocab=(4, 4, 3), batch=5):
    rng = np.random.default_rng(seed)
    codes = disambiguate(np.stack([rng.integers(0, v, n_items) for v in vocab], axis=1))
    vocab = vocab + (int(codes[:, -1].max()) + 1,)
    codes = np.concatenate([np.zeros((1, len(vocab)), dtype=np.int64), codes])
    generator = torch.Generator().manual_seed(seed)
    table = [torch.randn(batch, v, generator=generator).log_softmax(-1) for v in vocab]
    return codes, vocab, table


@pytest.mark.parametrize("seed", [0, 1])
def test_wide_beam_ranks_every_item_exactly(seed):
    codes, vocab, table = random_problem(seed)
    n_items, batch = len(codes) - 1, table[0].shape[0]
    exact = sum(table[d][:, codes[1:, d]] for d in range(len(vocab)))  # [B, n_items] log-prob of each item
    expected = exact.argsort(dim=1, descending=True)[:, :10] + 1
    trie = SidTrie.from_codes(codes, vocab)
    for groups in ([[0], [1], [2], [3]], [[0, 1, 2, 3]], digit_groups(4, 2)):
        found = constrained_beam_search(trie, factorised(table), groups, batch, beam_size=n_items, k=10)
        assert found.tolist() == expected.tolist()


@pytest.mark.parametrize("beam_size, k", [(7, 20), (20, 5)])
def test_narrow_beam_emits_distinct_real_items_only(beam_size, k):
    codes, vocab, table = random_problem(3)
    trie = SidTrie.from_codes(codes, vocab)
    found = constrained_beam_search(trie, factorised(table), [[0], [1], [2], [3]], 5, beam_size, k)
    assert found.shape == (5, min(beam_size, k))
    for row in found.tolist():
        assert len(set(row)) == len(row) and all(1 <= item < len(codes) for item in row)


def test_dead_beams_give_empty_slots_not_made_up_items():
    trie = SidTrie.from_codes(CODES, VOCAB)
    table = [torch.zeros(1, v).log_softmax(-1) for v in VOCAB]
    found = constrained_beam_search(trie, factorised(table), [[0], [1], [2]], 1, beam_size=8, k=8)
    assert sorted(item for item in found[0].tolist() if item) == [1, 2, 3, 4, 5]
    assert found[0].tolist()[5:] == [0, 0, 0]  # only 5 SIDs exist


def test_predictor_sees_each_beams_committed_prefix():
    trie = SidTrie.from_codes(CODES, VOCAB)
    seen = []

    def predict(prefix, digits):
        seen.append((prefix.shape[2], tuple(digits), sorted(map(tuple, prefix[0].tolist()))))
        return [torch.zeros(1, prefix.shape[1], VOCAB[d]) for d in digits]

    constrained_beam_search(trie, predict, [[0], [1, 2]], 1, beam_size=10, k=10)
    assert seen == [(0, (0,), [()]), (1, (1, 2), [(0,), (1,), (2,)])]


def test_digit_groups_cover_the_digits_in_order():
    assert digit_groups(4, 1) == [[0, 1, 2, 3]]
    assert digit_groups(4, 3) == [[0, 1], [2], [3]]
    assert digit_groups(4, 4) == [[0], [1], [2], [3]]
