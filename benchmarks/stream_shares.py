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
``mlp.down_proj``, its stream's end the input of ``model.norm``), or a T5 saved by
``benchmarks/hf_forks.py --model t5 --save DIR`` (``--t5 DIR/t5-VARIANT-SEED.pt``: its
decoder's stream, T = 3·layers + 1, branches ``SelfAttention.o``, ``EncDecAttention.o`` and
``DenseReluDense.wo``; the batch is its task's, 64 characters in and the next 64 out).

    python benchmarks/stream_shares.py --data tinyshakespeare.txt [--depth 8]
        [--checkpoint RUN_DIR | --llama PT | --t5 PT] [--direction grad|random] [--seed 0]
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
    output is the branch, the branch's last matrix): the registry's GPT, a Hugging Face
    Llama (``benchmarks/hf_llama.py``) or a T5's decoder (``benchmarks/hf_forks.py``)."""
    if hasattr(model, "decoder"):  # T5ForConditionalGeneration: the decoder's stream
        return model.decoder.final_layer_norm, [b for j, block in enumerate(
            model.decoder.block) for b in (
            (f"{j}.self", block.layer[0].SelfAttention, block.layer[0].SelfAttention.o.weight),
            (f"{j}.cross", block.layer[1].EncDecAttention,
             block.layer[1].EncDecAttention.o.weight),
            (f"{j}.ff", block.layer[-1].DenseReluDense, block.layer[-1].DenseReluDense.wo.weight))]
    if hasattr(model, "blocks"):  # hyperfree.models.gpt
        return model.ln_f, [b for j, block in enumerate(model.blocks) for b in (
            (f"{j}.attn", block.attn, block.attn.out_proj.weight),
            (f"{j}.mlp", block.mlp, block.mlp[2].weight))]
    inner = model.model  # LlamaForCausalLM
    return inner.norm, [b for j, layer in enumerate(inner.layers) for b in (
        (f"{j}.attn", layer.self_attn, layer.self_attn.o_proj.weight),
        (f"{j}.mlp", layer.mlp, layer.mlp.down_proj.weight))]


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The batch's loss: next-token cross-entropy; for a T5, the second half of each window
    predicted from the first (``hf_forks.py``'s task)."""
    if hasattr(model, "decoder"):
        half = tokens.shape[1] // 2
        return model(input_ids=tokens[:, :half].contiguous(),
                     labels=tokens[:, half:2 * half].contiguous()).loss
    x, y = tokens[:, :-1], tokens[:, 1:]
    out = model(x) if hasattr(model, "blocks") else model(input_ids=x)
    logits = out if isinstance(out, torch.Tensor) else out.logits
    return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


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
        model.zero_grad()
        _loss(model, tokens).backward()
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
                _loss(model, tokens)
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
    """The model and its stream's terms T."""
    if args.t5 is not None:  # hf_forks.py --save: the default T5, its depths from the weights
        from hf_forks import build as build_t5

        state = torch.load(args.t5, map_location="cpu", weights_only=True)
        count = {part: len({k.split(".")[2] for k in state if k.startswith(f"{part}.block.")})
                 for part in ("encoder", "decoder")}
        model = build_t5("t5", count["decoder"], state["shared.weight"].shape[0],
                         count["encoder"])
        model.load_state_dict(state)
        return model, 3 * count["decoder"] + 1
    if args.llama is not None:  # hf_llama.py --save: its model, the layers from the weights
        from hf_llama import build

        state = torch.load(args.llama, map_location="cpu", weights_only=True)
        layers = len({k.split(".")[2] for k in state if k.startswith("model.layers.")})
        model = build(vocab, layers)
        model.load_state_dict(state)
        return model, 2 * layers + 1
    if args.checkpoint is None:
        torch.manual_seed(args.seed)
        model = create_model("gpt", in_channels=1, num_classes=vocab, image_size=64,
                             depth=args.depth, width=128, heads=4, seq_len=64)
        hyperfree.optim.init_weights(model, generator=torch.Generator().manual_seed(args.seed))
        return model, 2 * args.depth + 1
    run = Path(args.checkpoint)
    cfg = json.loads((run / "config.json").read_text())["config"]
    model = create_model("gpt", in_channels=1, num_classes=vocab, image_size=cfg["seq_len"],
                         depth=cfg["depth"], width=cfg["width"], heads=cfg["heads"],
                         seq_len=cfg["seq_len"])
    load_initial_weights(model, str(run))
    return model, 2 * cfg["depth"] + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--depth", type=int, default=4, help="blocks, at AGD's initialisation")
    ap.add_argument("--checkpoint", default=None, help="a run directory of hyperfree train")
    ap.add_argument("--llama", default=None, metavar="PT",
                    help="a Hugging Face Llama's weights saved by hf_llama.py --save")
    ap.add_argument("--t5", default=None, metavar="PT", help="a T5's weights saved by "
                    "hf_forks.py --model t5 --save (the default T5; its decoder's stream)")
    ap.add_argument("--direction", choices=("grad", "random"), default="grad")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.t5 is not None:  # hf_forks.py's characters and test split, windows of 64 + 64
        from hf_forks import char_splits

        vocab, _, data = char_splits(Path(args.data).read_text(encoding="utf-8"))
        width = 128
    else:
        chars, _, data = read_text_splits(Path(args.data), seq_len=64)  # the harness's test split
        vocab, width = len(chars), 65
    model, T = _model(args, vocab)
    model.train()
    gen = torch.Generator().manual_seed(args.seed)
    i = torch.randint(0, len(data) - width, (args.batch,), generator=gen)
    tokens = torch.stack([data[j:j + width] for j in i.tolist()])
    rows = branch_shares(model, tokens, direction=args.direction, seed=args.seed)
    for r in rows:
        print(f"{r['branch']:8s} share {r['share']:.3f}   alone {r['alone']:.3f}")
    print(f"# {len(rows)} branches (T = {T}), direction {args.direction}: share median "
          f"{statistics.median(r['share'] for r in rows):.3f} "
          f"(min {min(r['share'] for r in rows):.3f}, max {max(r['share'] for r in rows):.3f}); "
          f"alone median {statistics.median(r['alone'] for r in rows):.3f}; "
          f"1/sqrt(T) = {1 / math.sqrt(T):.3f}, 1/sqrt(2) = {1 / math.sqrt(2):.3f}")


if __name__ == "__main__":
    main()
