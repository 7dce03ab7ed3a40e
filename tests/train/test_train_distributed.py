"""DistributedDataParallel: 2 CPU processes (gloo, 127.0.0.1, free port) training AGD on a
BatchNorm-free FCN end with the same weights and metrics as one process on the same global
batch; plus torchrun env parsing."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from _train_helpers import ddp_worker, tiny_config, tiny_image_bundle

from hyperfree.train import dist_from_env, train


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_single_process(tmp_path: Path) -> None:
    steps = 2
    torch.set_num_threads(1)
    # single process first: its imports (torch.optim pulls in torch._dynamo, seconds) are then
    # inherited by the forked ranks instead of being paid again in each of them
    single = train(tiny_config(epochs=1, limit_batches=steps, train_bs=32),
                   data=tiny_image_bundle())
    out = tmp_path / "rank0.pt"
    mp.start_processes(ddp_worker, args=(2, _free_port(), steps, str(out)), nprocs=2, join=True,
                       start_method="fork")
    ddp = torch.load(out, weights_only=True)
    for name, w in single.model.state_dict().items():
        torch.testing.assert_close(ddp["weights"][name], w, rtol=1e-5, atol=1e-6)
    moved = train(tiny_config(epochs=1, limit_batches=1, train_bs=32), data=tiny_image_bundle())
    assert not torch.allclose(moved.model.layers[0].weight, single.model.layers[0].weight)
    a, b = ddp["records"][0], single.records[0]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "eta_mean", "eta_max"):
        assert a[key] == pytest.approx(b[key], rel=1e-5), key


def test_dist_from_env_reads_torchrun_variables() -> None:
    assert dist_from_env({}) is None
    ctx = dist_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert ctx is not None and (ctx.rank, ctx.world_size, ctx.enabled) == (2, 4, True)
    with pytest.raises(ValueError, match="RANK=5"):
        dist_from_env({"WORLD_SIZE": "2", "RANK": "5"})
