"""Forks read from the forward's paths against the lineage count they replaced, on the
Hugging Face families where the counts differ (and Mamba, whose ``A_log`` the reading of §17
changed), trained as a user would: ``hyperfree.AGD(model)`` with nothing declared, on the
model's own initialisation (``docs/agd-stability.md`` §15–§17).

* ``t5``: ``T5ForConditionalGeneration``, ``--layers`` decoder layers (6) and as many encoder
  layers (or ``--encoder-layers``), of width 64 (4 heads of 16, feed-forward 128, no
  dropout): a character-level continuation task on tinyshakespeare, 64 characters in and the
  next 64 out;
* ``rwkv``: ``RwkvForCausalLM``, ``--layers`` layers of width 64 (feed-forward 128):
  character-level language modelling, context 64;
* ``mamba``: ``MambaForCausalLM``, ``--layers`` layers of width 64 (state 16, expansion 2,
  convolution 4; the CPU's sequential scan): the same task as ``rwkv``.

Variants: ``streams`` (the default preset: forks from the paths and the streams' step scale,
``docs/agd-stability.md`` §16), ``paths`` (the library's forks — the join operands every path
of a parameter crosses — without the streams' scale: the default of §15), ``lineage`` (the
count before: one fork per join operand whose lineage holds the parameter and the other's
does not; the reader's sides re-counted so; no streams either), ``adamw-LR`` (betas (0.9,
0.95), weight decay 0.1, 5% warmup then cosine decay, clipping at 1). ``paths@G`` runs AGD
with ``gain=G`` and ``--param-gain PATTERN=G`` gives the matching parameters G times the
step (diagnostics, not rules); ``--agd-init`` starts AGD from ``opt.init_weights()``;
``--init-norm step|both`` and ``--participation ratio|capped`` are ``docs/agd-stability.md``
§18's probes (σ read from the given weights; G and L weighted by the tensors' terms). Batch
16 of random windows of the first 90% of the text; the test loss (nats) is the mean over 20
fixed batches of the last 10% (AGD at its averaged weights, ``opt.eval()``). One JSON line per
run as it finishes, then the mean ± std per variant.

    python benchmarks/hf_forks.py --data tinyshakespeare.txt --model t5|rwkv|mamba [--layers 6]
        [--encoder-layers N] [--steps 1000] [--seeds 0 1 2] [--variants streams,paths,adamw-0.01]
        [--threads 1] [--param-gain 'PATTERN=G' ...] [--agd-init] [--init-norm step|both]
        [--participation ratio|capped]

Needs ``transformers`` (``pip install transformers``).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

import hyperfree
from hyperfree.optim._paths import Paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gains import init_norm_on_first_step, param_gain_groups, pattern_gain  # noqa: E402
from _participation import Participation  # noqa: E402

T, B = 64, 16


@contextlib.contextmanager
def lineage_forks() -> Iterator[None]:
    """While active, readings count forks from lineages alone (the rule before paths): every
    join whose one operand's lineage holds the parameter and the other's does not."""
    paths_joins = Paths.fork_joins

    def fork_joins(self: Paths, n: int) -> tuple[list[list[int]], list[int | None]]:
        after = paths_joins(self, n)[1]
        return [[j for _, side, j in self._sides if p in side] for p in range(n)], after
    Paths.fork_joins = fork_joins  # type: ignore[method-assign]
    try:
        yield
    finally:
        Paths.fork_joins = paths_joins  # type: ignore[method-assign]


def build(model: str, layers: int, vocab: int,
          encoder_layers: int | None = None) -> torch.nn.Module:
    import transformers

    transformers.logging.set_verbosity_error()
    if model == "t5":
        return transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=vocab, d_model=64, d_kv=16, d_ff=128,
            num_layers=layers if encoder_layers is None else encoder_layers,
            num_decoder_layers=layers, num_heads=4,
            decoder_start_token_id=0, pad_token_id=0, dropout_rate=0.0))
    if model == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=vocab, hidden_size=64, state_size=16, num_hidden_layers=layers, expand=2,
            conv_kernel=4))
    return transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=layers, attention_hidden_size=64,
        intermediate_size=128, context_length=T))


def batch(model: str, src: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """B random windows: T characters in, and for T5 the next T as labels."""
    i = torch.randint(0, len(src) - 2 * T - 1, (B,), generator=gen)
    x = torch.stack([src[j:j + T] for j in i.tolist()])
    if model == "t5":
        return {"input_ids": x, "labels": torch.stack([src[j + T:j + 2 * T] for j in i.tolist()])}
    return {"input_ids": x, "labels": x}


def run(text: str, model_name: str, layers: int, variant: str, seed: int,
        steps: int, param_gain: Sequence[tuple[str, float]] = (),
        agd_init: bool = False, encoder_layers: int | None = None,
        participation: str | None = None, init_norm: str | None = None) -> dict[str, Any]:
    chars = sorted(set(text))  # id 0 is T5's pad and decoder start
    data = torch.tensor([chars.index(c) + 1 for c in text])
    cut = int(0.9 * len(data))
    train, test = data[:cut], data[cut:]
    torch.manual_seed(seed)
    m = build(model_name, layers, len(chars) + 1, encoder_layers)
    m.train()
    gen = torch.Generator().manual_seed(seed)
    sched, forks, probe = None, 0.0, None
    if variant.startswith("adamw-"):
        opt: Any = torch.optim.AdamW(m.parameters(), lr=float(variant[6:]), weight_decay=0.1,
                                     betas=(0.9, 0.95))
        warm = steps // 20
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5
                                                  * (1 + math.cos(math.pi * min(1.0, s / steps))))
    else:
        rule, _, gain = variant.partition("@")
        if rule not in ("streams", "paths", "lineage"):
            raise ValueError(f"variant {variant!r} is not streams[@G], paths[@G], lineage[@G] "
                             "or adamw-LR")
        preset = hyperfree.optim.PRESETS[hyperfree.optim.DEFAULT_PRESET]
        if rule != "streams":  # the forks alone (§10, §15): no stream scale
            preset = dataclasses.replace(preset, streams=False)
        example = batch(model_name, train, torch.Generator().manual_seed(99))
        with warnings.catch_warnings(), (lineage_forks() if rule == "lineage"
                                         else contextlib.nullcontext()):
            warnings.simplefilter("ignore")
            params: Any = param_gain_groups(m, param_gain) if param_gain else m
            if init_norm:
                params = [{"params": [p]} for p in m.parameters()]
            opt = hyperfree.AGD(params, model=m, example=example, gain=float(gain or 1.0),
                                preset=preset)
        if agd_init:
            opt.init_weights(torch.Generator().manual_seed(seed))
        forks = max(i.kind.forks for i in opt._infos.values())
        if init_norm:
            init_norm_on_first_step(opt, init_norm)
        probe = Participation(opt, participation).attach() if participation else None
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        opt.zero_grad()
        loss = m(**batch(model_name, train, gen)).loss
        loss.backward()
        if sched is not None:
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    m.eval()
    if isinstance(opt, hyperfree.AGD):
        opt.eval()
    with torch.no_grad():
        tgen = torch.Generator().manual_seed(1234)
        test_loss = sum(float(m(**batch(model_name, test, tgen)).loss) for _ in range(20)) / 20
    return {"model": model_name, "layers": layers, **(
        {"encoder_layers": encoder_layers} if encoder_layers is not None else {}),
        "variant": variant, "seed": seed,
            "steps": steps, "param_gain": None if sched is not None else (
                [f"{p}={g:g}" for p, g in param_gain] or None),
            "init": "agd" if agd_init and sched is None else "model",
            **({"init_norm": init_norm} if init_norm else {}),
            **({"participation": probe.quarters()} if probe else {}),
            "max_forks": forks, "train_last50": sum(losses[-50:]) / 50,
            "test_loss": test_loss, "finite": all(math.isfinite(v) for v in losses),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--model", choices=("t5", "rwkv", "mamba"), required=True)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--encoder-layers", type=int, default=None,
                    help="t5: encoder layers (default: --layers, which sets the decoder's)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", default="streams,paths,adamw-0.01")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--param-gain", type=pattern_gain, action="append", default=[],
                    metavar="PATTERN=G", help="AGD variants: G times the step for the "
                    "parameters whose name matches the fnmatch PATTERN (repeatable)")
    ap.add_argument("--participation", choices=("ratio", "capped"), default=None,
                    help="AGD variants: G and L weighted by the tensors' terms "
                    "(benchmarks/_participation.py; a probe)")
    ap.add_argument("--init-norm", choices=("step", "both"), default=None,
                    help="AGD variants: each matrix's step (both: and its term of G) x its "
                    "operator norm at the start over its sigma (a probe)")
    ap.add_argument("--agd-init", action="store_true", help="AGD variants: AGD's "
                    "initialisation (opt.init_weights()) instead of the model's own")
    args = ap.parse_args()
    if args.init_norm and args.param_gain:
        ap.error("--init-norm and --param-gain each set the parameters' gains; give one")
    torch.set_num_threads(args.threads)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    results: dict[str, list[float]] = {}
    for variant in args.variants.split(","):
        for seed in args.seeds:
            row = run(text, args.model, args.layers, variant, seed, args.steps,
                      args.param_gain, args.agd_init, args.encoder_layers,
                      args.participation, args.init_norm)
            results.setdefault(variant, []).append(row["test_loss"])
            print(json.dumps(row), flush=True)
    print(f"# {args.model} {args.layers} layers, {args.steps} steps, test loss (nats), "
          f"mean ± std over seeds {args.seeds}")
    for variant, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{variant:14s} {statistics.mean(values):.3f} ± {std:.3f}")


if __name__ == "__main__":
    main()
