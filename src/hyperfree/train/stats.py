"""Per-epoch metric accumulators that live on the device and sync once per epoch.

:class:`EpochStats` adds up, without any host synchronisation, the sample-weighted loss, the
number of correct predictions, the sample count (tokens, for token models), every scalar a
stepper logs (sum, min and max over steps) and the relative update size

    rel_update = mean over weight tensors W of ‖W_after − W_before‖_F / ‖W_before‖_F

(Bernstein et al. 2023, Figure 5), measured on a few sampled steps. :meth:`EpochStats.summary`
reduces across ranks and syncs once. The accumulators round-trip through ``state_dict`` so an
epoch interrupted half-way resumes exactly.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .distributed import DistContext, reduce_max, reduce_min, reduce_sum

__all__ = ["EpochStats", "weight_tensors", "relative_update", "sampled_steps"]


def weight_tensors(module: nn.Module) -> list[Tensor]:
    """The trainable weight matrices/kernels (parameters with ≥ 2 dims) of ``module``."""
    return [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]


@torch.no_grad()
def relative_update(before: list[Tensor], after: list[Tensor]) -> Tensor:
    """Mean over tensors of ‖after − before‖_F / ‖before‖_F, a 0-dim tensor (no sync)."""
    before, after = _whole(before), _whole(after)  # sharded (FSDP): gathered, every rank
    ratios = [torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp_min(1e-30)
              for b, a in zip(before, after)]
    return torch.stack(ratios).mean()


def _whole(ts: list[Tensor]) -> list[Tensor]:
    return [t.full_tensor() if hasattr(t, "full_tensor") else t for t in ts]


def sampled_steps(num_steps: int, samples: int) -> frozenset[int]:
    """``samples`` step indices in ``[0, num_steps)`` spread evenly (deterministic)."""
    if samples <= 0 or num_steps <= 0:
        return frozenset()
    return frozenset((i * num_steps) // samples for i in range(min(samples, num_steps)))


class EpochStats:
    """Device-side sums for one epoch of training (or one evaluation pass)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        dtype = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
        self.loss_sum = torch.zeros((), device=device, dtype=dtype)
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.count = torch.zeros((), device=device, dtype=torch.int64)
        self.scalars: dict[str, list[Tensor]] = {}  # key -> [sum, min, max]
        self.scalar_steps: dict[str, int] = {}
        self.rel_sum = torch.zeros((), device=device, dtype=dtype)
        self.rel_steps = 0
        self.seconds = 0.0  # wall time spent before an interruption (resumed epochs)

    @torch.no_grad()
    def add_batch(self, loss: Tensor, correct: Tensor, count: int) -> None:
        """One batch: ``loss`` is its mean loss, ``correct`` its hits, ``count`` its samples."""
        self.loss_sum += loss.detach().to(self.loss_sum.dtype) * count
        self.correct += correct
        self.count += count

    @torch.no_grad()
    def add_scalars(self, values: dict[str, Tensor]) -> None:
        """One step's logged scalars (0-dim tensors)."""
        for key, value in values.items():
            v = value.detach().to(device=self.device, dtype=self.loss_sum.dtype).reshape(())
            acc = self.scalars.get(key)
            if acc is None:
                self.scalars[key] = [v.clone(), v.clone(), v.clone()]
                self.scalar_steps[key] = 1
            else:
                acc[0] += v
                torch.minimum(acc[1], v, out=acc[1])
                torch.maximum(acc[2], v, out=acc[2])
                self.scalar_steps[key] += 1

    @torch.no_grad()
    def add_rel_update(self, value: Tensor) -> None:
        self.rel_sum += value.to(self.rel_sum.dtype)
        self.rel_steps += 1

    def running(self, latest: dict[str, Tensor]) -> dict[str, float]:
        """Loss/accuracy so far and the ``latest`` scalars, synced once (for the progress bar)."""
        keys = list(latest)
        vals = torch.stack([self.loss_sum / self.count.clamp_min(1),
                            self.correct / self.count.clamp_min(1),
                            *[latest[k].detach().to(self.loss_sum) for k in keys]]).tolist()
        return {"loss": vals[0], "acc": vals[1], **dict(zip(keys, vals[2:]))}

    def summary(self, prefix: str, ctx: DistContext) -> dict[str, float]:
        """``{prefix}_loss``, ``{prefix}_acc``, ``k_mean/min/max``, ``rel_update``, reduced."""
        keys = sorted(self.scalars)
        sums = torch.stack([self.loss_sum, self.correct.to(self.loss_sum), self.count.to(
            self.loss_sum), self.rel_sum, *[self.scalars[k][0] for k in keys]])
        sums = reduce_sum(sums, ctx).tolist()
        mins = reduce_min(torch.stack([self.scalars[k][1] for k in keys]), ctx).tolist() \
            if keys else []
        maxs = reduce_max(torch.stack([self.scalars[k][2] for k in keys]), ctx).tolist() \
            if keys else []
        count = max(sums[2], 1.0)
        out = {f"{prefix}_loss": sums[0] / count, f"{prefix}_acc": sums[1] / count}
        if self.rel_steps:
            out["rel_update"] = sums[3] / (self.rel_steps * ctx.world_size)
        for i, k in enumerate(keys):
            n = self.scalar_steps[k] * ctx.world_size
            out[f"{k}_mean"], out[f"{k}_min"], out[f"{k}_max"] = sums[4 + i] / n, mins[i], maxs[i]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"loss_sum": self.loss_sum, "correct": self.correct, "count": self.count,
                "scalars": {k: list(v) for k, v in self.scalars.items()},
                "scalar_steps": dict(self.scalar_steps), "rel_sum": self.rel_sum,
                "rel_steps": self.rel_steps, "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.device
        self.loss_sum = state["loss_sum"].to(dev)
        self.correct = state["correct"].to(dev)
        self.count = state["count"].to(dev)
        self.scalars = {k: [t.to(dev) for t in v] for k, v in state["scalars"].items()}
        self.scalar_steps = dict(state["scalar_steps"])
        self.rel_sum = state["rel_sum"].to(dev)
        self.rel_steps = int(state["rel_steps"])
        self.seconds = float(state["seconds"])
