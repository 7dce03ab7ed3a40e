"""The race's workloads, built through the public API, for the time-to-result benchmarks.

Shared by ``benchmarks/time_to_result.py`` and ``benchmarks/orthogonalize.py`` (a helper, not a
script). Each workload is the race's (``src/hyperfree/experiments/race.py``) at its batch size:

.. code-block:: text

    fcn16  fcn depth 16 x width 512, Fashion-MNIST, batch 128, square loss
    fcn32  fcn depth 32 x width 256, Fashion-MNIST, batch 128, square loss
    conv   resnet_small depth 1 width 16, Fashion-MNIST, batch 128, square loss
    gpt    gpt depth 4 width 128, 4 heads, context 64, batch 12, tinyshakespeare, cross-entropy
    lstm   char_lstm at its defaults (depth 2, width 256, context 128), batch 12 (the gpt's),
           tinyshakespeare, cross-entropy (not a race workload; the issue lists it)

:func:`capture_polar_inputs` records the stacks that AGD hands to
:func:`hyperfree.optim.newton_schulz.orthogonalize` during real training steps (the momentum
of real gradients, cut into AGD's cells), by wrapping the function wherever the optimiser's
modules imported it: the shapes and values are exactly those the step orthogonalises.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

import hyperfree
from hyperfree.data import load_dataset
from hyperfree.models import create_model
from hyperfree.optim import newton_schulz
from hyperfree.train.losses import cross_entropy, square_loss

TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"

#: name -> (arch, dataset, model flags, batch)
WORKLOADS: dict[str, tuple[str, str, dict, int]] = {
    "fcn16": ("fcn", "fashion-mnist", dict(depth=16, width=512), 128),
    "fcn32": ("fcn", "fashion-mnist", dict(depth=32, width=256), 128),
    "conv": ("resnet_small", "fashion-mnist", dict(depth=1, width=16), 128),
    "gpt": ("gpt", "tinyshakespeare", dict(depth=4, width=128, heads=4, seq_len=64), 12),
    "lstm": ("char_lstm", "tinyshakespeare", dict(seq_len=128), 12),
}


@dataclasses.dataclass
class Workload:
    name: str
    model: nn.Module  # initialised by AGD's rule (as the race's AGD runs are)
    batches: list[tuple[Tensor, Tensor]]  # a few real training batches, cycled
    loss_fn: Callable[[Tensor, Tensor], Tensor]

    def stream(self) -> Iterator[tuple[Tensor, Tensor]]:
        return itertools.cycle(self.batches)


def build(name: str, *, n_batches: int = 8, seed: int = 0, text: Path = TEXT) -> Workload:
    """Workload ``name`` with ``n_batches`` real training batches (seeded)."""
    arch, dataset, flags, bs = WORKLOADS[name]
    torch.manual_seed(seed)
    if dataset == "tinyshakespeare":
        data = load_dataset(dataset, data_dir=text, seq_len=flags["seq_len"])
    else:
        data = load_dataset(dataset)
    info = data.info
    model = create_model(arch, in_channels=info.in_channels, num_classes=info.num_classes,
                         image_size=info.image_size, **flags)
    hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(seed))
    loader = data.train_loader(bs, seed=seed)
    loader.set_epoch(0)
    batches = list(itertools.islice(iter(loader), n_batches))
    loss_fn = cross_entropy if info.kind == "text" else square_loss
    return Workload(name, model, batches, loss_fn)


def _ns_users() -> list[tuple[object, str]]:
    """(module, attribute) of every loaded hyperfree module holding ``orthogonalize``."""
    fn = newton_schulz.orthogonalize
    return [(m, "orthogonalize") for n, m in list(sys.modules.items())
            if n.startswith("hyperfree.optim") and m is not None and m is not newton_schulz
            and getattr(m, "orthogonalize", None) is fn]


#: name -> (coefficients, steps) of the Newton–Schulz schedules a prototype can switch AGD to
SCHEDULES = {"jordan": ((newton_schulz.NS_COEFFICIENTS,), 5),
             "ns4": (newton_schulz.NS4_SCHEDULE, 4),
             "polar-express": (newton_schulz.POLAR_EXPRESS, 5)}


@contextlib.contextmanager
def using_schedule(name: str) -> Iterator[None]:
    """Within the block, every ``orthogonalize(mats, steps=..., dtype=...)`` the optimiser makes
    runs schedule ``name`` (its coefficients and step count; the ``steps`` asked is ignored)."""
    coefficients, n_steps = SCHEDULES[name]
    real = newton_schulz.orthogonalize

    def call(G: Tensor, *, steps: int = newton_schulz.NS_STEPS, dtype=None) -> Tensor:
        return real(G, steps=n_steps, dtype=dtype, coefficients=coefficients)

    users = _ns_users()
    if not users:
        raise RuntimeError("no hyperfree.optim module holds orthogonalize: nothing to replace")
    for m, attr in users:
        setattr(m, attr, call)
    try:
        yield
    finally:
        for m, attr in users:
            setattr(m, attr, real)


def capture_polar_inputs(w: Workload, steps: int, at: set[int], preset: str | None = None
                         ) -> dict[int, list[Tensor]]:
    """Train ``w.model`` (a copy) with AGD for ``steps`` steps; at the steps in ``at`` record
    every stack AGD orthogonalises, as float32 copies: ``{step: [stack (n, r, c), ...]}``."""
    import copy

    model = copy.deepcopy(w.model)
    opt = hyperfree.AGD(model) if preset is None else hyperfree.AGD(model, preset=preset)
    users = _ns_users()
    real = newton_schulz.orthogonalize
    out: dict[int, list[Tensor]] = {}
    step = [0]

    def spy(G: Tensor, **kw) -> Tensor:
        if step[0] in at:
            out.setdefault(step[0], []).append(G.detach().float().clone())
        return real(G, **kw)

    for m, attr in users:
        setattr(m, attr, spy)
    try:
        for step[0], (x, y) in zip(range(1, steps + 1), w.stream()):
            opt.zero_grad(set_to_none=True)
            w.loss_fn(model(x), y).backward()
            opt.step()
    finally:
        for m, attr in users:
            setattr(m, attr, real)
    return out
