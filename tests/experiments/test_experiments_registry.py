"""The experiment registry: every registered experiment is well-formed data.

Checks, for every experiment and profile: labels unique and filename-safe, every run's
overrides make a valid TrainConfig, every optimiser spec resolves in the optimiser registry (or
parses as a tower), sweeps carry their coordinate, the gpu profile uses the papers' datasets,
and smoke is a small subset of quick. Also the registry's errors.
Run: .venv/bin/python -m pytest -q tests/experiments/test_experiments_registry.py
"""
from __future__ import annotations

import pytest

from hyperfree.experiments import (PROFILES, Experiment, RunSpec, get_experiment,
                                   list_experiments, plan_runs, register_experiment)
from hyperfree.experiments._verdicts import depth_verdict
from hyperfree.hyper import parse
from hyperfree.train import TrainConfig, get_optimizer_info

EXPERIMENTS = list_experiments()


def test_the_issue_experiments_are_registered() -> None:
    assert set(EXPERIMENTS) >= {"depth", "tuned", "shape", "batch", "conv", "towers", "peers"}


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_run_is_a_valid_config(name: str, profile: str) -> None:
    exp = get_experiment(name)
    specs = exp.specs(profile)
    assert specs, f"{name} has no runs under {profile}"
    for spec in specs:
        cfg = TrainConfig(**spec.overrides)
        if "/" in cfg.optimizer or "(" in cfg.optimizer:
            parse(cfg.optimizer)
        else:
            get_optimizer_info(cfg.optimizer)
        if exp.figure == "heatmap":
            assert spec.x is not None and spec.y is not None
    if exp.figure in ("sweep", "heatmap"):
        assert any(s.x is not None for s in specs)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_smoke_is_a_tiny_subset_of_quick(name: str) -> None:
    exp = get_experiment(name)
    quick = {s.label for s in exp.specs("quick")}
    smoke = exp.specs("smoke")
    assert {s.label for s in smoke} <= quick
    assert {s.group for s in smoke} == {s.group for s in exp.specs("quick")}
    assert {s.panel for s in smoke} == {s.panel for s in exp.specs("quick")}
    assert all(s.overrides["limit_batches"] == 1 and s.overrides["epochs"] == 1 for s in smoke)


# The race's gpu profile is issue 9's H100 measurement: Fashion-MNIST at GPU length, not CIFAR.
_GPU_ON_FASHION_MNIST = {"race"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_gpu_profile_uses_paper_datasets(name: str) -> None:
    datasets = {TrainConfig(**s.overrides).dataset for s in get_experiment(name).specs("gpu")}
    if name in _GPU_ON_FASHION_MNIST:
        datasets -= {"fashion-mnist"}
    assert "fashion-mnist" not in datasets
    assert datasets <= {"cifar10", "cifar100", "imagenet", "mnist", "tinyshakespeare"}


def test_plan_has_one_directory_per_run_and_seed(tmp_path) -> None:
    exp = get_experiment("tuned")
    plan = plan_runs(exp, "quick", seeds=2, runs_dir=tmp_path, device="cpu")
    assert len(plan) == 2 * len(exp.specs("quick"))
    dirs = {p.run_dir for p in plan}
    assert len(dirs) == len(plan)
    first = plan[0]
    assert first.run_dir == tmp_path / "experiments" / "tuned" / "quick" / "agd-seed0"
    assert first.config.out_dir == str(first.run_dir) and first.config.device == "cpu"
    assert {p.seed for p in plan} == {0, 1}


def test_data_dir_mapping_applies_to_non_vendored_datasets(tmp_path) -> None:
    plan = plan_runs(get_experiment("towers"), "quick", runs_dir=tmp_path,
                     data_dirs={"": "/elsewhere"})
    dirs = {p.config.dataset: p.config.data_dir for p in plan}
    assert dirs["tinyshakespeare"] == "/elsewhere"
    assert dirs["fashion-mnist"] is None


def test_text_dataset_needs_its_file_from_the_caller(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"experiment 'towers' \(quick\) needs a text file for "
                                         r"tinyshakespeare: pass --data-dir tinyshakespeare=PATH"):
        plan_runs(get_experiment("towers"), "quick", runs_dir=tmp_path)
    plan = plan_runs(get_experiment("towers"), "quick", runs_dir=tmp_path,
                     data_dirs={"tinyshakespeare": "/t.txt"})
    assert {p.config.data_dir for p in plan if p.config.dataset == "tinyshakespeare"} == {"/t.txt"}


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        get_experiment("nope")
    with pytest.raises(ValueError, match="filename-safe"):
        RunSpec("a/b", "g", {})
    with pytest.raises(ValueError, match="no profile 'gpu'"):
        Experiment("x", "t", "c", "curves", {"quick": ()}, depth_verdict).specs("gpu")
    with pytest.raises(ValueError, match="figure 'pie'"):
        Experiment("x", "t", "c", "pie", {}, depth_verdict)
    with pytest.raises(ValueError, match="repeats a run label"):
        Experiment("x", "t", "c", "curves", {"quick": (RunSpec("a", "g", {}),) * 2},
                   depth_verdict)
    with pytest.raises(ValueError, match="already registered"):
        register_experiment(Experiment("depth", "t", "c", "curves", {}, depth_verdict))
    with pytest.raises(ValueError, match="seeds must be"):
        plan_runs(get_experiment("depth"), "quick", seeds=0)


def test_only_selects_runs_by_label_group_or_panel(tmp_path) -> None:
    from hyperfree.experiments import plan_runs

    exp = get_experiment("race")
    dirs = {"tinyshakespeare": str(tmp_path / "t.txt")}
    every = plan_runs(exp, "quick", runs_dir=tmp_path, data_dirs=dirs)
    gpt = plan_runs(exp, "quick", runs_dir=tmp_path, data_dirs=dirs, only=["gpt"])
    assert gpt and {r.spec.panel for r in gpt} == {"gpt"} and len(gpt) < len(every)
    picked = plan_runs(exp, "quick", runs_dir=tmp_path, data_dirs=dirs,
                       only=["fcn16-adamw-*", "dog"])
    # dog fine-tunes too, from the run that pre-trains its weights: that one comes along
    assert {r.spec.group for r in picked} == {"adamw", "dog", "pretrain"}
    assert all(r.spec.panel == "fcn16" for r in picked if r.spec.group == "adamw")
    labels = {r.spec.label for r in picked}
    assert [r.spec.label for r in picked] == [r.spec.label for r in every
                                              if r.spec.label in labels]  # plan order kept
    with pytest.raises(ValueError, match=r"--only 'nope' matches no run"):
        plan_runs(exp, "quick", runs_dir=tmp_path, data_dirs=dirs, only=["nope"])
