"""The SID prefix trie and the constrained beam search: only real items, no duplicates, exact when the beam is wide."""

import numpy as np
import pytest
import torch

from bench.models.sid_decoding import SidTable, SidTrie, constrained_beam_search, digit_groups, masked_beam_search
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


# ---------------------------------------------------------------- any-order decoding

def any_order(table):
    """A predictor for masked_beam_search whose digit distributions ignore the committed digits."""
    def predict(values, known):
        batch, width = values.shape[:2]
        return [rows[:, None, :].expand(batch, width, -1) for rows in table]
    return predict


def test_table_children_are_exactly_the_values_some_item_has_with_the_committed_digits():
    codes, vocab, _ = random_problem(0)
    table, items = SidTable.from_codes(codes, vocab), codes[1:]
    rng = np.random.default_rng(0)
    for _ in range(40):
        item = items[rng.integers(len(items))]
        committed = sorted(rng.choice(4, size=rng.integers(0, 4), replace=False).tolist())
        node = torch.tensor(0)
        for digit in committed:  # walk there one digit at a time, in a random order
            node = table.children(node, digit)[item[digit]]
        assert node >= 0 and int(table.size[node]) == (items[:, committed] == item[committed]).all(1).sum()
        for digit in set(range(4)) - set(committed):
            agree = items[(items[:, committed] == item[committed]).all(1)]
            reachable = torch.nonzero(table.children(node, digit) >= 0).flatten().tolist()
            assert reachable == sorted(set(agree[:, digit].tolist()))
        assert (table.children(node, committed[0]) < 0).all() if committed else True  # a committed digit is not extended again
    full = table.item_nodes[1:, -1]
    assert table.node_item[full].tolist() == list(range(1, len(items) + 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_code_order_equals_the_prefix_trie_search(seed):
    codes, vocab, table = random_problem(seed)
    trie, index = SidTrie.from_codes(codes, vocab), SidTable.from_codes(codes, vocab)
    exclude = torch.tensor([[1, 2, 3, 0], [5, 5, 6, 7], [0, 0, 0, 0], [10, 11, 12, 13], [20, 21, 22, 23]])
    for groups in ([[0], [1], [2], [3]], [[0, 1, 2, 3]], digit_groups(4, 2)):
        for beam_size in (3, 7, 20):
            for excluded in (None, exclude):
                expected = constrained_beam_search(trie, factorised(table), groups, 5, beam_size, 10, exclude=excluded)
                found = masked_beam_search(index, any_order(table), [len(g) for g in groups], 5, beam_size, 10,
                                           order="fixed", digit_order=[0, 1, 2, 3], exclude=excluded)
                assert found.tolist() == expected.tolist()


@pytest.mark.parametrize("order", ["confidence", "joint"])
@pytest.mark.parametrize("sizes", [[1, 1, 1, 1], [4], [2, 2]])
def test_wide_any_order_beam_ranks_every_item_exactly(order, sizes):
    codes, vocab, table = random_problem(0)
    exact = sum(table[d][:, codes[1:, d]] for d in range(len(vocab)))
    expected = exact.argsort(dim=1, descending=True)[:, :10] + 1
    found = masked_beam_search(SidTable.from_codes(codes, vocab), any_order(table), sizes, 5, 2000, 10, order=order)
    assert found.tolist() == expected.tolist()


@pytest.mark.parametrize("order", ["confidence", "joint"])
def test_narrow_any_order_beam_emits_distinct_real_unseen_items(order):
    codes, vocab, table = random_problem(3)
    index = SidTable.from_codes(codes, vocab)
    exclude = torch.tensor([[1, 2, 3, 0], [5, 5, 6, 7], [0, 0, 0, 0], [10, 11, 12, 13], [20, 21, 22, 23]])
    for excluded in (None, exclude):
        found = masked_beam_search(index, any_order(table), [1, 1, 1, 1], 5, 7, 10, order=order, exclude=excluded)
        assert found.shape == (5, 7)
        for row, seen in zip(found.tolist(), exclude.tolist()):
            real = [item for item in row if item]
            assert real == row[: len(real)] and len(set(real)) == len(real) >= 3  # merged beams leave empty slots last
            assert all(1 <= item < len(codes) for item in real)
            assert excluded is None or not set(real) & set(seen)
        # a beam wider than the list (DiffGM's beam_act) fills it
        wide = masked_beam_search(index, any_order(table), [1, 1, 1, 1], 5, 40, 10, order=order, exclude=excluded, list_size=7)
        assert wide.shape == (5, 7) and (wide > 0).all()
        assert all(len(set(row)) == 7 for row in wide.tolist())


def test_confidence_order_commits_each_beams_most_confident_digit():
    # every code of 3 x 3 x 3 is an item, so the constraint never decides; a peaked digit is a confident one
    codes = np.array([[0, 0, 0]] + [[a, b, c] for a in range(3) for b in range(3) for c in range(3)])
    index = SidTable.from_codes(codes, (3, 3, 3))
    peaked, flat = torch.tensor([0.9, 0.06, 0.04]).log(), torch.tensor([0.4, 0.35, 0.25]).log()
    seen = []

    def predict(values, known):
        # first call: digit 2 is confident; then beams with digit 2 = 0 are sure of digit 0, the others of digit 1
        seen.append((values.clone(), known.clone()))
        batch, width = values.shape[:2]
        table = [flat.expand(batch, width, 3).clone() for _ in range(3)]
        first = ~known.any(-1)
        table[2][first] = peaked
        table[0][known[..., 2] & (values[..., 2] == 0)] = peaked
        table[1][known[..., 2] & (values[..., 2] != 0)] = peaked
        return table

    masked_beam_search(index, predict, [1, 1, 1], 1, 3, 3, order="confidence")
    (_, second), (values, third) = seen[1], seen[2]
    assert second[..., 2].all() and second.sum(-1).eq(1).all()  # every beam committed digit 2 first
    for row, known in zip(values[0].tolist(), third[0].tolist()):
        assert known[0 if row[2] == 0 else 1]  # then its own most confident digit
    seen.clear()
    masked_beam_search(index, predict, [1, 1, 1], 1, 3, 3, order="fixed", digit_order=[0, 1, 2])
    assert seen[1][1][..., 0].all()  # code order ignores confidence


def test_joint_order_keeps_the_best_digit_value_pairs_over_all_beams():
    codes = np.array([[0, 0, 0]] + [[a, b, c] for a in range(3) for b in range(3) for c in range(3)])
    index = SidTable.from_codes(codes, (3, 3, 3))
    # digit 0 value 0 and digit 1 value 0 are both likely; the two best beams after one step differ in digit
    table = [torch.tensor([[0.6, 0.3, 0.1]]).log(), torch.tensor([[0.55, 0.35, 0.1]]).log(), torch.tensor([[0.34, 0.33, 0.33]]).log()]
    seen = []

    def predict(values, known):
        seen.append(known.clone())
        return any_order(table)(values, known)

    masked_beam_search(index, predict, [1, 1, 1], 1, 2, 2, order="joint")
    assert sorted(seen[1][0].int().tolist()) == [[0, 1, 0], [1, 0, 0]]
    seen.clear()
    masked_beam_search(index, predict, [1, 1, 1], 1, 2, 2, order="confidence")
    assert seen[1][0].int().tolist() == [[1, 0, 0], [1, 0, 0]]  # per beam: digit 0, the single most confident


def test_unconstrained_beam_drops_codes_that_are_no_item():
    # the predictor's favourite code (0, 0, 0) is no item: constrained search avoids it, unconstrained drops it at the end
    codes = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1]])
    index = SidTable.from_codes(codes, (2, 2, 2))
    table = [torch.tensor([[0.9, 0.1]]).log(), torch.tensor([[0.8, 0.2]]).log(), torch.tensor([[0.7, 0.3]]).log()]
    for order in ("fixed", "confidence", "joint"):
        digit_order = [0, 1, 2] if order == "fixed" else None
        constrained = masked_beam_search(index, any_order(table), [1, 1, 1], 1, 3, 3, order=order, digit_order=digit_order)
        free = masked_beam_search(index, any_order(table), [1, 1, 1], 1, 3, 3, order=order, digit_order=digit_order, constrained=False)
        assert constrained[0].tolist() == [1, 2, 3]  # every item, by score
        assert free[0].tolist() == [1, 2, 0]  # (0, 0, 0) took a beam and was dropped at the end
