"""Vision models the race lacks, trained as a user would: a Hugging Face ViT (pre-norm
transformer on 4 x 4 patches, LayerNorm, a ``cls_token`` and a position table) and ConvNeXt
(depthwise 7 x 7 convolutions, LayerNorm, layer scale) on Fashion-MNIST with cross-entropy,
batch 128, ``hyperfree.AGD(model)`` with no declaration, against AdamW (5% warmup, cosine
decay, weight decay 0.05, no clipping: the DeiT / ConvNeXt recipes' settings).

Variants: ``agd`` (the default preset; evaluated at its averaged weights, ``opt.eval()``),
``agd@G`` (every tensor's step x G: a diagnostic, not a rule) and ``adamw-LR``. The test
accuracy (the whole test split) as mean ± std over the seeds, one run per line as it
finishes. AGD starts from its own initialisation (``opt.init_weights()``: the matrices and
convolutions on their kinds' targets, the tables, scales and tokens the model's own) unless
``--model-init`` keeps the model's (truncated normal, std 0.02).

    python benchmarks/hf_vision.py --model vit|convnext [--epochs 2] [--seeds 3]
        [--variants agd,adamw-0.001,adamw-0.003] [--threads 1] [--model-init]

Needs ``transformers`` (``pip install transformers``); the data is the vendored Fashion-MNIST.
"""
from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

import hyperfree
from hyperfree.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hf_runs import adamw_warmup_cosine, print_summary, run_variants  # noqa: E402

BATCH = 128
MODELS = ("vit", "convnext")


def build(name: str, classes: int = 10, channels: int = 1, size: int = 28) -> torch.nn.Module:
    """The benchmark's models: ViT 4 layers x 64 (4 heads, patches 4 x 4: 49 tokens and the
    class token) and ConvNeXt with 3 stages of 2 blocks, widths 32 / 64 / 128 (stem 4 x 4,
    stride 4: 7 x 7, then 3 x 3 and 1 x 1)."""
    import transformers

    if name == "vit":
        return transformers.ViTForImageClassification(transformers.ViTConfig(
            image_size=size, patch_size=4, num_channels=channels, hidden_size=64,
            num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=classes))
    if name == "convnext":
        return transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
            num_channels=channels, patch_size=4, num_stages=3, hidden_sizes=[32, 64, 128],
            depths=[2, 2, 2], image_size=size, num_labels=classes))
    raise ValueError(f"--model {name!r} is not one of {', '.join(MODELS)}")


def _optimiser(model: torch.nn.Module, variant: str, steps: int, seed: int, model_init: bool):
    """(optimiser, scheduler or None) for ``variant``."""
    if variant.startswith("adamw-"):
        return adamw_warmup_cosine(model.parameters(), float(variant[6:]), 0.05, steps)
    name, _, gain = variant.partition("@")
    if name != "agd":
        raise ValueError(f"variant {variant!r} is not agd, agd@GAIN or adamw-LR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = hyperfree.AGD(model, gain=float(gain or 1.0))
        if not model_init:
            opt.init_weights(torch.Generator().manual_seed(seed))
    return opt, None


def run(data, name: str, variant: str, epochs: int, seed: int,
        model_init: bool = False) -> tuple[float, float]:
    """(test accuracy, final epoch's mean training loss) of one run."""
    torch.manual_seed(seed)
    model = build(name, data.info.num_classes, data.info.in_channels, data.info.image_size)
    loader = data.train_loader(BATCH, seed=seed)
    opt, sched = _optimiser(model, variant, epochs * len(loader), seed, model_init)
    model.train()
    train = 0.0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        total, n = 0.0, 0
        for x, y in loader:
            loss = F.cross_entropy(model(pixel_values=x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total, n = total + float(loss.detach()) * len(y), n + len(y)
        train = total / n
        if not math.isfinite(train):
            return float("nan"), train
    if isinstance(opt, hyperfree.AGD):
        opt.eval()
    model.eval()
    correct, n = 0, 0
    with torch.no_grad():
        for x, y in data.test_loader(512):
            correct += int((model(pixel_values=x).logits.argmax(-1) == y).sum())
            n += len(y)
    return correct / n, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=MODELS)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", default="agd,adamw-0.001,adamw-0.003")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model-init", action="store_true", help="AGD variants: keep the "
                    "model's own initialisation (default: AGD's, opt.init_weights())")
    args = ap.parse_args()
    if args.epochs < 1:
        ap.error(f"--epochs must be at least 1, got {args.epochs}")
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    print(f"# HF {args.model}, Fashion-MNIST, {args.epochs} epochs, batch {BATCH}, cross-entropy, "
          f"torch {torch.__version__}, {args.threads} thread(s); test accuracy (final train loss)")
    results = run_variants(
        args.variants.split(","), args.seeds,
        lambda variant, seed: run(data, args.model, variant, args.epochs, seed, args.model_init),
        lambda acc: f"{100 * acc:.2f}%")
    print_summary(results, lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}%")


if __name__ == "__main__":
    main()
