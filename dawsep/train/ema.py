"""An exponential moving average of a model's weights, for validation, ``best.pt`` and shipping.

Why: on CPU budgets the runs here validate every few hundred steps at learning rates that still
move the weights a lot, and neighbouring checkpoints of the transcriber differed by up to ±0.02
validation note F1: picking the best of such noisy points mostly picks noise. The average of the
last ~``1 / (1 - decay)`` steps' weights sits nearer the bottom of the valley the noisy iterate
circles around (Polyak averaging), costs one copy of the weights and no extra forward pass.

Every floating-point entry of the state dict is averaged (parameters and BatchNorm running
statistics alike); integer buffers (``num_batches_tracked``) are copied.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


class WeightAverage:
    """``avg = decay * avg + (1 - decay) * weights`` after each optimiser step.

    Starts equal to the model's weights (a resumed or warm-started run averages from where it
    is, with no start-up bias to correct).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must lie in (0, 1), not {decay}")
        self.decay = float(decay)
        self.avg = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            a = self.avg[k]
            if a.is_floating_point():
                a.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                a.copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights: a model state dict (what ``best.pt`` stores as ``model``)."""
        return self.avg

    def load_state_dict(self, avg: dict[str, torch.Tensor]) -> None:
        missing = set(self.avg) ^ set(avg)
        if missing:
            raise KeyError(f"the saved average does not match the model: {sorted(missing)[:5]}")
        for k, v in avg.items():
            self.avg[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.avg)
        try:
            yield
        finally:
            model.load_state_dict(own)


__all__ = ["WeightAverage"]
