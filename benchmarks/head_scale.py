"""The output layer's scale where training starts, on the char-level models the benchmarks train.

Usage:
    python benchmarks/head_scale.py [--models lstm,gru,gpt,llama,rwkv,mamba] [--vocab 65]
        [--seed 0]

For each model, at the initialisation its benchmark trains AGD from (AGD's, ``opt.init_weights()``,
for the race's LSTM and GPT, ``torch_text.py``'s GRU and ``hf_llama.py``'s Llama; the model's
own for ``hf_forks.py``'s RWKV and Mamba, as a user's ``AGD(model)`` keeps it), one forward of
a seeded batch of random tokens (8 windows of 64), and prints the head's

* ``in_rms``: the RMS of its input (the last hidden state),
* ``logit_rms``: the RMS of its output (the logits),
* ``op``: its operator norm, and ``sigma``: AGD's target for it, ``√(d_out/d_in)``.

``docs/agd-stability.md`` §24: the race's LSTM, whose head alone wants a longer step, starts
with logits 18× smaller than the GPT's (its hidden state ``o ⊙ tanh(c)`` starts near 0).
Seconds on a CPU; the Hugging Face models need ``transformers``.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hyperfree  # noqa: E402
from hyperfree.experiments.race import _SMALL_CONV, race_specs  # noqa: E402
from hyperfree.models import MODEL_FLAGS, create_model  # noqa: E402

MODELS = ("lstm", "gru", "gpt", "llama", "rwkv", "mamba")


def _race(panel: str) -> Callable[[int], nn.Module]:
    """The race's model of workload ``panel``, its flags read from the race's own specs."""
    spec = next(s.overrides for s in race_specs(2, _SMALL_CONV, 500, 1000) if s.panel == panel)
    flags = {k: spec[k] for k in MODEL_FLAGS if k in spec}
    return lambda vocab: create_model(spec["arch"], in_channels=1, num_classes=vocab,
                                      image_size=64, **flags)


#: name -> (builder of the benchmark's model for a vocabulary, its head's attribute path,
#: whether its benchmark starts AGD from AGD's initialisation)
SPECS: dict[str, tuple[Callable[[int], nn.Module], str, bool]] = {
    "lstm": (_race("lstm"), "head", True),
    "gru": (lambda vocab: import_module("torch_text").build("gru", vocab), "head", True),
    "gpt": (_race("gpt"), "head", True),
    "llama": (lambda vocab: import_module("hf_llama").build(vocab, 2), "lm_head", True),
    "rwkv": (lambda vocab: import_module("hf_forks").build("rwkv", 6, vocab), "head", False),
    "mamba": (lambda vocab: import_module("hf_forks").build("mamba", 2, vocab), "lm_head",
              False),
}


@torch.no_grad()
def head_scale(model: nn.Module, head: nn.Module, tokens: torch.Tensor) -> dict[str, float]:
    """The RMS of ``head``'s input and output in one forward of ``model`` on ``tokens``, its
    operator norm and ``√(d_out/d_in)`` (``head`` a linear map, weight ``(d_out, d_in)``)."""
    seen: dict[str, torch.Tensor] = {}
    hook = head.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))
    try:
        model(tokens)
    finally:
        hook.remove()
    if "x" not in seen:
        raise ValueError(f"the head {type(head).__name__} was not called by the model's forward")
    w = head.weight.detach()
    rms = lambda t: float(t.detach().double().pow(2).mean().sqrt())  # noqa: E731
    return {"in_rms": rms(seen["x"]), "logit_rms": rms(seen["y"]),
            "op": float(torch.linalg.matrix_norm(w.double(), 2)),
            "sigma": (w.shape[0] / w.shape[1]) ** 0.5}


def measure(name: str, vocab: int = 65, seed: int = 0) -> dict[str, float]:
    """:func:`head_scale` of model ``name`` (one of :data:`MODELS`) as its benchmark starts."""
    if name not in SPECS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    build, head_path, agd_init = SPECS[name]
    torch.manual_seed(seed)
    model = build(vocab)
    if agd_init:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the kinds note of models read from the forward
            hyperfree.AGD(model).init_weights(torch.Generator().manual_seed(seed))
    tokens = torch.randint(0, vocab, (8, 64), generator=torch.Generator().manual_seed(seed))
    return head_scale(model, model.get_submodule(head_path), tokens)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated, from {', '.join(MODELS)} (default: all)")
    ap.add_argument("--vocab", type=int, default=65, help="vocabulary (tinyshakespeare's 65)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in args.models if m not in SPECS]
    if bad or not args.models:
        ap.error(f"--models {','.join(bad) or '(empty)'}: choose from {', '.join(MODELS)}")
    if args.vocab < 2:
        ap.error(f"--vocab {args.vocab}: at least 2")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"{'model':8s} {'in_rms':>8s} {'logit_rms':>10s} {'op':>7s} {'sigma':>7s}")
    for name in args.models:
        r = measure(name, args.vocab, args.seed)
        print(f"{name:8s} {r['in_rms']:8.3f} {r['logit_rms']:10.3f} {r['op']:7.3f} "
              f"{r['sigma']:7.3f}", flush=True)


if __name__ == "__main__":
    main()
