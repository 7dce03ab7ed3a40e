"""How much of a branch's relative change reaches the end of its residual stream, measured: the
premise of ``docs/agd-stability.md`` §16 (a branch of a stream of T terms passes on 1/√T of its
relative change), branch by branch, on the registry's pre-norm GPT or a Hugging Face Llama.

For each branch ``j`` (every block's attention and MLP) the script moves the branch's last
matrix ``W_j`` (``attn.out_proj``, ``mlp.2``) by a small relative step ``ε‖W_j‖·D/‖D‖`` and
measures, over one batch,

* ``share = (‖Δs‖/‖s‖) / (‖Δb_j‖/‖b_j‖)``: the relative change of the stream's end ``s`` (the
  final LayerNorm's input) per unit relative change of the branch's output ``b_j``;
* ``alone = ‖b_j‖/‖s‖``: the share if no later branch answered the change (``Δs = Δb_j``);

against ``1/√T`` (T = 2·depth + 1, the embedding and every branch) and §10's local ``1/√2``.
``D`` is the loss's gradient (the direction a step takes; ``--direction grad``) or a Gaussian
(``random``). The model is AGD's initialisation, or a run's ``checkpoint.pt`` (``--checkpoint``,
e.g. from ``hyperfree train --arch gpt --out DIR``; its architecture is read from the run's
``config.json``), or a Hugging Face Llama saved by ``benchmarks/hf_llama.py --save DIR``
(``--llama DIR/VARIANT-SEED.pt``: its branches are ``self_attn.o_proj`` and
``mlp.down_proj``, its stream's end the input of ``model.norm``).

    python benchmarks/stream_shares.py --data tinyshakespeare.txt [--depth 8]
        [--checkpoint RUN_DIR | --llama PT] [--direction grad|random] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hyperfree
from hyperfree.data.text import read_text_splits
from hyperfree.models import create_model
from hyperfree.train.transfer import load_initial_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))

__all__ = ["branch_shares"]


def _branches(model: nn.Module) -> tuple[nn.Module, list[tuple[str, nn.Module, torch.Tensor]]]:
    """The final norm (its input: the stream's end) and, per branch, (name, the module whose
    output is the branch, the branch's last matrix): the registry's GPT or a Hugging Face
    Llama (``benchmarks/hf_llama.py``)."""
    if hasattr(model, "blocks"):  # hyperfree.models.gpt
        return model.ln_f, [b for j, block in enumerate(model.blocks) for b in (
            (f"{j}.attn", block.attn, block.attn.out_proj.weight),
            (f"{j}.mlp", block.mlp, block.mlp[2].weight))]
    inner = model.model  # LlamaForCausalLM
    return inner.norm, [b for j, layer in enumerate(inner.layers) for b in (
        (f"{j}.attn", layer.self_attn, layer.self_attn.o_proj.weight),
        (f"{j}.mlp", layer.mlp, layer.mlp.down_proj.weight))]


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x) if hasattr(model, "blocks") else model(input_ids=x)
    return out if isinstance(out, torch.Tensor) else out.logits


def branch_shares(model: nn.Module, tokens: torch.Tensor, eps: float = 1e-3,
                  direction: str = "grad", seed: int = 0) -> list[dict[str, Any]]:
    """One row per branch: its ``share`` and ``alone`` (module docstring)."""
    if direction not in ("grad", "random"):
        raise ValueError(f"direction {direction!r} is not 'grad' or 'random'")
    seen: dict[str, torch.Tensor] = {}
    end, branches = _branches(model)
    hooks = [end.register_forward_pre_hook(lambda m, a: seen.__setitem__("s", a[0]))]
    for name, module, _ in branches:
        hooks.append(module.register_forward_hook(
            lambda m, a, out, name=name: seen.__setitem__(
                name, out[0] if isinstance(out, tuple) else out)))
    try:
        x, y = tokens[:, :-1], tokens[:, 1:]
        model.zero_grad()
        logits = _logits(model, x)
        nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        base = {k: v.detach().clone() for k, v in seen.items()}
        gen = torch.Generator().manual_seed(seed)
        rows = []
        for name, _, w in branches:
            d = (w.grad if direction == "grad" else
                 torch.randn(w.shape, generator=gen, dtype=w.dtype))
            step = eps * w.norm() * d / d.norm()
            with torch.no_grad():
                kept = w.detach().clone()
                w.add_(step)
                _logits(model, x)
                w.copy_(kept)
            s0, b0 = base["s"], base[name]
            rel_s = float((seen["s"] - s0).norm() / s0.norm())
            rel_b = float((seen[name] - b0).norm() / b0.norm())
            rows.append({"branch": name, "share": rel_s / rel_b,
                         "alone": float(b0.norm() / s0.norm())})
        return rows
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad()


def _model(args: argparse.Namespace, vocab: int) -> tuple[nn.Module, int]:
    if args.llama is not None:  # hf_llama.py --save: its model, the layers from the weights
        from hf_llama import build

        state = torch.load(args.llama, map_location="cpu", weights_only=True)
        layers = len({k.split(".")[2] for k in state if k.startswith("model.layers.")})
        model = build(vocab, layers)
        model.load_state_dict(state)
        return model, layers
    if args.checkpoint is None:
        torch.manual_seed(args.seed)
        model = create_model("gpt", in_channels=1, num_classes=vocab, image_size=64,
                             depth=args.depth, width=128, heads=4, seq_len=64)
        hyperfree.optim.init_weights(model, generator=torch.Generator().manual_seed(args.seed))
        return model, args.depth
    run = Path(args.checkpoint)
    cfg = json.loads((run / "config.json").read_text())["config"]
    model = create_model("gpt", in_channels=1, num_classes=vocab, image_size=cfg["seq_len"],
                         depth=cfg["depth"], width=cfg["width"], heads=cfg["heads"],
                         seq_len=cfg["seq_len"])
    load_initial_weights(model, str(run))
    return model, cfg["depth"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--depth", type=int, default=4, help="blocks, at AGD's initialisation")
    ap.add_argument("--checkpoint", default=None, help="a run directory of hyperfree train")
    ap.add_argument("--llama", default=None, metavar="PT",
                    help="a Hugging Face Llama's weights saved by hf_llama.py --save")
    ap.add_argument("--direction", choices=("grad", "random"), default="grad")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    vocab, _, data = read_text_splits(Path(args.data), seq_len=64)  # the harness's test split
    model, depth = _model(args, len(vocab))
    model.train()
    gen = torch.Generator().manual_seed(args.seed)
    i = torch.randint(0, len(data) - 65, (args.batch,), generator=gen)
    tokens = torch.stack([data[j:j + 65] for j in i.tolist()])
    rows = branch_shares(model, tokens, direction=args.direction, seed=args.seed)
    T = 2 * depth + 1
    for r in rows:
        print(f"{r['branch']:8s} share {r['share']:.3f}   alone {r['alone']:.3f}")
    print(f"# {depth} blocks (T = {T}), direction {args.direction}: share median "
          f"{statistics.median(r['share'] for r in rows):.3f} "
          f"(min {min(r['share'] for r in rows):.3f}, max {max(r['share'] for r in rows):.3f}); "
          f"alone median {statistics.median(r['alone'] for r in rows):.3f}; "
          f"1/sqrt(T) = {1 / math.sqrt(T):.3f}, 1/sqrt(2) = {1 / math.sqrt(2):.3f}")


if __name__ == "__main__":
    main()
