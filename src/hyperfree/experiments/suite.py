"""The built-in experiments (issue 5): depth, tuned, shape, batch, conv, towers, peers.

Papers: Bernstein et al., *Automatic Gradient Descent* (arXiv 2304.05187) Figures 1, 5, 6, 7
and Table 2; Chandra et al., *Gradient Descent: The Ultimate Optimizer* (arXiv 1909.13371) §4.
Profiles: ``quick`` (Fashion-MNIST, the whole suite in <= 15 min on 2 CPU cores: 1-2 epochs,
small grids, 1 seed), ``full`` (Fashion-MNIST, full grids, more epochs, 3 seeds), ``gpu``
(the papers' CIFAR-10/100 and ImageNet settings) and ``smoke`` (derived from ``quick``: a few
runs covering every series and panel, 2 batches each; used by the tests).
"""
from __future__ import annotations

from typing import Any, Iterable

from . import _verdicts as V
from ._spec import Experiment, RunSpec, register_experiment

__all__ = ["PAPER_AGD", "GRID", "smoke_of", "profiles"]

#: The experiments of the papers reproduce the paper's AGD (Algorithm 1), whatever the default.
PAPER_AGD = "agd-paper"
GRID: tuple[float, ...] = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # the AGD paper's Adam/SGD grid
_SMOKE = {"epochs": 1, "limit_batches": 1, "train_bs": 32, "test_bs": 64, "rel_update_samples": 1}


def _fmt(v: float) -> str:
    return f"{v:g}".replace("+", "")


def smoke_of(specs: Iterable[RunSpec]) -> tuple[RunSpec, ...]:
    """A few of ``specs`` covering every group and panel, shrunk to 1 epoch of 1 batch.

    A run counted in ``steps`` becomes that one epoch too, and a warmup (sized for the full
    run) is dropped: it must be shorter than the run.
    """
    groups, panels, out = set(), set(), []
    for s in specs:
        if s.group not in groups or s.panel not in panels:
            groups.add(s.group)
            panels.add(s.panel)
            small = {**_SMOKE, "train_bs": s.overrides.get("train_bs", _SMOKE["train_bs"])}
            if "warmup_steps" in s.overrides:
                small["warmup_steps"] = 0
            base = {k: v for k, v in s.overrides.items() if k != "steps"}
            out.append(RunSpec(s.label, s.group, {**base, **small}, s.x, s.y, s.panel))
    return tuple(out)


def profiles(quick: tuple[RunSpec, ...], full: tuple[RunSpec, ...],
             gpu: tuple[RunSpec, ...]) -> dict[str, tuple[RunSpec, ...]]:
    """The four profiles of an experiment: ``smoke`` is derived from ``quick``."""
    return {"smoke": smoke_of(quick), "quick": quick, "full": full, "gpu": gpu}


def _grid_runs(base: dict[str, Any], optimizers: Iterable[str], lrs: Iterable[float],
               panel: str = "", prefix: str = "") -> list[RunSpec]:
    return [RunSpec(f"{prefix}{opt}-lr{_fmt(lr)}", opt, {**base, "optimizer": opt, "lr": lr},
                    x=lr, panel=panel) for opt in optimizers for lr in lrs]


# ---------------------------------------------------------------- 1. depth (Figure 1, left)
def _depth(dataset: str, width: int, epochs: int, **extra: Any) -> tuple[RunSpec, ...]:
    base = {"arch": "fcn", "dataset": dataset, "depth": 32, "width": width, "epochs": epochs,
            **extra}
    return (RunSpec("agd", "agd", {**base, "optimizer": PAPER_AGD}),
            RunSpec("adam-lr0.001", "adam", {**base, "optimizer": "adam", "lr": 1e-3}),
            RunSpec("sgd-lr0.1", "sgd", {**base, "optimizer": "sgd", "lr": 0.1}))


register_experiment(Experiment(
    name="depth", title="Depth: a 32-layer FCN at PyTorch defaults (AGD Figure 1, left)",
    claim="On a 32-layer fully-connected network, AGD trains out of the box, while Adam at "
          "lr 1e-3 and SGD at lr 0.1 with PyTorch's default initialisation fail to train.",
    figure="curves", verdict=V.depth_verdict,
    runs=profiles(_depth("fashion-mnist", 128, 3, limit_batches=60),
                   _depth("fashion-mnist", 256, 5),
                   _depth("cifar10", 256, 50)),
    notes="quick: width 128, 3 epochs of 60 batches; full: width 256, 5 epochs; gpu: "
          "CIFAR-10, 50 epochs."))


# ---------------------------------------------------------------- 2. tuned (Figure 5)
def _tuned(dataset: str, depth: int, width: int, epochs: int, **extra: Any
           ) -> tuple[RunSpec, ...]:
    base = {"arch": "fcn", "dataset": dataset, "depth": depth, "width": width, "epochs": epochs,
            **extra}
    return (RunSpec("agd", "agd", {**base, "optimizer": PAPER_AGD}),
            *_grid_runs(base, ("adam", "sgd"), GRID))


register_experiment(Experiment(
    name="tuned", title="AGD without tuning vs Adam and SGD tuned over a grid (AGD Figure 5)",
    claim="AGD with no hyperparameters matches Adam and SGD tuned over {1e-5, ..., 1e-1} in "
          "test accuracy and objective (FCN depth 8, width 256 here; depth 16 x 512 on "
          "CIFAR-10 in the paper: AGD 52.7% vs Adam 53.5%), for a fraction of the grid's "
          "compute; AGD's relative update size decays over training.",
    figure="sweep", verdict=V.tuned_verdict, x_label="learning rate", log_x=True,
    rel_update_table=True,
    runs=profiles(_tuned("fashion-mnist", 8, 256, 3, limit_batches=60),
                   _tuned("fashion-mnist", 8, 256, 5),
                   _tuned("cifar10", 16, 512, 50)),
    notes="quick: 3 epochs of 60 batches; full: 5 epochs; gpu: CIFAR-10, depth 16 x 512, "
          "50 epochs."))


# ---------------------------------------------------------------- 3. shape (Figure 6)
def _shape(dataset: str, depths: Iterable[int], widths: Iterable[int], epochs: int,
           **extra: Any) -> tuple[RunSpec, ...]:
    return tuple(RunSpec(f"agd-d{d}-w{w}", "agd",
                         {"arch": "fcn", "dataset": dataset, "depth": d, "width": w,
                          "epochs": epochs, "optimizer": PAPER_AGD, **extra}, x=w, y=d)
                 for d in depths for w in widths)


register_experiment(Experiment(
    name="shape", title="Width x depth: AGD on FCNs of every shape (AGD Figure 6)",
    claim="AGD trains FCNs of depth 2-32 and width 64-2048 with no tuning; in the paper the "
          "best test accuracy (CIFAR-10) is 63.7% at depth 4, width 2048.",
    figure="heatmap", verdict=V.shape_verdict, x_label="width", y_label="depth",
    runs=profiles(_shape("fashion-mnist", (2, 4, 8, 16), (64, 128, 256), 1, limit_batches=100),
                   _shape("fashion-mnist", (2, 4, 8, 16, 32), (64, 128, 256, 512), 3),
                   _shape("cifar10", (2, 4, 8, 16, 32), (64, 128, 256, 512, 1024, 2048), 50)),
    notes="quick: depth 2-16 x width 64-256, 1 epoch of 100 batches; full: depth 2-32 x "
          "width 64-512, 3 epochs; gpu: CIFAR-10, depth 2-32 x width 64-2048, 50 epochs."))


# ---------------------------------------------------------------- 4. batch (Figure 7)
def _batch(dataset: str, sizes: Iterable[int], epochs: int) -> tuple[RunSpec, ...]:
    return tuple(RunSpec(f"agd-bs{b}", "agd",
                         {"arch": "fcn", "dataset": dataset, "depth": 4, "width": 256,
                          "epochs": epochs, "optimizer": PAPER_AGD, "train_bs": b}, x=b)
                 for b in sizes)


register_experiment(Experiment(
    name="batch", title="Batch size 32 ... 4096: AGD on a depth-4 FCN (AGD Figure 7)",
    claim="AGD trains at every batch size from 32 to 4096 without retuning; larger batches "
          "reach a lower objective per step (fewer steps per epoch).",
    figure="sweep", verdict=V.batch_verdict, x_label="batch size", log_x=True,
    runs=profiles(_batch("fashion-mnist", (32, 128, 512, 4096), 1),
                   _batch("fashion-mnist", (32, 64, 128, 256, 512, 1024, 2048, 4096), 5),
                   _batch("cifar10", (32, 64, 128, 256, 512, 1024, 2048, 4096), 50)),
    notes="quick: 4 batch sizes, 1 epoch; full: 8 sizes, 5 epochs; gpu: CIFAR-10, 50 epochs."))


# ---------------------------------------------------------------- 5. conv (Table 2)
def _conv(dataset: str, models: Iterable[tuple[str, int, int | None]], lrs: Iterable[float],
          epochs: int, **extra: Any) -> tuple[RunSpec, ...]:
    out: list[RunSpec] = []
    for arch, width, depth in models:
        base = {"arch": arch, "dataset": dataset, "width": width, "epochs": epochs, **extra,
                **({} if depth is None else {"depth": depth})}
        out.append(RunSpec(f"{arch}-agd", "agd", {**base, "optimizer": PAPER_AGD}, panel=arch))
        out += _grid_runs(base, ("adam",), lrs, panel=arch, prefix=f"{arch}-")
    return tuple(out)


register_experiment(Experiment(
    name="conv", title="Convolutional nets: AGD vs tuned Adam (AGD Table 2)",
    claim="The conv rule (each k x k kernel as k^2 matrices) makes AGD train VGG and "
          "pre-activation ResNets close to tuned Adam (paper: ResNet-18 CIFAR-10 91.2% vs "
          "92.9%; VGG-16 CIFAR-100 67.4% vs 69.7%).",
    figure="sweep", verdict=V.conv_verdict, x_label="Adam learning rate", log_x=True,
    runs=profiles(
        _conv("fashion-mnist", (("vgg11", 8, None), ("resnet_small", 8, 1)), (1e-4, 1e-3, 1e-2),
              1, limit_batches=40),
        _conv("fashion-mnist", (("vgg11", 8, None), ("resnet_small", 8, 1)), GRID, 2,
              limit_batches=150),
        _conv("cifar100", (("vgg16", 64, None),), GRID, 200)
        + _conv("cifar10", (("resnet18", 64, None),), GRID, 200)
        + _conv("imagenet", (("resnet50", 64, None),), (1e-4, 1e-3, 1e-2), 350, loss="xent",
                train_bs=1024)),
    notes="quick: VGG-11 and the 3-stage resnet_small (1 block per stage) at width 8, 1 epoch "
          "of 40 batches, Adam in {1e-4, 1e-3, 1e-2}; full: the same nets, 2 epochs of 150 "
          "batches, the full grid; gpu: VGG-16 on CIFAR-100 and ResNet-18 on CIFAR-10 (width 64), 200 epochs; ResNet-50 "
          "on ImageNet, cross-entropy, batch 1024, 350 epochs (paper: AGD 65.5% top-1)."))


# ---------------------------------------------------------------- 6. towers (Chandra et al.)
TOWERS: tuple[tuple[str, str], ...] = (
    ("sgd", "sgd({lr})"), ("sgd-sgd", "sgd({lr})/sgd(1e-3)"),
    ("sgd-sgd-sgd", "sgd({lr})/sgd(1e-3)/sgd(1e-4)"), ("adam", "adam({lr})"),
    ("adam-sgd", "adam({lr})/sgd(1e-5)"))


def _tower_models() -> tuple[tuple[str, dict[str, Any]], ...]:
    """The quick/full models: MLP, 3-stage ResNet (bs 32), 1-layer char-LSTM (bs 32, width 64).

    The MLP is cheap, so it always runs whole epochs (469 steps each): the towers need a few
    hundred steps before their step sizes have moved. The LSTM reads tinyshakespeare, whose
    file the caller names (``data_dirs={"tinyshakespeare": PATH}``; CLI ``--data-dir``).
    """
    return (("mlp", {"arch": "fcn", "depth": 2, "width": 128, "limit_batches": None}),
            ("resnet", {"arch": "resnet_small", "depth": 1, "width": 8, "train_bs": 32,
                        "test_bs": 100}),
            ("lstm", {"arch": "char_lstm", "depth": 1, "width": 64, "train_bs": 32,
                      "test_bs": 64, "dataset": "tinyshakespeare"}))


def _towers(lrs: Iterable[float], epochs: int, models: tuple[tuple[str, dict[str, Any]], ...],
            **extra: Any) -> tuple[RunSpec, ...]:
    out = []
    for panel, model in models:
        for group, spec in TOWERS:
            for lr in lrs:
                cfg = {"loss": "xent", "epochs": epochs, **extra, **model,
                       "optimizer": spec.format(lr=_fmt(lr))}
                out.append(RunSpec(f"{panel}-{group}-lr{_fmt(lr)}", group, cfg, x=lr,
                                   panel=panel))
    return tuple(out)


register_experiment(Experiment(
    name="towers", title="Hypergradient towers: robustness to the initial step size "
                         "(Chandra et al. 2022, section 4)",
    claim="Taller optimiser towers are less sensitive to the initial step size: SGD/SGD and "
          "SGD/SGD/SGD recover from initial step sizes far too small or too large where SGD "
          "does not, and Adam/SGD likewise improves on Adam (MLP, ResNet, char-LSTM).",
    figure="sweep", verdict=V.towers_verdict, x_label="initial step size", log_x=True,
    runs=profiles(
        _towers((1e-4, 1e-2, 1.0), 1, _tower_models(), limit_batches=40),
        _towers((1e-4, 1e-3, 1e-2, 1e-1, 1.0), 2, _tower_models(), limit_batches=150),
        _towers((1e-4, 1e-3, 1e-2, 1e-1, 1.0), 30,
                (("mlp", {"arch": "fcn", "depth": 2, "width": 128, "dataset": "mnist"}),
                 ("resnet", {"arch": "resnet18", "dataset": "cifar10"}),
                 ("lstm", {"arch": "char_lstm", "depth": 2, "width": 256,
                           "dataset": "tinyshakespeare"})))),
    notes="Cross-entropy loss. The MLP is the registry's fcn at depth 2, width 128 (784-128-10, "
          "bias-free, sqrt(2)-scaled ReLU), not the paper's biased tanh MLP. Upper levels: "
          "SGD(1e-3) above SGD, SGD(1e-4) above that, SGD(1e-5) above Adam (as in "
          "benchmarks/towers_claim.py). ResNet and LSTM use batch 32 on the CPU "
          "(nn.LSTM at width 128, batch 128 took ~5 s a step here). quick: lr in {1e-4, 1e-2, "
          "1}, 1 epoch of 40 batches (test: 40 batches); full: 5 step sizes, 2 epochs of 150 "
          "batches; gpu: "
          "MNIST / CIFAR-10 ResNet-18 / 2-layer LSTM (width 256, batch 128), 30 epochs."))


# ---------------------------------------------------------------- 7. peers (the race)
PEERS: tuple[tuple[str, str], ...] = (
    ("agd", PAPER_AGD), ("sgd-sgd tower", "sgd(0.01)/sgd(1e-4)"),
    ("adam-sgd tower", "adam(0.001)/sgd(1e-5)"), ("prodigy", "prodigy"),
    ("dadapt-adam", "dadapt-adam"), ("schedulefree-adamw", "schedulefree-adamw"),
    ("dog", "dog"), ("gdtuo", "gdtuo"))


def _peers(settings: Iterable[tuple[str, dict[str, Any]]], adam_lrs: Iterable[float]
           ) -> tuple[RunSpec, ...]:
    out: list[RunSpec] = []
    for panel, base in settings:
        for group, opt in PEERS:
            slug = group.replace(" tower", "-tower").replace(" ", "-")
            # gdtuo swaps in new weight tensors every step: the harness's ‖ΔW‖/‖W‖ probe
            # would watch stale ones, so it is off for gdtuo
            probe = {"rel_update_samples": 0} if opt == "gdtuo" else {}
            out.append(RunSpec(f"{panel}-{slug}", group, {**base, "optimizer": opt, **probe},
                               panel=panel))
        out += _grid_runs(base, ("adam",), adam_lrs, panel=panel, prefix=f"{panel}-tuned-")
    return tuple(RunSpec(s.label, "tuned adam" if s.group == "adam" else s.group, s.overrides,
                         s.x, s.y, s.panel) for s in out)


def _peer_settings(dataset: str, deep_width: int, conv: dict[str, Any],
                   fcn_extra: dict[str, Any], conv_extra: dict[str, Any]
                   ) -> tuple[tuple[str, dict[str, Any]], ...]:
    fcn = {"arch": "fcn", "dataset": dataset, **fcn_extra}
    return (("depth32", {**fcn, "depth": 32, "width": deep_width}),
            ("fcn8x256", {**fcn, "depth": 8, "width": 256}),
            (str(conv["arch"]), {**conv, "dataset": dataset, **conv_extra}))


register_experiment(Experiment(
    name="peers", title="The race: AGD and towers vs other learning-rate-free optimisers",
    claim="No single paper claim: each of AGD, Prodigy, D-Adaptation, Schedule-Free, DoG and "
          "the towers claims to match a tuned baseline without tuning. Here all run at their "
          "documented defaults on the settings of experiments 1, 2 and 5, against the best "
          "of a small Adam grid.",
    figure="bars", verdict=V.peers_verdict,
    runs=profiles(
        _peers(_peer_settings("fashion-mnist", 128, {"arch": "resnet_small", "depth": 1,
                                                     "width": 8},
                              {"epochs": 2, "limit_batches": 50},
                              {"epochs": 1, "limit_batches": 40}), (1e-4, 1e-3, 1e-2)),
        _peers(_peer_settings("fashion-mnist", 128, {"arch": "resnet_small", "depth": 1,
                                                     "width": 8},
                              {"epochs": 3}, {"epochs": 1, "limit_batches": 200}),
               (1e-4, 1e-3, 1e-2)),
        _peers(_peer_settings("cifar10", 256, {"arch": "resnet18", "width": 64},
                              {"epochs": 50}, {"epochs": 200}), GRID)),
    notes="Square loss (the AGD paper's convention) everywhere. gdtuo = the paper library's "
          "SGD(0.01)/SGD(1e-5); DoG evaluated with its polynomial-decay average (only where the "
          "harness calls stepper.eval()). quick: FCNs 2 epochs of 50 batches, resnet_small "
          "(width 8) 1 epoch of 40; full: FCNs 3 epochs, resnet_small 1 epoch of 200 batches; gpu: "
          "CIFAR-10, 50 epochs, ResNet-18 for 200."))
