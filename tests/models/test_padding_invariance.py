"""Every registered model scores (or generates for) a history the same whatever its left padding and batch.

The evaluator pads a batch only to its own longest history and groups users
of similar history length into batches (``bench.protocol.evaluation``); that
changes nothing for a model whose output for a row depends only on that row's
real items. Checked per model, in eval mode, with histories shorter and longer
than the model's ``max_len`` (which the model cuts itself):

- the same batch with extra all-zero columns on the left;
- each row scored alone (padded to its own length) against inside the batch;
- the batch in reverse row order.

Scores must agree to float tolerance (batch shapes change the order of float
reductions); generated lists must be identical. Weights are perturbed away
from their tiny initial values so that positions, padding and the items all
move the outputs well above that tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.data.sequences import Sequences
from bench.models.base import build_model, model_entry, model_names
from bench.protocol.evaluation import generates_lists

N_ITEMS = 30  # as the planted split behind tests/baselines/test_tiger.py `untrained`
EXTRA = 7  # all-zero columns added on the left
MAX_LEN = 8  # of the models built here (the SID models use SMALL's 4)
# Real history lengths per batch: empty, shorter than, equal to and longer than max_len (4 and 8). In the
# first two batches every row is shorter than max_len, so the extra columns change the width the model keeps.
BATCHES = [[2, 0, 1, 3], [3, 0, 1, 6, 5, 2], [3, 0, 1, 12, 5, 8, 2, 4, 20, 7]]
TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def private_sid_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_SID_CACHE", str(tmp_path / "sids"))


def perturbed(model):
    """The model with every weight moved by N(0, 0.1) noise (padding rows kept at zero), in eval mode."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
    return model.eval()


def neural(name, **config):
    torch.manual_seed(0)
    settings = model_entry(name).config_class(**config)
    settings.validate()
    return perturbed(build_model(name, settings, N_ITEMS))


def counted(name="pop"):
    rng = np.random.default_rng(0)
    train = Sequences.from_lists([rng.integers(1, N_ITEMS + 1, int(rng.integers(1, 12))).tolist() for _ in range(40)])
    model = build_model(name, model_entry(name).config_class(), N_ITEMS)
    model.fit(train, None, lambda fitted: {})
    return model.eval()


def sid(name, **config):
    from baselines.tiger import Tiger, TigerConfig
    from diffusion.sid_diffusion import SidDiffusion, SidDiffusionConfig
    from tests.baselines.test_tiger import untrained

    model_class, config_class = {"tiger": (Tiger, TigerConfig), "sid_diffusion": (SidDiffusion, SidDiffusionConfig)}[name]
    model, split = untrained(model_class, config_class, **config)
    assert split.n_items == N_ITEMS
    return perturbed(model)


TRANSFORMER = {"max_len": MAX_LEN, "hidden_size": 16, "n_blocks": 2, "n_heads": 2, "dropout": 0.0}

# case id -> builder of an eval-mode model; every registered model has at least one case
CASES = {
    "pop": counted,
    "markov": lambda: counted("markov"),
    "gru4rec": lambda: neural("gru4rec", max_len=MAX_LEN, hidden_size=16, n_layers=2, embedding_dropout=0.0),
    "sasrec": lambda: neural("sasrec", **TRANSFORMER),
    "bert4rec": lambda: neural("bert4rec", **TRANSFORMER),
    "diffsasrec": lambda: neural("diffsasrec", **TRANSFORMER, n_masks=5),
    "diffsasrec-multi": lambda: neural("diffsasrec", **TRANSFORMER, inference="multi", n_masks=5, steps=4, threshold=0.3),
    "uniform_diffusion": lambda: neural("uniform_diffusion", **TRANSFORMER, diffusion_steps=4, steps=4, denoise_from=1.0),
    "diffurec": lambda: neural("diffurec", **TRANSFORMER, embedding_dropout=0.0, diffusion_steps=4, steps=4),
    # without the x_t weight lambda (lambda_uncertainty 0) DiffuRec's output ignores its noise entirely
    "diffurec-noiseless": lambda: neural("diffurec", **TRANSFORMER, embedding_dropout=0.0, diffusion_steps=4, steps=4,
                                         lambda_uncertainty=0.0),
    "tiger": lambda: sid("tiger", beam_size=6),
    "sid_diffusion": lambda: sid("sid_diffusion", beam_size=6, steps=2),
}

NOT_INVARIANT: dict[str, str] = {}  # model case -> why it is not invariant (an xfail); none today



def histories(lengths, seed=0):
    """Left-padded [len(lengths), max(lengths)] batch of random items (0 = padding)."""
    rng = np.random.default_rng(seed)
    width = max(1, max(lengths))
    batch = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        if length:
            batch[row, width - length:] = torch.from_numpy(rng.integers(1, N_ITEMS + 1, length))
    return batch


def unpadded(batch, row):
    """Row ``row`` alone, padded to its own length (one column of padding if it is empty)."""
    real = batch[row][batch[row] > 0]
    return real[None] if len(real) else torch.zeros(1, 1, dtype=torch.long)


def outputs(model, batch, exclude_seen=False):
    """What the evaluator reads: scores [B, n_items + 1], or the top-5 lists [B, <=5] of a generator."""
    with torch.no_grad():
        if generates_lists(model):
            return model.generate(batch, 5, exclude_seen=True) if exclude_seen else model.generate(batch, 5)
        return model.score(batch).float()


def same(actual, expected, lists):
    if lists:
        assert actual.tolist() == expected.tolist()
    else:
        torch.testing.assert_close(actual, expected, **TOLERANCE)


def case_params():
    params = []
    for case in CASES:
        marks = [pytest.mark.xfail(reason=NOT_INVARIANT[case], strict=True)] if case in NOT_INVARIANT else []
        params.append(pytest.param(case, marks=marks, id=case))
    return params


def test_every_registered_model_has_a_case():
    assert {case.split("-")[0] for case in CASES} == set(model_names())


@pytest.mark.parametrize("lengths", BATCHES, ids=["short", "medium", "long"])
@pytest.mark.parametrize("case", case_params())
def test_outputs_do_not_depend_on_padding_or_batch(case, lengths):
    model = CASES[case]()
    lists = generates_lists(model)
    batch = histories(lengths)
    wider = torch.nn.functional.pad(batch, (EXTRA, 0))
    for exclude_seen in ([False, True] if lists else [False]):
        reference = outputs(model, batch, exclude_seen)
        same(outputs(model, wider, exclude_seen), reference, lists)  # extra padding columns
        flipped = torch.arange(len(batch) - 1, -1, -1)
        same(outputs(model, batch[flipped], exclude_seen), reference[flipped], lists)  # other rows around each row
        for row in range(len(batch)):  # alone vs. inside a batch of longer rows
            same(outputs(model, unpadded(batch, row), exclude_seen), reference[row : row + 1], lists)


@pytest.mark.parametrize("case", ["sasrec", "bert4rec", "gru4rec", "diffsasrec", "uniform_diffusion", "diffurec-noiseless"])
def test_the_checks_would_see_a_change_of_the_real_items(case):
    """The tolerance is far (100x) below what one different item moves: changing the oldest kept item changes the scores."""
    model = CASES[case]()
    batch = histories([6, 6])
    changed = batch.clone()
    changed[:, 0] = changed[:, 0] % N_ITEMS + 1
    difference = (outputs(model, changed) - outputs(model, batch))[:, 1:].abs().max()
    assert difference > 100 * TOLERANCE["atol"]
