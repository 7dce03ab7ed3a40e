"""Variants of the default AGD on the race's workloads: the probes of docs/agd-stability.md §11.

    python benchmarks/agd_variants.py WORKLOAD [--seeds 0 1 2] [--momentum B] [--interpolate B]
        [--momentum-over-run] [--gamma G] [--gain K] [--eval average|iterate]
        [--schedule constant|cosine|linear] [--steps N] [--retraction rotation|sphere|ball|none]
        [--estimate self|fading|damped]
        [--depth N] [--forks paths|none|stream-g] [--streams on|off] [--head on|off]
        [--rows every|lazy]
        [--init-norm step|both]
        [--participation ratio|capped] [--hypergain KAPPA [--hypergain-reference last|average]]
        [--linefit] [--data-dir tinyshakespeare=PATH]
        [--pretrain-from RUNS] [--out FILE.jsonl] [--threads 1]

WORKLOAD is a panel of the race's ``quick`` profile (fcn16, fcn32, conv, conv-long, gpt,
gpt-long, lstm, finetune), run with exactly the race's settings
(:func:`hyperfree.experiments.race.race_specs`). The optimiser is the default preset
(``DEFAULT_PRESET``, ``spectral-head``) with one or more pieces changed; with no option it IS
the default (β and γ are read from the preset):

* ``--momentum B``: the source's momentum β (0: the gradient itself, the ``spectral`` source);
  ``--momentum-over-run``: instead, ``m ← m + c (g − m)`` with the average's own weights
  ``c = (γ + 1)/(k + γ)`` (the gradients of the last ``1/(γ + 1)`` of the run);
* ``--interpolate B``: schedule-free interpolation (Defazio et al. 2024, "The Road Less
  Scheduled"): the gradient is taken at ``y = z + B (x − z)``, AGD steps ``z``, and ``x`` is the
  preset's polynomial-decay average of ``z`` (0: off, the default's ``y = z``);
* ``--gamma G``: the average's γ (0: the uniform average, Schedule-Free's own);
* ``--gain K``: the step's multiplier; ``--invariant-gain K`` (image workloads): the multiplier
  of the tensors measured scale-invariant (every output row's gradient orthogonal to it, the
  issue's ``⟨∇W, W⟩ ≈ 0``: the convs BatchNorm follows), the others keeping ``--gain``;
* ``--estimate self|fading|damped``: G self-estimated (``spectral-average``, the default
  before §22), held after its peak (``spectral-fading``'s, §22) or damped by the square of its
  rise (``spectral-damped``'s, §23);
* ``--retraction sphere|ball|none``: instead of the default's Rotation (a norm moves by the
  step's first-order term only), every block back on its initial sphere, or into its ball
  (``docs/agd-stability.md`` §5), or no retraction;
* ``--eval iterate``: evaluate at the trained weights instead of the average;
* ``--schedule cosine|linear``: what a known horizon adds: the step's multiplier (AGD's group
  ``lr``) decays to 0 over the run, as the learning-rate optimisers' ``--schedule`` does;
* ``--steps N`` (gpt, gpt-long, lstm): the run's length instead of the race's (the full
  profile's gpt-long is 8,000 steps); ``--depth N``: the model's depth instead of the race's
  (the GPT's blocks, the FCN's layers); ``--arch NAME``: another registered model on the
  panel's data and length (e.g. ``conv --arch resnet18``: the pre-activation ResNet-18, whose
  stages are streams of 3 terms);
* ``--forks none``: σ without §10's √2 per fork; ``--streams off``: the step without §16's
  stream scale (σ × √terms of the stream a tensor's branch joins; G keeps the forks' σ);
  ``--forks stream-g --streams off``: the stream scale in G and the step alike (§16's probe);
  ``--head off``: without the default's head scale (each head's step × 1/ρ, ρ its input's RMS
  measured on each step's forwards, §25): ``spectral-damped``, the default until §25;
  ``--rows lazy``: an embedding row steps only when the batch reads it (§27: ``spectral-lazy``);
* ``--init-norm step|both``: σ read from the weights AGD is given (each matrix's operator norm
  at the first step over its σ: 1 at AGD's initialisation, so only ``finetune`` changes), in
  the step or in G and the step; ``--participation ratio|capped``: G and L weighted by the
  tensors' terms of G (``benchmarks/_participation.py``) — §18's probes, not rules;
* ``--hypergain KAPPA``: the step × s, ``log s`` moved by the hypergradient cosine of the last
  step (``--hypergain-reference average``: of the offset from the average) against the next
  gradient (``benchmarks/_hypergain.py``); ``--linefit``: after each step the same batch
  evaluated again, ρ and the line minimum's scale s* in the JSON's ``linefit`` (medians per
  quarter; ``benchmarks/_linefit.py``) — §19's probes (``--linefit`` leaves training as it is).

``finetune`` starts from the race's AdamW pre-training on classes 0–4: ``--pretrain-from RUNS``
takes ``RUNS/finetune-pretrain-seedN`` of a race's run directory, otherwise the script trains
it first (as the race does, about 2 minutes on one CPU thread). Each run prints one JSON line
(appended to ``--out``) with the final test loss/accuracy and η's quantiles; at the end, the
mean ± std over the seeds.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

import hyperfree
from hyperfree.cli.experiment import parse_data_dirs
from hyperfree.data import get_dataset_info
from hyperfree.experiments._spec import DEFAULT_METRIC
from hyperfree.experiments.race import _SMALL_CONV, METRICS, race_specs
from hyperfree.experiments.runner import _data_dir
from hyperfree.optim import DEFAULT_PRESET, PRESETS, Kind, Preset
from hyperfree.optim.pieces import (Ball, Direction, Fading, Gradient, Momentum, PolyAverage,
                                    Rotation, SelfEstimate, Sphere)
from hyperfree.train import TrainConfig, train
from hyperfree.train.optimizers import AGDStepper, OptimArgs, register_optimizer
from hyperfree.train.schedules import SCHEDULES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gains import init_norm_on_first_step, param_gain_groups  # noqa: E402
from _invariance import invariant_parameters, invariant_sets  # noqa: E402
from _hypergain import HyperGain  # noqa: E402
from _linefit import LineFit  # noqa: E402
from _participation import Participation  # noqa: E402
from _probe_args import add_probe_arguments, check_probe_arguments  # noqa: E402

#: ``--retraction``: the default's Rotation, the init sphere or ball (§5), or none
RETRACTIONS = {"rotation": Rotation, "sphere": Sphere, "ball": Ball, "none": None}
#: ``--estimate``: spectral-average's self-estimate, spectral-fading's hold (§22) or
#: spectral-damped's damping (§23)
ESTIMATES = {"self": SelfEstimate(), "fading": Fading(0.99), "damped": Fading(0.99, power=2.0)}
PANELS = ("fcn16", "fcn32", "conv", "conv-long", "gpt", "gpt-long", "lstm", "finetune")


@dataclasses.dataclass(frozen=True)
class RunMomentum(Momentum):
    """``m ← m + c (g − m)``, ``c = (γ + 1)/(k + γ)`` for the k-th gradient (the first copies it):
    the gradients of the last ``1/(γ + 1)`` of the run, weighted as :class:`PolyAverage` weighs
    the iterates; no bias correction (eager CPU steps only)."""

    gamma: float = 8.0

    def absorb(self, state: Any, grads: list[torch.Tensor], finite: Any) -> None:
        if not isinstance(finite, bool):
            raise ValueError("--momentum-over-run runs eager CPU steps only")
        if finite:
            state.count.add_(1)
            c = (self.gamma + 1.0) / (int(state.count) + self.gamma)
            torch._foreach_lerp_(state.momentum_buffer, grads, c)

    def current(self, state: Any, grads: list[torch.Tensor]) -> Direction:
        return Direction(state.momentum_buffer, None, state.count)


class Variant(AGDStepper):
    """AGD's stepper with schedule-free interpolation (``beta`` > 0) and a choice of the point
    evaluated. Between steps the model holds ``y``; the optimiser's trained weights are ``z``
    (kept here), its average ``x``."""

    def __init__(self, model: torch.nn.Module, opt: hyperfree.AGD, beta: float, at: str,
                 relative: bool | Sequence[Sequence[int]] | Callable[[], Any] = False):
        super().__init__(model, opt, init=opt.init_weights)
        self.beta, self.at, self.z, self.etas = beta, at, None, []
        # the sets of parameter groups whose steps follow their joint norm (True: each alone;
        # a callable: the sets it returns at the first step, read at AGD's initialisation),
        # resolved into ``self.sets`` with their norms ``self.rho`` at the first step
        self.relative, self.sets, self.rho, self.gain0 = relative, [], [], []
        self._params = [p for g in opt.param_groups for p in g["params"]]
        self.fit: LineFit | None = None  # --linefit: with the batch seen last (``seen``)
        self.seen: dict[str, Any] = {}
        if beta:
            step = opt.step

            @torch.no_grad()
            def interpolated(closure: Any = None) -> Any:
                if self.z is None:
                    self.z = [p.detach().clone() for p in self._params]
                for p, z in zip(self._params, self.z):
                    p.copy_(z)  # the gradient was taken at y; the step moves z
                out = step(closure)
                for p, z in zip(self._params, self.z):
                    z.copy_(p)
                    x = opt.state[p].get("average")
                    if x is not None:
                        p.lerp_(x, beta)  # y = z + β (x − z)
                return out
            opt.step = interpolated  # type: ignore[method-assign]

    @property
    def averaged(self) -> bool:
        return self.at == "average" and super().averaged

    def eval(self) -> None:
        if self.at == "average":
            super().eval()

    def train(self) -> None:
        if self.at == "average":
            super().train()

    @torch.no_grad()
    def _relative_gains(self) -> None:
        """Each set's steps × ‖W_S‖/ρ_S, ρ_S its joint norm at the first step (AGD's
        initialisation): the majorisation's relative step η/L of the weights' measured size,
        not their target (a set: one parameter, or parameters scale-invariant jointly)."""
        groups = self.optimizer.param_groups

        def norm(members: Sequence[int]) -> float:
            return math.sqrt(sum(float(groups[i]["params"][0].norm()) ** 2 for i in members))
        if not self.gain0:  # the first step
            self.sets = ([[i] for i in range(len(groups))] if self.relative is True else
                         [list(m) for m in (self.relative() if callable(self.relative)
                                            else self.relative)])
            self.rho = [norm(m) for m in self.sets]
            self.gain0 = [g["gain"] for g in groups]
        for members, rho in zip(self.sets, self.rho):
            ratio = norm(members) / rho if rho > 0 else 1.0
            for i in members:
                groups[i]["gain"] = self.gain0[i] * ratio

    def step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.relative:
            self._relative_gains()
        if self.fit is not None:
            self.fit.before()
        out = super().step(loss)
        if self.fit is not None:
            x, y, loss_fn = self.seen["x"], self.seen["y"], self.seen["loss_fn"]
            with torch.no_grad():
                self.fit.after(float(loss.detach()), lambda: loss_fn(self.module(x), y))
        self.etas.append(float(out["eta"]))
        return out

    def watch(self) -> None:
        """--linefit: read each batch's input from the model's forward (the loss's target
        comes from :func:`seen_targets`)."""
        self.fit = LineFit(self._params, self.module)
        self.module.register_forward_pre_hook(
            lambda m, args: self.seen.__setitem__("x", args[0]))


@contextlib.contextmanager
def seen_targets(box: dict[str, Any]) -> Iterator[None]:
    """While active, the training loop's loss function records its target and itself in
    ``box["stepper"].seen`` (for ``--linefit``'s second evaluation of the batch)."""
    import hyperfree.train._run as run_module
    plain = run_module.get_loss

    def get_loss(name: str) -> Any:
        fn = plain(name)

        def recording(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if "stepper" in box:
                box["stepper"].seen.update(y=y, loss_fn=fn)
            return fn(logits, y)
        return recording
    run_module.get_loss = get_loss
    try:
        yield
    finally:
        run_module.get_loss = plain


def _specs() -> dict[str, dict[str, Any]]:
    """{label: overrides} of the race's quick profile."""
    return {s.label: dict(s.overrides) for s in race_specs(2, _SMALL_CONV, 500, 1000)}


def _pretrained(specs: dict, seed: int, runs: str | None, data_dir: dict, scratch: Path
                ) -> str:
    if runs is not None:
        path = Path(runs) / f"finetune-pretrain-seed{seed}"
        if not path.exists():
            raise SystemExit(f"--pretrain-from: {path} does not exist; give the directory of a "
                             "race's runs that holds finetune-pretrain-seedN, or leave it out")
        return str(path)
    out = scratch / f"finetune-pretrain-seed{seed}"
    pre = specs["finetune-pretrain"]
    cfg = TrainConfig(**pre, seed=seed, device="cpu", progress=False, plots=False,
                      data_dir=_data_dir(pre["dataset"], None, data_dir), out_dir=str(out))
    train(cfg)
    return str(out)


def variant_preset(args: argparse.Namespace) -> Preset:
    """The default preset with the pieces ``args`` name changed (none: the default itself)."""
    preset = PRESETS[DEFAULT_PRESET]
    source = Momentum(args.momentum) if args.momentum else Gradient()
    if args.momentum_over_run:
        source = RunMomentum(gamma=args.gamma)
    retraction = preset.retraction
    if args.retraction is not None:
        piece = RETRACTIONS[args.retraction]
        retraction = piece() if piece else None
    estimate = ESTIMATES[args.estimate] if args.estimate is not None else preset.estimate
    forks = args.forks != "none" if args.forks is not None else preset.forks
    streams = args.streams == "on" if args.streams is not None else preset.streams
    head = args.head == "on" if args.head is not None else preset.head
    lazy = args.rows == "lazy" if args.rows is not None else preset.lazy_rows
    return dataclasses.replace(preset, name=f"{preset.name}-variant", source=source,
                               estimate=estimate, average=PolyAverage(args.gamma),
                               retraction=retraction,
                               forks=forks, streams=streams, head=head, lazy_rows=lazy)


@contextlib.contextmanager
def stream_in_g(on: bool) -> Iterator[None]:
    """While active (``on``), a fork scales σ in G and the step by √terms of its stream (the
    placement §10 derives for one sum, which §16 measured overshooting)."""
    if not on:
        yield
        return
    original = Kind.fork_scale
    Kind.fork_scale = property(  # type: ignore[method-assign, assignment]
        lambda k: k.terms ** 0.5 if k.terms else original.fget(k))
    try:
        yield
    finally:
        Kind.fork_scale = original  # type: ignore[method-assign]


def _examples(model: torch.nn.Module, dataset: str) -> Callable[[int], torch.Tensor]:
    """Random inputs ``k ↦ x_k`` of ``model`` trained on ``dataset``: token ids of the model's
    vocabulary (its first embedding's) for text, images of the dataset's shape otherwise."""
    info = get_dataset_info(dataset)
    if info.kind == "text":
        vocab = next(m.num_embeddings for m in model.modules()
                     if isinstance(m, torch.nn.Embedding))
        return lambda k: torch.randint(0, vocab, (4, 64),
                                       generator=torch.Generator().manual_seed(k))
    shape = (16, info.in_channels, info.image_size, info.image_size)
    return lambda k: torch.randn(shape, generator=torch.Generator().manual_seed(k))


def run(panel: str, seed: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    specs = _specs()
    overrides = dict(specs[f"{panel}-agd-{DEFAULT_PRESET}"])
    overrides.pop("optimizer")
    if args.steps is not None:
        if "steps" not in overrides:
            raise ValueError(f"--steps {args.steps}: {panel} runs for epochs; give --steps to "
                             "gpt, gpt-long or lstm")
        overrides["steps"] = args.steps
    if args.depth is not None:
        overrides["depth"] = args.depth
    if args.arch is not None:  # another model of the registry on the panel's data and length
        overrides["arch"] = args.arch
        if args.depth is None:  # the race model's depth is not the other's
            overrides.pop("depth", None)
    if panel == "finetune":
        overrides["init_from"] = _pretrained(specs, seed, args.pretrain_from, args.data, scratch)
    preset = variant_preset(args)
    box: dict[str, Variant] = {}
    name = f"agd-variant-{panel}-{seed}"

    def build(model: torch.nn.Module, _: Any) -> Variant:
        params: Any = model
        if args.invariant_gain is not None:  # a seeded input: the run's RNG is left alone
            example = _examples(model, overrides["dataset"])(0)
            inv = {id(p) for p in invariant_parameters(model, example)}
            print(f"--invariant-gain {args.invariant_gain}: {len(inv)} scale-invariant "
                  "tensors", flush=True)
            params = [{"params": [p for p in model.parameters() if id(p) in inv],
                       "gain": args.invariant_gain},
                      {"params": [p for p in model.parameters() if id(p) not in inv]}]
        if args.param_gain:
            params = param_gain_groups(model, args.param_gain)
        relative: Any = args.relative
        if args.relative_invariant:  # read at the first step: after AGD's initialisation

            def read_sets() -> list[list[int]]:
                sets = invariant_sets(model, _examples(model, overrides["dataset"]))
                names = [n for n, _ in model.named_parameters()]
                print(f"--relative-invariant: {len(sets)} scale-invariant sets: " + "; ".join(
                    "+".join(names[i].removesuffix(".weight") for i in s) for s in sets),
                    flush=True)
                return sets
            relative = read_sets
        if relative or args.init_norm:  # a gain per parameter
            params = [{"params": [p]} for p in model.parameters() if p.requires_grad]
        opt = hyperfree.AGD(params, model=model, preset=preset, gain=args.gain)
        if args.init_norm:  # read at the first step: after AGD's init or the pretrained load
            init_norm_on_first_step(opt, args.init_norm)
        if args.participation:
            box["probe"] = Participation(opt, args.participation).attach()
        if args.hypergain:
            box["hyper"] = HyperGain(opt, args.hypergain,
                                     reference=args.hypergain_reference).attach()
        box["stepper"] = Variant(model, opt, args.interpolate, args.eval, relative)
        if args.linefit:
            box["stepper"].watch()
        return box["stepper"]
    scheduled = args.schedule != "constant"  # the default runs unwrapped, as the race's
    register_optimizer(name, description="benchmarks/agd_variants.py",
                       defaults=OptimArgs(schedule="constant") if scheduled else OptimArgs())(
        build)
    cfg = TrainConfig(**overrides, optimizer=name, seed=seed, device="cpu", progress=False,
                      plots=False, eval_every=None, schedule=args.schedule if scheduled else None,
                      data_dir=_data_dir(overrides["dataset"], None, args.data))
    start = time.perf_counter()
    with stream_in_g(args.forks == "stream-g"), (
            seen_targets(box) if args.linefit else contextlib.nullcontext()):
        last = train(cfg).records[-1]
    etas = box["stepper"].etas
    return {"workload": panel, "seed": seed,
            "momentum": "over-run" if args.momentum_over_run else args.momentum,
            "interpolate": args.interpolate, "gamma": args.gamma, "gain": args.gain,
            "invariant_gain": args.invariant_gain,
            "param_gain": [f"{p}={g:g}" for p, g in args.param_gain] or None,
            "relative": ("invariant" if args.relative_invariant else args.relative) or None,
            "init_norm": args.init_norm,
            "participation": box["probe"].quarters() if "probe" in box else None,
            "linefit": box["stepper"].fit.quarters() if box["stepper"].fit else None,
            "hypergain": ([args.hypergain, args.hypergain_reference, *box["hyper"].quarters()]
                          if "hyper" in box else None),
            "eval": args.eval, "retraction": args.retraction or "the preset's",
            "estimate": args.estimate or "the preset's",
            "forks": args.forks or "the preset's", "streams": args.streams or "the preset's",
            "head": args.head or "the preset's", "rows": args.rows or "the preset's",
            "schedule": args.schedule, "steps": overrides.get("steps"),
            "depth": overrides.get("depth"), "arch": overrides.get("arch"),
            "test_loss": last.get("test_loss"), "test_acc": last.get("test_acc"),
            "train_loss": last.get("train_loss"),
            "seconds": round(time.perf_counter() - start, 1),
            "eta_quantiles": [round(etas[int(q * (len(etas) - 1))], 4)
                              for q in (0.05, 0.25, 0.5, 0.75, 1.0)]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", choices=PANELS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    default = PRESETS[DEFAULT_PRESET]
    ap.add_argument("--momentum", type=float, default=getattr(default.source, "beta", 0.0),
                    help="the source's β (default: the default preset's, %(default)s)")
    ap.add_argument("--momentum-over-run", action="store_true")
    ap.add_argument("--interpolate", type=float, default=0.0)
    ap.add_argument("--gamma", type=float, default=getattr(default.average, "gamma", 8.0),
                    help="the average's γ (default: the default preset's, %(default)s)")
    ap.add_argument("--gain", type=float, default=1.0)
    ap.add_argument("--invariant-gain", type=float, default=None, metavar="K",
                    help="image workloads: the step's multiplier on the tensors measured "
                         "scale-invariant (invariant_parameters), the others at --gain")
    ap.add_argument("--relative", action="store_true",
                    help="every parameter's step × its norm over its norm at AGD's "
                         "initialisation (the step relative to the measured weight)")
    ap.add_argument("--relative-invariant", action="store_true",
                    help="--relative on the parameter sets measured jointly scale-invariant "
                         "(invariant_sets), each set by its joint norm; the others as they are")
    add_probe_arguments(ap)
    ap.add_argument("--estimate", choices=tuple(ESTIMATES), default=None,
                    help="G's estimate: the self-estimate (spectral-average's), held after "
                         "its peak (fading: spectral-fading's) or damped by its rise squared "
                         "(damped: spectral-damped's) (default: the preset's)")
    ap.add_argument("--retraction", choices=tuple(RETRACTIONS), default=None,
                    help="the step's retraction (default: the preset's own)")
    ap.add_argument("--forks", choices=("paths", "none", "stream-g"), default=None,
                    help="σ in G and the step per fork: √2 (paths), none, or √(the stream's "
                         "terms) (stream-g, with --streams off) (default: the preset's)")
    ap.add_argument("--streams", choices=("on", "off"), default=None,
                    help="the step's σ × √(the stream's terms) (default: the preset's)")
    ap.add_argument("--head", choices=("on", "off"), default=None,
                    help="the heads' steps × 1/ρ, ρ their input's measured RMS (§25; off: "
                         "spectral-damped) (default: the preset's)")
    ap.add_argument("--rows", choices=("every", "lazy"), default=None,
                    help="embedding rows: every row steps along its momentum, or only the rows "
                         "the batch reads (lazy: spectral-lazy's, §27) (default: the preset's)")
    ap.add_argument("--eval", choices=("average", "iterate"), default="average")
    ap.add_argument("--schedule", choices=SCHEDULES, default="constant",
                    help="a known horizon: the step's multiplier decays over the run "
                         "(hyperfree.train.schedules)")
    ap.add_argument("--steps", type=int, default=None, metavar="N",
                    help="the run's length in steps instead of the race's (text workloads)")
    ap.add_argument("--depth", type=int, default=None, metavar="N",
                    help="the model's depth instead of the race's (e.g. the GPT's blocks)")
    ap.add_argument("--arch", default=None, metavar="NAME",
                    help="another registered model instead of the race's (e.g. resnet18 on conv)")
    ap.add_argument("--data-dir", action="append", default=[], metavar="[DATASET=]PATH")
    ap.add_argument("--pretrain-from", default=None, metavar="RUNS")
    ap.add_argument("--out", default=None, help="append each run's JSON line to this file")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    check_probe_arguments(
        ap, args, gains=(("--invariant-gain", args.invariant_gain is not None),
                         ("--relative", args.relative),
                         ("--relative-invariant", args.relative_invariant)),
        lrs=(("--schedule", args.schedule != "constant"),))
    if not 0.0 <= args.momentum < 1.0 or not 0.0 <= args.interpolate < 1.0:
        raise SystemExit("--momentum and --interpolate must be in [0, 1), got "
                         f"{args.momentum} and {args.interpolate}")
    try:
        args.data = parse_data_dirs(args.data_dir)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    key = METRICS.get(args.workload, DEFAULT_METRIC)[0]  # what the race judges it by
    values = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            res = run(args.workload, seed, args, Path(scratch))
            print(json.dumps(res), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(res) + "\n")
            values.append(res[key])
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"{args.workload}: {key} {statistics.mean(values):.4f} ± {spread:.4f} over seeds "
          f"{args.seeds}")


if __name__ == "__main__":
    main()
