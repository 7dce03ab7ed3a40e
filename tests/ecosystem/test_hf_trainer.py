"""AGD under the Hugging Face ``Trainer`` (skipped unless ``transformers`` and ``accelerate``
are installed: the ``ecosystem`` extra).

The model is a real, tiny ``GPT2LMHeadModel`` built from a config (nothing downloaded): its
``Conv1D`` weights, tied embedding/head, LayerNorms and biases are classified by AGD's kinds,
and the packed Q/K/V ``c_attn`` is read as three blocks from the model's ``dummy_inputs``: the
README's recipe, with no declarations.
The Trainer always builds a learning-rate scheduler over ``group["lr"]``; with
``optimizers=(AGD(model), None)`` and ``lr_scheduler_type="constant"`` the multiplier stays 1,
so the run is AGD as derived.

* training lowers the loss, the Trainer logs ``learning_rate`` 1.0, and a callback reads η from
  ``group["eta"]`` after every step through accelerate's optimiser wrapper (positive, changing);
* ``resume_from_checkpoint`` continues exactly: 6 steps straight equal 3 steps, a checkpoint, a
  new model (other random draws, AGD's init where it is built) and 3 more steps, bit for bit.

Run: .venv/bin/python -m pytest -q tests/ecosystem/test_hf_trainer.py
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

import hyperfree
from hyperfree.optim import Kind

from _ecosystem_helpers import flat

# checked without importing (transformers takes seconds to import; paid only where these run)
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("accelerate")
    is None, reason="needs transformers and accelerate: pip install 'hyperfree[ecosystem]'")

VOCAB, SEQ = 32, 8


@functools.cache
def _hf() -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    return transformers


def _kinds() -> dict[str, Any]:
    """No declarations: GPT-2's c_attn (Q, K and V side by side) is read from the forward."""
    return {}


def _model(seed: int) -> Any:
    transformers = _hf()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=SEQ, n_embd=16, n_layer=1,
                                  n_head=2, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    hyperfree.optim.init_weights(model, kinds=_kinds())  # where it is built: a resume overwrites
    return model


class _Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (24, SEQ), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _eta_log() -> Any:
    """A TrainerCallback that reads η from ``group["eta"]`` after every step."""

    class EtaLog(_hf().TrainerCallback):
        def __init__(self) -> None:
            self.etas: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                        **kw: Any) -> None:
            self.etas.append(float(optimizer.param_groups[0]["eta"]))

    return EtaLog()


def _trainer(model: Any, out: Path, steps: int, **kw: Any) -> Any:
    transformers = _hf()
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8,
        lr_scheduler_type="constant", logging_steps=1, save_steps=3, save_strategy="steps",
        report_to=[], use_cpu=True, seed=0, disable_tqdm=True, dataloader_num_workers=0)
    return transformers.Trainer(model=model, args=args, train_dataset=_Tokens(),
                                optimizers=(hyperfree.AGD(model, kinds=_kinds()), None), **kw)


def _train(trainer: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer.train(**kw)


def test_trainer_runs_agd_and_exposes_eta(tmp_path: Path) -> None:
    eta_log = _eta_log()
    trainer = _trainer(_model(0), tmp_path, 6, callbacks=[eta_log])
    _train(trainer)
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["learning_rate"] for h in history] == [1.0] * 6
    assert history[-1]["loss"] < history[0]["loss"]
    assert len(eta_log.etas) == 6 and all(e > 0 for e in eta_log.etas)
    assert len(set(eta_log.etas)) > 1
    group = trainer.optimizer.optimizer.param_groups[0]  # accelerate's wrapper, then AGD
    kinds = dict(zip(group["param_names"], group["kinds"]))
    # read from the forward: packed Q/K/V, and both inside a residual branch (one fork each) of
    # the one layer's stream of 3 terms (the embeddings, attention, MLP)
    assert Kind(*kinds["transformer.h.0.attn.c_attn.weight"]) == Kind("linear_in_out", blocks=3,
                                                                       forks=1, terms=3)
    assert Kind(*kinds["transformer.h.0.mlp.c_fc.weight"]) == Kind("linear_in_out", forks=1,
                                                                  terms=3)
    assert Kind(*kinds["transformer.wte.weight"]).forks == 0


def test_resume_from_checkpoint_equals_never_stopping(tmp_path: Path) -> None:
    straight = _trainer(_model(0), tmp_path / "straight", 6)
    _train(straight)
    first = _trainer(_model(0), tmp_path / "split", 3)
    _train(first)
    resumed_model = _model(1)  # a new process: other random draws before the restore
    resumed = _trainer(resumed_model, tmp_path / "split", 6)
    _train(resumed, resume_from_checkpoint=str(tmp_path / "split" / "checkpoint-3"))
    assert resumed.optimizer.optimizer.steps == 6
    assert torch.equal(flat(resumed_model), flat(straight.model))
