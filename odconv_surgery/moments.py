"""Running mean and spread of tensors over samples, batch by batch (Chan et al.'s pairwise update, float64): no
``E[x^2] - E[x]^2`` cancellation, so values that never change measure a spread of 0, not round-off. Shared by the
kernel spread of ``folding`` and the attention statistics."""

from __future__ import annotations

from torch import Tensor


class RunningMoments:
    """Per-element mean and sum of squared deviations of the samples added so far (the first axis of each batch)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Tensor | None = None
        self.m2: Tensor | None = None

    def add(self, values: Tensor) -> None:
        """Add a batch of samples: ``values`` is (B, *shape), B >= 1."""
        values = values.detach().double()
        batch = values.shape[0]
        batch_mean = values.mean(dim=0)
        batch_m2 = ((values - batch_mean) ** 2).sum(dim=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = batch, batch_mean, batch_m2
            return
        total = self.count + batch
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (batch / total)
        self.m2 = self.m2 + batch_m2 + delta * delta * (self.count * batch / total)
        self.count = total

    def variance(self) -> Tensor:
        """Per-element population variance over the samples (0 for a single sample)."""
        return self.m2 / self.count
