"""Models the race lacks, built from PyTorch's own modules as a user writes them: a char-level
language model on tinyshakespeare (context 64) trained by ``hyperfree.AGD(model)`` with nothing
declared, against AdamW as its users set it (5% warmup, cosine decay to 0, weight decay 0.1,
clipping at 1: the race's text settings).

Models (``--model``):

* ``gru``: ``Embedding(V, 256)`` → ``nn.GRU(256, 256, num_layers=2)`` → ``Linear(256, V)``,
  batch 32, 1,000 steps — the race's ``char_lstm`` with the other gated recurrent cell (three
  gates, the reset gate applied to ``W_hn h`` inside the candidate).
* ``postnorm``: ``Embedding(V, 128)`` + learned positions → ``nn.TransformerEncoder`` of 4
  ``nn.TransformerEncoderLayer(128, 4 heads, 512, dropout 0, norm_first=False)`` with a causal
  mask → ``Linear(128, V)``, batch 12, 500 steps — the race's GPT in size, in the layout
  PyTorch's layer takes by default: post-norm (``x ← LayerNorm(x + f(x))``), where every
  residual stream is normalised after each branch joins it.
* ``prenorm``: the same with ``norm_first=True`` and a final LayerNorm (the race's GPT's layout,
  in PyTorch's modules): the control.
* ``word``: the same text in words (``word_data``: ≈ 5,000 words seen 3 times in training, the
  rest ``<unk>``; context 32 words) → ``Embedding(V, 128)`` → ``nn.LSTM(128, 128,
  num_layers=2)`` → ``Linear(128, V)``, batch 32, 1,000 steps — an embedding most of whose
  rows no one batch reads (``docs/agd-stability.md`` §27).

Variants: ``agd`` (the default preset, from AGD's initialisation, ``opt.init_weights()``),
``agd-model-init`` (the default preset from the model's own initialisation, PyTorch's: AdamW's
start), either with ``@G`` (every tensor's step × G, AGD's ``gain=``: a diagnostic, not a rule)
and ``adamw-LR``. Prints the test loss (nats, the whole test split; AGD evaluated at its
averaged weights, ``opt.eval()``) and the mean training loss of the last 10% of the steps of
each run as it finishes, then the test loss's mean ± std over the seeds; ``--curve N`` also
prints, every N steps, the training and test loss, AGD's η and every matrix's norm over its
start (the evaluation at the average leaves the run unchanged). ``--preset NAME`` runs the AGD
variants with another preset of ``hyperfree.optim.PRESETS`` (default: the default);
``--param-gain PATTERN=G`` gives the AGD variants' parameters whose name matches G times the
step (``docs/agd-stability.md`` §22's localisation; a diagnostic, not a rule); ``--linefit``
reads how each step's batch answers the step (``benchmarks/_linefit.py``, §19 and §23; the
training is unchanged); ``--calibrate`` prints each run's test loss at the loss-optimal
temperature (``benchmarks/calibration.py``'s reading, §27).

    python benchmarks/torch_text.py --data tinyshakespeare.txt --model gru|postnorm|prenorm|word
        [--steps N] [--seeds 3] [--variants agd,agd@2,agd-model-init,adamw-0.003] [--threads 1]
        [--curve N] [--preset NAME] [--param-gain 'rnn.weight_hh*=0.5' ...] [--linefit]
        [--calibrate]
"""
from __future__ import annotations

import argparse
import collections
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import hyperfree
from hyperfree.data import DataBundle, DatasetInfo, load_dataset
from hyperfree.data.text import windows
from hyperfree.optim import DEFAULT_PRESET, PRESETS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gains import param_gain_groups  # noqa: E402
from _hf_runs import adamw_warmup_cosine, print_summary, run_variants  # noqa: E402
from _linefit import LineFit  # noqa: E402
from _probe_args import add_probe_arguments  # noqa: E402
from calibration import TEMPERATURES, Tempered  # noqa: E402

CONTEXT = 64
#: model -> (batch, steps): the race's LSTM and GPT settings; the word model's own
SETTINGS = {"gru": (32, 1000), "postnorm": (12, 500), "prenorm": (12, 500), "word": (32, 1000)}
#: the word model: its context in words, and a word's least count in the training split
WORD_CONTEXT, WORD_MIN_COUNT = 32, 3
_WORD = re.compile(r"[A-Za-z']+|[^\sA-Za-z']")  # a word, or one punctuation mark


def word_data(path: str | Path) -> DataBundle:
    """The same text in words (``_WORD``; the first 90% of its characters train, the rest
    test, as the character split): the words seen ``WORD_MIN_COUNT`` times in training, and
    ``<unk>`` for the others, in windows of ``WORD_CONTEXT``."""
    text = Path(path).read_text(encoding="utf-8")
    cut = int(0.9 * len(text))
    train, test = _WORD.findall(text[:cut]), _WORD.findall(text[cut:])
    counts = collections.Counter(train)
    vocab = ["<unk>"] + sorted(w for w, c in counts.items() if c >= WORD_MIN_COUNT)
    index = {w: i for i, w in enumerate(vocab)}
    ids = [torch.tensor([index.get(w, 0) for w in ws]) for ws in (train, test)]
    (tx, ty), (vx, vy) = (windows(t, WORD_CONTEXT) for t in ids)
    info = DatasetInfo("tinyshakespeare-words", "text", len(vocab), 0, 0, None, None, False,
                       vocab)
    return DataBundle(info, tx, ty, vx, vy, train_stream=ids[0])


class Recurrent(nn.Module):
    """Embedding → 2-layer recurrent ``cell`` → Linear head: ``gru`` (the race's ``char_lstm``
    with a GRU, width 256) and ``word`` (an LSTM of 128 over thousands of words: most of its
    embedding's rows absent from any one batch, where a character model's every row is in
    nearly every batch)."""

    def __init__(self, vocab: int, cell: type[nn.Module] = nn.GRU, width: int = 256,
                 depth: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.rnn = cell(width, width, num_layers=depth, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        h, _ = self.rnn(self.embed(tokens))
        return self.head(h)


class CharTransformer(nn.Module):
    """Token and position embeddings → ``nn.TransformerEncoder`` (causal) → Linear head."""

    def __init__(self, vocab: int, norm_first: bool, width: int = 128, depth: int = 4,
                 heads: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(CONTEXT, width)
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False,
                                            norm=nn.LayerNorm(width) if norm_first else None)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos(torch.arange(t, device=tokens.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=tokens.device)
        return self.head(self.blocks(x, mask=mask, is_causal=True))


def build(model: str, vocab: int) -> nn.Module:
    if model == "gru":
        return Recurrent(vocab)
    if model == "word":
        return Recurrent(vocab, nn.LSTM, width=128)
    if model in ("postnorm", "prenorm"):
        return CharTransformer(vocab, norm_first=model == "prenorm")
    raise ValueError(f"--model {model!r} is not one of {', '.join(SETTINGS)}")


def parse_variant(variant: str) -> tuple[str, float]:
    """``(name, value)``: ``("adamw", lr)``, or ``("agd" | "agd-model-init", gain)``."""
    if variant.startswith("adamw-"):
        try:
            return "adamw", float(variant[6:])
        except ValueError:
            raise ValueError(f"variant {variant!r} has no learning rate after 'adamw-' "
                             "(adamw-0.003)") from None
    name, at, gain = variant.partition("@")
    if name not in ("agd", "agd-model-init"):
        raise ValueError(f"variant {variant!r} is not agd, agd-model-init (either with @GAIN) "
                         "or adamw-LR")
    try:
        value = float(gain) if at else 1.0
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"variant {variant!r}: the gain after '@' must be a positive number "
                         "(agd@2)")
    return name, value


def _optimiser(model: nn.Module, variant: str, steps: int, seed: int,
               preset: str = DEFAULT_PRESET, param_gain: Sequence[tuple[str, float]] = ()):
    """(optimiser, scheduler or None, clip) for ``variant``; AGD with ``preset``, and the
    parameters ``param_gain`` matches at their own gain (``_gains.param_gain_groups``)."""
    name, value = parse_variant(variant)
    if name == "adamw":
        opt, sched = adamw_warmup_cosine(model.parameters(), value, 0.1, steps)
        return opt, sched, 1.0
    params = param_gain_groups(model, param_gain) if param_gain else model
    opt = hyperfree.AGD(params, model=model, preset=preset, gain=value)
    if name == "agd":
        opt.init_weights(torch.Generator().manual_seed(seed))
    return opt, None, 0.0


def test_loss(model: nn.Module, data, opt=None, tempered: Tempered | None = None) -> float:
    """The test loss (nats, the whole test split), AGD at its averaged weights (``opt.eval()``;
    back to the iterate after, when the model was training); ``tempered`` also scores the same
    logits at its temperatures."""
    training = model.training
    if isinstance(opt, hyperfree.AGD):
        opt.eval()
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in data.test_loader(256):
            logits = model(x)
            total += float(F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
            n += y.numel()
            if tempered is not None:
                tempered.add(logits, y)
    if training:
        model.train()
        if isinstance(opt, hyperfree.AGD):
            opt.train()
    return total / n


def temperature_line(loss: float, tempered: Tempered) -> str:
    """``loss`` (at T = 1) against the loss-optimal temperature's (``benchmarks/calibration.py``'s
    reading: an oracle on the test split, a diagnosis)."""
    best, best_loss = tempered.best()
    return (f"  temperature: loss(1) {loss:.4f}, T* {best:.3f}, loss(T*) {best_loss:.4f}, "
            f"the scale costs {loss - best_loss:.4f}")


def run(data, model_name: str, variant: str, steps: int, seed: int,
        curve: int | None = None, preset: str = DEFAULT_PRESET,
        param_gain: Sequence[tuple[str, float]] = (), linefit: bool = False,
        calibrate: bool = False) -> tuple[float, float]:
    """(test loss, mean training loss of the last 10% of the steps) of one run, in nats. With
    ``curve``, every ``curve`` steps prints the mean training loss since the last line, the
    test loss, AGD's η and each matrix's Frobenius norm over its norm at the start. With
    ``linefit``, how each step's batch answers the step (``benchmarks/_linefit.py``: the median
    ρ and s* since the last curve line, and the medians per quarter at the end)."""
    torch.manual_seed(seed)
    model = build(model_name, data.info.num_classes)
    opt, sched, clip = _optimiser(model, variant, steps, seed, preset, param_gain)
    start = {n: float(p.detach().norm()) for n, p in model.named_parameters() if p.dim() > 1}
    batch = SETTINGS[model_name][0]
    loader = data.train_loader(batch, seed=seed)
    step, epoch, tail, since = 0, 0, [], []
    fit = LineFit(list(model.parameters()), model) if linefit else None
    mark = 0  # fit's readings before the last curve line (a step may give none)
    model.train()
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
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
                        model(x).flatten(0, 1), y.flatten()))
            if sched is not None:
                sched.step()
            step += 1
            since.append(float(loss.detach()))
            if step > steps - max(1, steps // 10):
                tail.append(since[-1])
            if curve and (step % curve == 0 or step == steps):
                eta = f" eta {float(opt.eta):.4f}" if isinstance(opt, hyperfree.AGD) else ""
                norms = " ".join(f"{n}={float(p.detach().norm()) / start[n]:.2f}"
                                 for n, p in model.named_parameters() if n in start)
                line = "" if fit is None else (  # the readings since the last line
                    f" rho {statistics.median(fit.rho[mark:] or [math.nan]):.3f}"
                    f" s* {statistics.median(fit.scale[mark:] or [math.nan]):.2f}")
                mark = len(fit.rho) if fit is not None else 0
                print(f"  step {step}: train {sum(since) / len(since):.4f} test "
                      f"{test_loss(model, data, opt):.4f}{eta}{line} norms/start {norms}",
                      flush=True)
                since = []
            if step >= steps:
                break
        epoch += 1
    if fit is not None:
        print(f"  linefit (rho, s*, coherence; medians per quarter): {fit.quarters()}",
              flush=True)
    model.eval()
    tempered = Tempered(TEMPERATURES) if calibrate else None
    loss = test_loss(model, data, opt, tempered)
    if tempered is not None:
        print(temperature_line(loss, tempered), flush=True)
    return loss, sum(tail) / len(tail)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="tinyshakespeare.txt")
    ap.add_argument("--model", required=True, choices=sorted(SETTINGS))
    ap.add_argument("--steps", type=int, default=None,
                    help="default: 1,000 for gru, 500 for the transformers (the race's)")
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds (default: %(default)s)")
    ap.add_argument("--first-seed", type=int, default=0, metavar="K",
                    help="run the seeds K, K+1, ... (default: %(default)s)")
    ap.add_argument("--variants", default="agd,adamw-0.003,adamw-0.01")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--curve", type=int, default=None, metavar="N",
                    help="every N steps, print the training and test loss, AGD's eta and "
                         "each matrix's norm over its start")
    ap.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                    help="the AGD variants' preset (default: %(default)s, the default)")
    ap.add_argument("--calibrate", action="store_true",
                    help="also print each run's test loss at the loss-optimal temperature "
                         "(benchmarks/calibration.py's reading; docs/agd-stability.md §27)")
    add_probe_arguments(ap, ("param-gain", "linefit"))
    args = ap.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    if args.seeds < 1 or args.first_seed < 0:
        ap.error(f"--seeds must be at least 1 and --first-seed at least 0, got {args.seeds} "
                 f"and {args.first_seed}")
    if args.curve is not None and args.curve < 1:
        ap.error(f"--curve must be at least 1, got {args.curve}")
    variants = args.variants.split(",")
    for v in variants:  # refuse a bad variant before any run, not after the first
        try:
            parse_variant(v)
        except ValueError as e:
            ap.error(f"--variants: {e}")
    if args.param_gain:  # a pattern that matches nothing is refused before any run
        try:
            param_gain_groups(build(args.model, 2), args.param_gain)
        except ValueError as e:
            ap.error(str(e))
    torch.set_num_threads(args.threads)
    steps = args.steps or SETTINGS[args.model][1]
    data = word_data(args.data) if args.model == "word" else load_dataset(
        "tinyshakespeare", data_dir=args.data, seq_len=CONTEXT)
    print(f"# {args.model}, {steps} steps, batch {SETTINGS[args.model][0]}, context {CONTEXT}, "
          f"torch {torch.__version__}, {args.threads} thread(s); AGD preset {args.preset}"
          + "".join(f", {p}={g:g}" for p, g in args.param_gain) + "; test loss in nats",
          flush=True)
    results = run_variants(variants, range(args.first_seed, args.first_seed + args.seeds),
                           lambda variant, seed: run(data, args.model, variant, steps, seed,
                                                     args.curve, args.preset,
                                                     args.param_gain, args.linefit,
                                                     args.calibrate),
                           lambda loss: f"{loss:.4f}")
    print_summary(results, lambda m, s: f"{m:.3f} ± {s:.3f}")


if __name__ == "__main__":
    main()
