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
§18's probes (σ read from the given weights; G and L weighted by the tensors' terms);
``--t5-change``, ``--hypergain KAPPA [--hypergain-reference average]`` and ``--linefit`` §19's
(T5 brought toward a Llama one part at a time; the step's hypergradient; the same batch's loss
after the step). Batch
16 of random windows of the first 90% of the text; the test loss (nats) is the mean over 20
fixed batches of the last 10% (AGD at its averaged weights, ``opt.eval()``). One JSON line per
run as it finishes, then the mean ± std per variant.

    python benchmarks/hf_forks.py --data tinyshakespeare.txt --model t5|rwkv|mamba [--layers 6]
        [--encoder-layers N] [--steps 1000] [--seeds 0 1 2] [--variants streams,paths,adamw-0.01]
        [--threads 1] [--param-gain 'PATTERN=G' ...] [--agd-init] [--init-norm step|both]
        [--participation ratio|capped] [--t5-change CHANGE,...] [--hypergain KAPPA
        [--hypergain-reference last|average]] [--linefit]

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
from typing import Any, Iterator, NamedTuple, Sequence

import torch

import hyperfree
from hyperfree.optim._paths import Paths

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gains import init_norm_on_first_step, param_gain_groups  # noqa: E402
from _hypergain import HyperGain  # noqa: E402
from _linefit import LineFit  # noqa: E402
from _participation import Participation  # noqa: E402
from _probe_args import add_probe_arguments, check_probe_arguments  # noqa: E402

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


T5_CHANGES = ("scaled-scores", "gated-gelu", "unscaled-head", "untied-head", "no-rel-bias",
              "no-cross")


def build(model: str, layers: int, vocab: int, encoder_layers: int | None = None,
          t5_changes: Sequence[str] = ()) -> torch.nn.Module:
    """The model; ``t5_changes`` (T5 only, a probe of what sets its blocks apart, §19) brings a
    T5 toward a Llama one part at a time: ``scaled-scores`` (q·k/√d_kv), ``gated-gelu`` (a
    gated feed-forward), ``unscaled-head`` (no d^-1/2 before the tied head), ``untied-head``
    (a head of its own, initialised as a copy of the embedding), ``no-rel-bias`` (the relative
    position bias zeroed and frozen), ``no-cross`` (the cross-attention's output zeroed and its
    four matrices frozen: the decoder a language model of the continuation alone)."""
    import transformers

    transformers.logging.set_verbosity_error()
    bad = sorted(set(t5_changes) - set(T5_CHANGES))
    if bad or (t5_changes and model != "t5"):
        raise ValueError(f"--t5-change {','.join(bad or t5_changes)}: not one of "
                         f"{', '.join(T5_CHANGES)} on --model t5")
    if model == "t5":
        m = transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=vocab, d_model=64, d_kv=16, d_ff=128,
            num_layers=layers if encoder_layers is None else encoder_layers,
            num_decoder_layers=layers, num_heads=4,
            feed_forward_proj="gated-gelu" if "gated-gelu" in t5_changes else "relu",
            decoder_start_token_id=0, pad_token_id=0, dropout_rate=0.0))
        if "unscaled-head" in t5_changes:
            m.config.scale_decoder_outputs = False
        if "untied-head" in t5_changes:
            m.lm_head.weight = torch.nn.Parameter(m.shared.weight.detach().clone())
        for mod in m.modules():
            if isinstance(mod, transformers.models.t5.modeling_t5.T5Attention):
                if "scaled-scores" in t5_changes:
                    mod.scaling = mod.key_value_proj_dim ** -0.5
                if "no-rel-bias" in t5_changes and mod.has_relative_attention_bias:
                    torch.nn.init.zeros_(mod.relative_attention_bias.weight)
                    mod.relative_attention_bias.weight.requires_grad_(False)
        if "no-cross" in t5_changes:
            for block in m.decoder.block:
                cross = block.layer[1].EncDecAttention
                torch.nn.init.zeros_(cross.o.weight)
                for lin in (cross.q, cross.k, cross.v, cross.o):
                    lin.weight.requires_grad_(False)
        return m
    if model == "mamba":
        return transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=vocab, hidden_size=64, state_size=16, num_hidden_layers=layers, expand=2,
            conv_kernel=4))
    return transformers.RwkvForCausalLM(transformers.RwkvConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=layers, attention_hidden_size=64,
        intermediate_size=128, context_length=T))


def char_splits(text: str) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(vocabulary size, train ids, test ids): each character its rank among the text's
    characters + 1 (id 0 is T5's pad and decoder start), the first 90% to train on."""
    ids = {c: i + 1 for i, c in enumerate(sorted(set(text)))}
    data = torch.tensor([ids[c] for c in text])
    cut = int(0.9 * len(data))
    return len(ids) + 1, data[:cut], data[cut:]


def batch(model: str, src: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """B random windows: T characters in, and for T5 the next T as labels."""
    i = torch.randint(0, len(src) - 2 * T - 1, (B,), generator=gen)
    x = torch.stack([src[j:j + T] for j in i.tolist()])
    if model == "t5":
        return {"input_ids": x, "labels": torch.stack([src[j + T:j + 2 * T] for j in i.tolist()])}
    return {"input_ids": x, "labels": x}


class Options(NamedTuple):
    """What a run changes besides its variant (the command line's options of the same names;
    the defaults: the model as configured, the default AGD, no probe)."""
    encoder_layers: int | None = None
    t5_changes: tuple[str, ...] = ()
    param_gain: tuple[tuple[str, float], ...] = ()
    agd_init: bool = False
    participation: str | None = None
    init_norm: str | None = None
    hypergain: float | None = None
    hypergain_reference: str = "last"
    linefit: bool = False
    save: str | None = None


def run(text: str, model_name: str, layers: int, variant: str, seed: int,
        steps: int, o: Options = Options()) -> dict[str, Any]:
    vocab, train, test = char_splits(text)
    torch.manual_seed(seed)
    m = build(model_name, layers, vocab, o.encoder_layers, o.t5_changes)
    m.train()
    gen = torch.Generator().manual_seed(seed)
    sched, forks, probe, hyper = None, 0.0, None, None
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
            params: Any = param_gain_groups(m, o.param_gain) if o.param_gain else m
            if o.init_norm:
                params = [{"params": [p]} for p in m.parameters() if p.requires_grad]
            opt = hyperfree.AGD(params, model=m, example=example, gain=float(gain or 1.0),
                                preset=preset)
        if o.agd_init:
            opt.init_weights(torch.Generator().manual_seed(seed))
        forks = max(i.kind.forks for i in opt._infos.values())
        if o.init_norm:
            init_norm_on_first_step(opt, o.init_norm)
        probe = Participation(opt, o.participation).attach() if o.participation else None
        hyper = (HyperGain(opt, o.hypergain, reference=o.hypergain_reference).attach()
                 if o.hypergain else None)
    fit = LineFit([p for p in m.parameters() if p.requires_grad], m) if o.linefit else None
    start, losses = time.perf_counter(), []
    for _ in range(steps):
        opt.zero_grad()
        b = batch(model_name, train, gen)
        loss = m(**b).loss
        loss.backward()
        if sched is not None:
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        if fit is not None:
            fit.before()
        opt.step()
        if fit is not None:
            with torch.no_grad():
                fit.after(float(loss.detach()), lambda: m(**b).loss)
        if sched is not None:
            sched.step()
        losses.append(float(loss.detach()))
    m.eval()
    if isinstance(opt, hyperfree.AGD):
        opt.eval()
    if o.save is not None:  # the weights evaluated (AGD's average); stream_shares.py --t5 reads
        Path(o.save).mkdir(parents=True, exist_ok=True)
        torch.save(m.state_dict(), Path(o.save) / f"{model_name}-{variant}-{seed}.pt")
    with torch.no_grad():
        tgen = torch.Generator().manual_seed(1234)
        test_loss = sum(float(m(**batch(model_name, test, tgen)).loss) for _ in range(20)) / 20
    probes = {"encoder_layers": o.encoder_layers, "t5_changes": list(o.t5_changes) or None,
              "init_norm": o.init_norm,
              "participation": probe.quarters() if probe else None,
              "hypergain": ([o.hypergain, o.hypergain_reference, *hyper.quarters()]
                            if hyper else None),
              "linefit": fit.quarters() if fit else None}
    return {"model": model_name, "layers": layers,
            **{k: v for k, v in probes.items() if v is not None},
            "variant": variant, "seed": seed, "steps": steps,
            "param_gain": None if sched is not None else (
                [f"{p}={g:g}" for p, g in o.param_gain] or None),
            "init": "agd" if o.agd_init and sched is None else "model",
            "max_forks": forks, "train_last50": sum(losses[-50:]) / max(1, len(losses[-50:])),
            "test_loss": test_loss, "finite": all(math.isfinite(v) for v in losses),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--model", choices=("t5", "rwkv", "mamba"), required=True)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--encoder-layers", type=int, default=None,
                    help="t5: encoder layers (default: --layers, which sets the decoder's)")
    ap.add_argument("--t5-change", default="", help="t5: comma-separated changes toward a "
                    f"Llama's blocks ({', '.join(T5_CHANGES)}; a probe)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", default="streams,paths,adamw-0.01")
    ap.add_argument("--threads", type=int, default=1)
    add_probe_arguments(ap)
    ap.add_argument("--save", default=None, metavar="DIR", help="save each run's evaluated "
                    "weights to DIR/MODEL-VARIANT-SEED.pt (stream_shares.py --t5 reads a T5's)")
    ap.add_argument("--agd-init", action="store_true", help="AGD variants: AGD's "
                    "initialisation (opt.init_weights()) instead of the model's own")
    args = ap.parse_args()
    check_probe_arguments(ap, args)
    torch.set_num_threads(args.threads)
    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    options = Options(
        args.encoder_layers, tuple(c for c in args.t5_change.split(",") if c),
        tuple(args.param_gain), args.agd_init, args.participation, args.init_norm,
        args.hypergain, args.hypergain_reference, args.linefit, args.save)
    results: dict[str, list[float]] = {}
    for variant in args.variants.split(","):
        for seed in args.seeds:
            row = run(text, args.model, args.layers, variant, seed, args.steps, options)
            results.setdefault(variant, []).append(row["test_loss"])
            print(json.dumps(row), flush=True)
    print(f"# {args.model} {args.layers} layers, {args.steps} steps, test loss (nats), "
          f"mean ± std over seeds {args.seeds}")
    for variant, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{variant:14s} {statistics.mean(values):.3f} ± {std:.3f}")


if __name__ == "__main__":
    main()
