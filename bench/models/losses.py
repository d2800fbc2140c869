"""Full-softmax cross-entropy of hidden states against the item catalogue, without the [N, V] logits.

Why it exists: SASRec (loss "ce"), BERT4Rec, GRU4Rec and DiffuRec train with

    logits = states @ items.T         # [N, V], V = n_items + 1
    logits[:, 0] = -inf               # padding is never a candidate
    F.cross_entropy(logits, targets)

On Amazon Beauty the logits are 842 x 12,102 floats (40 MB): far more than any
cache, so the three matmuls, the log-softmax, its backward, a copy and a zero
fill each stream them through memory, about 0.26 s of a 0.39 s SASRec step on
one CPU core. ``catalogue_cross_entropy`` walks the rows in chunks (64 rows:
3 MB of logits at Beauty's catalogue) and per chunk computes the logits, their
logsumexp, the losses and the gradient pieces (softmax minus one-hot), adding
up the gradients wrt the states and the items chunk by chunk, as Liger-Kernel's
fused linear cross-entropy and Apple's Cut Cross-Entropy (Wijmans et al., 2025)
do. In float32 on one CPU core forward + backward is 1.5-3.5x faster than the
reference at the models' shapes (bench/perf/cross_entropy.py), and no more than
a chunk of logits ever exists.

What is exact: the loss and both gradients are those of the code above, with
``reduction`` "mean" or "none"; only the order of the float sums differs
(float32 results agree to about 1e-6 relative). Column 0 is left out of the
softmax rather than set to -inf, so items[0] gets an exactly zero gradient.
Under autocast the logits and the states' gradient are matmuls in the autocast
dtype, as the reference's are; the logsumexp, the losses and the items'
gradient (its matmul too, a sum over the chunks) are float32, and the gradients
come back in the inputs' dtypes. Targets must be real items, 1..V-1 (the
reference gives an infinite loss for 0; here it is an out-of-range index). As
``F.cross_entropy``, the mean over zero rows is NaN, with zero gradients.

For "mean" the gradients are computed in the forward pass (while the chunk's
logits are at hand) and scaled by the incoming scalar gradient in backward;
for "none" each row's gradient is weighted by its own incoming gradient, so
backward recomputes the chunks' logits from the saved logsumexp. Double
backward is not supported.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Rows per chunk: the fastest of 16-256 on one CPU core at d = 64 (128 is ~8% faster at d = 128;
# bench/perf/cross_entropy.py). Fewer where a chunk's logits would pass CHUNK_ELEMENTS (16 MB of float32,
# half that CPU's L3), i.e. for catalogues over 65,536 items.
CHUNK_ROWS = 64
CHUNK_ELEMENTS = 2**22


def catalogue_cross_entropy(states: Tensor, items: Tensor, targets: Tensor, *, reduction: str = "mean",
                            chunk_size: int | None = None, bias: Tensor | None = None) -> Tensor:
    """``F.cross_entropy(states @ items.T (+ bias) with column 0 at -inf, targets, reduction=reduction)``, chunked.

    states [N, d], items [V, d] (the item embedding table, row 0 padding), targets [N] int64 in 1..V-1,
    bias [V] or None (BERT4Rec's and GRU4Rec's per-item output bias). Returns a float32 scalar ("mean") or
    [N] float32 losses ("none"); both differentiable.
    chunk_size: rows per chunk; None for CHUNK_ROWS, or fewer for catalogues over CHUNK_ELEMENTS // CHUNK_ROWS.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    device = states.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(states.dtype, items.dtype)
    if chunk_size is None:
        chunk_size = max(1, min(CHUNK_ROWS, CHUNK_ELEMENTS // len(items)))
    # Under no_grad ctx.needs_input_grad still says True, so the forward is told whether to make gradients.
    grads_in_forward = reduction == "mean" and torch.is_grad_enabled()
    return _CatalogueCrossEntropy.apply(states.to(dtype), items.to(dtype), bias, targets, reduction, chunk_size,
                                        grads_in_forward)


class _CatalogueCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, items, bias, targets, reduction, chunk_size, grads_in_forward):
        ctx.reduction, ctx.chunk_size = reduction, chunk_size
        ctx.dtypes = (states.dtype, items.dtype, None if bias is None else bias.dtype)
        if reduction == "none":
            losses, lse, _ = _sweep(states, items, bias, targets, chunk_size)
            ctx.save_for_backward(states, items, bias, targets, lse)
            return losses
        weights = None
        if grads_in_forward:  # the mean's: 1 / N each (an empty tensor when N = 0)
            weights = torch.ones(len(states), dtype=_accumulation(states), device=states.device) / len(states)  # [N]
        losses, _, grads = _sweep(states, items, bias, targets, chunk_size, weights)
        if grads_in_forward:
            ctx.save_for_backward(*grads)
        return losses.mean()

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.reduction == "mean":  # grad_output: a scalar
            grads = [None if grad is None else grad * grad_output for grad in ctx.saved_tensors]
        else:  # grad_output: [N], a weight for each row's gradient
            states, items, bias, targets, lse = ctx.saved_tensors
            _, _, grads = _sweep(states, items, bias, targets, ctx.chunk_size, grad_output, lse)
        grads = [None if grad is None else grad.to(dtype) for grad, dtype in zip(grads, ctx.dtypes)]
        return *grads, None, None, None, None


def _sweep(states, items, bias, targets, chunk_size, weights=None, lse=None):
    """One pass over the rows, a chunk at a time: (losses [N], lse [N], (grad_states, grad_items, grad_bias)).

    Without lse it computes the logsumexp and the losses, else takes lse as given and returns losses None;
    with weights [N] it also computes the gradients of sum(weights * losses) ([N, d], [V, d], [V] or None
    without a bias), else returns grads None.
    """
    n, accumulation = len(states), _accumulation(states)
    candidates, labels = items[1:], targets - 1  # [V - 1, d], [N]: column 0 is dropped, not masked
    losses = grads = None
    if lse is None:
        lse = torch.empty(n, dtype=accumulation, device=states.device)
        losses = torch.empty_like(lse)
    if weights is not None:  # the items' and the bias' row 0 stay zero
        grad_states = torch.empty_like(states)
        grad_items = torch.zeros(items.shape, dtype=accumulation, device=items.device)
        grad_bias = None if bias is None else torch.zeros(len(bias), dtype=accumulation, device=bias.device)
        grads = (grad_states, grad_items, grad_bias)
    for start in range(0, n, chunk_size):
        rows = slice(start, start + chunk_size)
        # [V - 1, C], transposed: the matmuls are faster with the long catalogue dimension as the rows.
        logits = (candidates @ states[rows].T).to(accumulation)
        if bias is not None:
            logits += bias[1:, None]
        if losses is None:  # lse given: the softmax straight from it
            probs = logits.sub_(lse[rows]).exp_()  # in place: a chunk has one [V - 1, C] float buffer
        else:
            target_logits = logits.gather(0, labels[None, rows]).squeeze(0)  # [C]
            top = logits.amax(0)  # [C]
            exps = logits.sub_(top).exp_()
            sums = exps.sum(0)  # [C]
            lse[rows] = top + sums.log()
            losses[rows] = lse[rows] - target_logits
            if weights is None:
                continue
            probs = exps.div_(sums)
        probs[labels[rows], torch.arange(probs.shape[1], device=probs.device)] -= 1  # d loss / d logits
        grad_logits = probs.mul_(weights[rows])  # [V - 1, C]
        grad_states[rows] = grad_logits.to(states.dtype).T @ candidates  # [C, d], in the states' (autocast) dtype
        grad_items[1:].addmm_(grad_logits, states[rows].to(accumulation))  # [V - 1, d], float32: a sum over chunks
        if grad_bias is not None:
            grad_bias[1:] += grad_logits.sum(1)
    return losses, lse, grads


def _accumulation(states: Tensor) -> torch.dtype:
    """float32, or float64 for float64 inputs: the dtype of the logsumexp, the losses and the items' gradient sum."""
    return torch.promote_types(states.dtype, torch.float32)
