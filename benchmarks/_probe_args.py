"""The step-scale probes' command-line options, one definition for the scripts that offer them
(``agd_variants.py``, ``hf_forks.py``, ``hf_llama.py``): ``--param-gain`` and ``--init-norm``
(the parameters' gains, ``_gains.py``), ``--participation`` (``_participation.py``) and
``--hypergain`` (``_hypergain.py``: the groups' ``lr``), ``--linefit`` (``_linefit.py``: a
reading, training unchanged). Diagnostics of ``docs/agd-stability.md`` §13–§19, never rules."""
from __future__ import annotations

import argparse
from typing import Sequence

from _gains import pattern_gain

__all__ = ["PROBES", "add_probe_arguments", "check_probe_arguments"]

PROBES = ("param-gain", "init-norm", "participation", "hypergain", "linefit")


def add_probe_arguments(ap: argparse.ArgumentParser, probes: Sequence[str] = PROBES) -> None:
    """Add the options of ``probes`` (names from :data:`PROBES`) to ``ap``."""
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ValueError(f"probes {unknown}: not among {', '.join(PROBES)}")
    if "param-gain" in probes:
        ap.add_argument("--param-gain", type=pattern_gain, action="append", default=[],
                        metavar="PATTERN=G", help="AGD: G times the step for the parameters "
                        "whose qualified name matches the fnmatch PATTERN (repeatable; the "
                        "first match wins), e.g. 'decoder.*=2'")
    if "init-norm" in probes:
        ap.add_argument("--init-norm", choices=("step", "both"), default=None,
                        help="AGD: each matrix's step (both: and its term of G) x its "
                        "operator norm at the first step over its sigma (§18)")
    if "participation" in probes:
        ap.add_argument("--participation", choices=("ratio", "capped"), default=None,
                        help="AGD: G and L weighted by the tensors' terms (§18)")
    if "hypergain" in probes:
        ap.add_argument("--hypergain", type=float, default=None, metavar="KAPPA",
                        help="AGD: the step x s, log s moved by the hypergradient cosine of "
                        "the last step against the next gradient (§19)")
        ap.add_argument("--hypergain-reference", choices=("last", "average"), default="last",
                        help="--hypergain's direction: the last step, or the iterate's offset "
                        "from AGD's average")
    if "linefit" in probes:
        ap.add_argument("--linefit", action="store_true", help="AGD: after each step the same "
                        "batch's loss again, read against the first-order term (§19)")


def check_probe_arguments(ap: argparse.ArgumentParser, args: argparse.Namespace,
                          gains: Sequence[tuple[str, bool]] = (),
                          lrs: Sequence[tuple[str, bool]] = ()) -> None:
    """``ap.error`` where two options set the same thing: the parameters' gains
    (``--param-gain``, ``--init-norm`` and ``gains``: (option, given) pairs of the script's
    own) or the groups' ``lr`` (``--participation``, ``--hypergain`` and ``lrs``)."""
    given = vars(args)
    for what, names, own in (
            ("the parameters' gains", ("param_gain", "init_norm"), gains),
            ("the groups' lr", ("participation", "hypergain"), lrs)):
        on = [f"--{n.replace('_', '-')}" for n in names if given.get(n)] + [
            name for name, set_ in own if set_]
        if len(on) > 1:
            ap.error(f"{' and '.join(on)} each set {what}; give one of them")
