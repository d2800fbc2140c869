"""catalogue_cross_entropy is the reference full-softmax cross-entropy, loss and gradients, chunk by chunk.

The reference is what the models compute: ``logits = states @ items.T``,
column 0 (padding) at -inf, ``F.cross_entropy``. Chunk sizes are chosen to
give one partial chunk, one exact chunk and several chunks with a tail.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.models import losses as losses_module
from bench.models.losses import catalogue_cross_entropy


def reference(states, items, targets, reduction="mean", bias=None):
    logits = states @ items.T if bias is None else states @ items.T + bias
    logits[:, 0] = -torch.inf
    return F.cross_entropy(logits, targets, reduction=reduction)


def inputs(n, d, v, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(n, d, generator=generator, dtype=dtype).requires_grad_()
    items = (0.5 * torch.randn(v, d, generator=generator, dtype=dtype)).requires_grad_()
    targets = torch.randint(1, v, (n,), generator=generator)
    return states, items, targets


def loss_and_grads(loss_fn, states, items, targets, reduction, grad_output, **options):
    loss = loss_fn(states, items, targets, reduction=reduction, **options)
    return (loss.detach(), *torch.autograd.grad(loss, (states, items), grad_output))


def assert_matches(got, want, name=""):
    """Float32 agreement: to 1e-5 of each element or of the tensor's largest element (sums over the catalogue
    in another order differ by a few ulps of their largest terms, however small the sum)."""
    assert got.shape == want.shape and got.dtype == want.dtype, name
    scale = want.abs().max().item() if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale, msg=lambda message: f"{name}: {message}")


def grad_output_for(reduction, n, seed=1):
    if reduction == "mean":
        return torch.tensor(1.7)
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(("n", "d", "v", "chunk_size"), [
    (5, 8, 50, 64),  # N smaller than one chunk
    (64, 8, 20, 64),  # exactly one chunk
    (100, 16, 50, 7),  # N not a multiple of the chunk, tiny catalogue
    (130, 16, 3000, 32),  # tail of 2 rows
    (200, 32, 12102, None),  # Beauty-sized catalogue, the default chunk (64 rows: a tail of 8)
])
def test_equals_reference(n, d, v, chunk_size, reduction):
    states, items, targets = inputs(n, d, v)
    grad_output = grad_output_for(reduction, n)
    expected = loss_and_grads(reference, states, items, targets, reduction, grad_output)
    actual = loss_and_grads(catalogue_cross_entropy, states, items, targets, reduction, grad_output,
                            chunk_size=chunk_size)
    for name, want, got in zip(("loss", "grad states", "grad items"), expected, actual):
        assert_matches(got, want, name)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("autocast", [False, True])
def test_output_bias(reduction, autocast):
    states, items, targets = inputs(70, 16, 300)
    bias = torch.randn(300, generator=torch.Generator().manual_seed(2)).requires_grad_()
    grad_output = grad_output_for(reduction, 70)
    results = []
    for loss_fn in (reference, catalogue_cross_entropy):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(states, items, targets, reduction=reduction, bias=bias)
        results.append((loss.detach(), *torch.autograd.grad(loss, (states, items, bias), grad_output)))
    for name, want, got in zip(("loss", "grad states", "grad items", "grad bias"), *results):
        if autocast:
            assert got.dtype == want.dtype and relative_error(got, want) < 0.02, name
        else:
            assert_matches(got, want, name)
    assert results[1][3][0] == 0  # the padding item's bias gets no gradient


def test_default_chunks_shrink_for_large_catalogues(monkeypatch):
    monkeypatch.setattr(losses_module, "CHUNK_ELEMENTS", 50 * 6)  # as if 50 items were a huge catalogue: 6 rows
    chunk_sizes, sweep = [], losses_module._sweep
    monkeypatch.setattr(losses_module, "_sweep", lambda *args: chunk_sizes.append(args[4]) or sweep(*args))
    states, items, targets = inputs(20, 8, 50)
    grad_output = grad_output_for("none", 20)
    expected = loss_and_grads(reference, states, items, targets, "none", grad_output)
    actual = loss_and_grads(catalogue_cross_entropy, states, items, targets, "none", grad_output)
    assert chunk_sizes == [6, 6]  # forward and backward
    for name, want, got in zip(("loss", "grad states", "grad items"), expected, actual):
        assert_matches(got, want, name)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck_float64(reduction):
    states, items, targets = inputs(11, 3, 9, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda s, i: catalogue_cross_entropy(s, i, targets, reduction=reduction, chunk_size=4), (states, items))


def test_tail_chunk_is_not_dropped():
    chunk = 8
    states, items, targets = inputs(2 * chunk + 1, 8, 40)
    states.data[-1] *= 30  # the last row alone: a large loss and large gradients
    losses = catalogue_cross_entropy(states, items, targets, reduction="none", chunk_size=chunk)
    grad_states, grad_items = torch.autograd.grad(losses.sum(), (states, items))
    want_losses = reference(states, items, targets, reduction="none")
    want_states, want_items = torch.autograd.grad(want_losses.sum(), (states, items))
    assert_matches(losses, want_losses)
    assert grad_states[-1].abs().max() > 1
    assert_matches(grad_states, want_states)
    assert_matches(grad_items, want_items)


def test_padding_column_is_never_a_candidate():
    states, items, targets = inputs(20, 4, 30)
    items.data[0] = 100 * states.data.mean(0)  # row 0 would take nearly all the probability if it were a candidate
    loss = catalogue_cross_entropy(states, items, targets, chunk_size=8)
    grad_states, grad_items = torch.autograd.grad(loss, (states, items))
    assert torch.equal(grad_items[0], torch.zeros_like(grad_items[0]))
    want_loss = reference(states, items, targets)
    want_states, _ = torch.autograd.grad(want_loss, (states, items))
    assert_matches(loss, want_loss)
    assert_matches(grad_states, want_states)


def relative_error(got, want):
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bfloat16_autocast_is_close_to_float32(reduction):
    states, items, targets = inputs(150, 32, 2000)
    grad_output = grad_output_for(reduction, 150)
    exact = loss_and_grads(reference, states, items, targets, reduction, grad_output)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_reference = loss_and_grads(reference, states, items, targets, reduction, grad_output)
        actual = loss_and_grads(catalogue_cross_entropy, states, items, targets, reduction, grad_output, chunk_size=64)
    assert actual[0].dtype == torch.float32  # the loss is accumulated in float32, as F.cross_entropy's under autocast
    assert actual[1].dtype == actual[2].dtype == torch.float32  # gradients in the inputs' dtype
    for name, want, bf16_want, got in zip(("loss", "grad states", "grad items"), exact, autocast_reference, actual):
        error, reference_error = relative_error(got, want), relative_error(bf16_want, want)
        assert error < 0.02, name  # bfloat16 logits: about 3 significant digits
        assert error < 1.5 * reference_error + 1e-3, name  # no worse than the reference under the same autocast


def test_bfloat16_inputs_give_bfloat16_gradients():
    states, items, targets = inputs(30, 8, 100)
    states, items = (tensor.detach().bfloat16().requires_grad_() for tensor in (states, items))
    loss = catalogue_cross_entropy(states, items, targets, chunk_size=16)
    grad_states, grad_items = torch.autograd.grad(loss, (states, items))
    assert loss.dtype == torch.float32
    assert grad_states.dtype == grad_items.dtype == torch.bfloat16


def test_zero_rows_follow_f_cross_entropy():
    states, items, targets = inputs(0, 8, 30)
    loss = catalogue_cross_entropy(states, items, targets)
    assert loss.shape == () and torch.isnan(loss)  # as F.cross_entropy: the mean of nothing
    grad_states, grad_items = torch.autograd.grad(loss, (states, items))
    assert grad_states.shape == (0, 8) and torch.equal(grad_items, torch.zeros_like(items))
    losses = catalogue_cross_entropy(states, items, targets, reduction="none")
    assert losses.shape == (0,)
    assert torch.equal(torch.autograd.grad(losses.sum(), items)[0], torch.zeros_like(items))


def test_no_grad_gives_the_loss():
    states, items, targets = inputs(40, 8, 60)
    with torch.no_grad():
        loss = catalogue_cross_entropy(states, items, targets, chunk_size=16)
        want = reference(states, items, targets)
    assert not loss.requires_grad
    assert_matches(loss, want)


def test_unknown_reduction():
    states, items, targets = inputs(4, 8, 10)
    with pytest.raises(ValueError, match="reduction"):
        catalogue_cross_entropy(states, items, targets, reduction="sum")
