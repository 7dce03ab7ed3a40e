"""A model the race lacks, trained as a user would: Hugging Face ``LlamaForCausalLM``
(``--layers`` x 128, 2 layers by default, 4 heads), char-level tinyshakespeare (context 64,
batch 12), ``hyperfree.AGD(model)`` with no declaration, against AdamW (5% warmup, cosine
decay, weight decay 0.1, clipping at 1).

Variants: ``agd`` (the default preset, its forks and streams read from the first forward),
``agd-nostreams`` (the same preset without the streams' step scale, §16), ``agd-noforks``
(without forks or streams, ``docs/agd-stability.md`` §10) and ``adamw-LR``. The test
loss (nats, the whole test split; AGD evaluated at its averaged weights, ``opt.eval()``) as
mean ± std over the seeds, one run per line as it finishes. ``--param-gain PATTERN=G`` gives
the AGD variants' matching parameters G times the step (a diagnostic, not a rule); ``--save
DIR`` keeps each run's evaluated weights (``benchmarks/stream_shares.py --llama`` reads them).
AGD starts from its own initialisation (``opt.init_weights()``) unless ``--model-init`` keeps
the model's (std 0.02); ``--init-norm step|both`` reads σ from the weights at the first step
(``docs/agd-stability.md`` §18; a probe); ``--linefit`` prints how each step's batch answers
it (§19, ``benchmarks/_linefit.py``; training unchanged).

    python benchmarks/hf_llama.py --data tinyshakespeare.txt [--steps 600] [--seeds 3] [--layers 2]
        [--variants agd,agd-noforks,adamw-0.001,adamw-0.003] [--threads 1] [--save DIR]
        [--param-gain 'PATTERN=G' ...] [--model-init] [--init-norm step|both] [--linefit]

Needs ``transformers`` (``pip install transformers``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

import hyperfree
from hyperfree.data import load_dataset
from hyperfree.optim import DEFAULT_PRESET, PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _hf_runs import adamw_warmup_cosine, print_summary, run_variants  # noqa: E402
from _gains import init_norm_on_first_step, param_gain_groups  # noqa: E402
from _linefit import LineFit  # noqa: E402
from _probe_args import add_probe_arguments, check_probe_arguments  # noqa: E402

BATCH, CONTEXT = 12, 64


class Options(NamedTuple):
    """What a run changes besides its variant (the command line's options of the same names;
    the defaults: AGD from its own initialisation, no probe, nothing saved)."""
    save: str | None = None
    param_gain: tuple[tuple[str, float], ...] = ()
    model_init: bool = False
    init_norm: str | None = None
    linefit: bool = False


def _optimiser(model: torch.nn.Module, variant: str, steps: int, seed: int,
               o: Options = Options()):
    """(optimiser, scheduler or None, clip) for ``variant``."""
    if variant.startswith("adamw-"):
        opt, sched = adamw_warmup_cosine(model.parameters(), float(variant[6:]), 0.1, steps)
        return opt, sched, 1.0
    if variant not in ("agd", "agd-nostreams", "agd-noforks"):
        raise ValueError(f"variant {variant!r} is not agd, agd-nostreams, agd-noforks or "
                         "adamw-LR")
    preset = PRESETS[DEFAULT_PRESET]
    if variant == "agd-nostreams":
        preset = dataclasses.replace(preset, name="nostreams", streams=False)
    if variant == "agd-noforks":
        preset = dataclasses.replace(preset, name="noforks", forks=False, streams=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params: Any = param_gain_groups(model, o.param_gain) if o.param_gain else model
        if o.init_norm:
            params = [{"params": [p]} for p in model.parameters() if p.requires_grad]
        opt = hyperfree.AGD(params, model=model, preset=preset)
        if not o.model_init:
            opt.init_weights(torch.Generator().manual_seed(seed))
    if o.init_norm:
        init_norm_on_first_step(opt, o.init_norm)
    return opt, None, 0.0


def build(vocab: int, layers: int) -> torch.nn.Module:
    """The benchmark's ``LlamaForCausalLM``: ``layers`` x 128, 4 heads, context 64."""
    import transformers

    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=128, intermediate_size=344, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=CONTEXT))


def run(data, variant: str, steps: int, seed: int, layers: int = 2,
        o: Options = Options()) -> float:
    """The test loss of one run; with ``o.save``, the weights it was evaluated at (AGD's
    average) go to that file (``torch.save`` of the state_dict); with ``o.linefit``, prints
    ``benchmarks/_linefit.py``'s medians per quarter."""
    torch.manual_seed(seed)
    model = build(data.info.num_classes, layers)
    opt, sched, clip = _optimiser(model, variant, steps, seed, o)
    loader = data.train_loader(BATCH, seed=seed)
    step, epoch = 0, 0
    fit = LineFit(list(model.parameters()), model) if o.linefit else None
    model.train()
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if fit is not None:
                fit.before()
            opt.step()
            if fit is not None:
                with torch.no_grad():
                    fit.after(float(loss.detach()), lambda: F.cross_entropy(
                        model(input_ids=x).logits.flatten(0, 1), y.flatten()))
            if sched is not None:
                sched.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    if fit is not None:
        print(f"{variant} seed {seed} linefit (rho, s*, coherence; medians per quarter): "
              f"{fit.quarters()}", flush=True)
    if isinstance(opt, hyperfree.AGD):
        opt.eval()
    model.eval()
    if o.save is not None:
        torch.save(model.state_dict(), o.save)
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in data.test_loader(256):
            logits = model(input_ids=x).logits
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            n += y.numel()
    return total / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", default="agd,agd-noforks,adamw-0.001,adamw-0.003")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default=None, metavar="DIR", help="save each run's evaluated "
                    "weights to DIR/VARIANT-SEED.pt (benchmarks/stream_shares.py reads them)")
    ap.add_argument("--model-init", action="store_true", help="AGD variants: keep the "
                    "model's own initialisation (default: AGD's, opt.init_weights())")
    add_probe_arguments(ap, ("param-gain", "init-norm", "linefit"))
    args = ap.parse_args()
    check_probe_arguments(ap, args)
    if args.save is not None:
        Path(args.save).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    data = load_dataset("tinyshakespeare", data_dir=args.data, seq_len=CONTEXT)
    print(f"# HF Llama {args.layers}x128, {args.steps} steps, batch {BATCH}, context {CONTEXT}, "
          f"torch {torch.__version__}, {args.threads} thread(s); test loss in nats")
    def run_one(variant: str, seed: int) -> tuple[float, None]:
        save = None if args.save is None else str(Path(args.save) / f"{variant}-{seed}.pt")
        return run(data, variant, args.steps, seed, args.layers, Options(
            save, tuple(args.param_gain), args.model_init, args.init_norm, args.linefit)), None

    results = run_variants(args.variants.split(","), range(args.seeds), run_one,
                           lambda loss: f"{loss:.4f}")
    print_summary(results, lambda m, s: f"{m:.3f} ± {s:.3f}")


if __name__ == "__main__":
    main()
