"""The polarization regularizer (Zhuang et al., "Neuron-level Structured Pruning using Polarization
Regularizer", NeurIPS 2020): ``R(γ) = t·Σ|γ| − Σ|γ − γ̄|`` over every penalised γ, with γ kept in [0, 1].

The first term is the L1 pull towards zero; the second rewards distance from the mean γ̄ (the
mean over all penalised γ, not detached), so the γ split into a group at zero and a group that is
pushed up, instead of one peak sliding down as under plain L1. With ``t > 1`` the pull wins for
every γ below the mean. As for the L1 term, the subgradient is added to the gradients after
backward instead of the term being added to the loss: a few kernels over all γ as one flat tensor.

Subgradient for γ_i (N penalised γ, s_j = sign(γ_j − γ̄))::

    ∂R/∂γ_i = t·sign(γ_i) − s_i + (1/N)·Σ_j s_j
"""

from __future__ import annotations

import torch

from yolo_slim.slim.sparsity import SparsityTarget


def add_polarization_grad(target: SparsityTarget, strength: float, t: float) -> None:
    """Add ``strength * ∂R/∂γ`` to the gradients of the target's γ, in place.

    Args:
        target: The penalised BatchNorms (:func:`~yolo_slim.slim.sparsity.sparsity_target`).
        strength: λ of the paper (they use 2e-4 on CIFAR with a mean loss; YOLOv5's loss is summed
            over the batch, so its λ is larger).
        t: Weight of the L1 pull against the polarizing term (the paper: 1.2 to 1.4); ``t > 1``.

    Raises:
        ValueError: ``strength < 0`` or ``t <= 0``.
    """
    if strength < 0:
        raise ValueError(f"polarization strength must be >= 0, found {strength}")
    if t <= 0:
        raise ValueError(f"polarization t must be > 0, found {t}")
    weights = [p for p in target.weights if p.grad is not None]
    if strength == 0 or not weights:
        return
    everything = torch.cat([p.detach().reshape(-1) for p in weights])  # (N,) every penalised γ
    sides = torch.sign(everything - everything.mean())  # s_j, against γ̄ (kept on the device: no sync)
    pulls = t * torch.sign(everything) - sides + sides.mean()  # (N,) ∂R/∂γ
    pieces = pulls.split([p.numel() for p in weights])
    torch._foreach_add_([p.grad for p in weights], [g.view_as(p) for g, p in zip(pieces, weights)], alpha=strength)


@torch.no_grad()
def clamp_gammas(target: SparsityTarget, low: float = 0.0, high: float = 1.0) -> None:
    """Keep every penalised γ in [low, high] (the paper clamps after each optimizer step)."""
    torch._foreach_clamp_min_(list(target.weights), low)
    torch._foreach_clamp_max_(list(target.weights), high)
