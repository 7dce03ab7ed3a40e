r"""AGD on sharded parameters (FSDP2 ``fully_shard`` / DTensor ``Shard(0)``): global norms
from local shards with one all-reduce per step, Newton–Schulz on whole matrices.

``docs/agd-speed.md`` has the design and the measurements. In short:

* every parameter is a DTensor sharded along dim 0 over one process group (torch.chunk rows:
  rank ``r`` holds rows ``[r·c, min((r+1)·c, n))``, ``c = ⌈n/W⌉``, possibly none); the step
  runs on ``to_local()`` views and its in-place updates write through to the shards;
* every quantity of the step is a sum over elements, so each rank computes the partial sums of
  the cells it holds a piece of (:mod:`._plan`: the same cells, in the same order, on every
  rank) into one flat vector, and ONE ``all_reduce`` makes them global before any square root
  (embedding rows are never split, so their norms are final locally);
* the spectral family needs whole matrices: ``"owner"`` (default; Muon's distributed scheme)
  sends each rank's rows of every matrix to the rank that owns the matrix (one
  ``all_to_all``), the owner orthogonalises it, and a second ``all_to_all`` returns each rank
  its rows of the direction — every rank runs Newton–Schulz on ~1/W of the matrices;
  ``"gather"`` all-gathers every matrix (one collective) and every rank orthogonalises all of
  them;
* with momentum, the finite flag of the gradients is summed over the ranks first (one more
  one-element all-reduce), so every rank takes or skips the same momentum step.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ._kernels import stack_matrices, unstack_matrices
from ._plan import Plan
from .newton_schulz import batched_dot, ns_dtype, orthogonalize
from .cells import LocalRows, MatrixView
from .rules import rule_of

__all__ = ["is_sharded", "ShardedStep", "POLAR_SCHEMES", "init_rows_"]

POLAR_SCHEMES = ("owner", "gather")


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    return DTensor


def is_sharded(params: list[Tensor]) -> bool:
    """Whether any of ``params`` is a DTensor."""
    DTensor = _dtensor_type()
    return DTensor is not None and any(isinstance(p, DTensor) for p in params)


def _rows(name: str, p: Any) -> tuple[LocalRows, Any]:
    """The rows of ``p`` (a DTensor) held here and the process group they are split over."""
    from torch.distributed.tensor import Replicate, Shard

    mesh, placements = p.device_mesh, p.placements
    shard_dims = [d for d, pl in enumerate(placements) if not isinstance(pl, Replicate)]
    if len(shard_dims) > 1 or any(not (isinstance(placements[d], Shard)
                                       and placements[d].dim == 0) for d in shard_dims):
        raise ValueError(f"AGD supports parameters sharded along dim 0 over one mesh dim "
                         f"(FSDP2's default), not {name!r} with placements {placements}")
    n = p.shape[0]
    local = p.to_local()
    if not shard_dims:
        return LocalRows(0, n, n), None
    d = shard_dims[0]
    world, rank = mesh.size(d), mesh.get_local_rank(d)
    chunk = -(-n // world)
    start = min(rank * chunk, n)
    count = max(min(chunk, n - start), 0)
    if local.shape[0] != count:
        raise ValueError(f"AGD: the local shard of {name!r} has {local.shape[0]} rows, expected "
                         f"{count} (torch.chunk of {n} rows over {world} ranks)")
    return LocalRows(start, count, n), mesh.get_group(d)


class ShardedStep:
    """The collectives of one optimiser's sharded step: built once from the DTensor params."""

    def __init__(self, names: list[str], params: list[Tensor], polar: str = "owner"):
        if polar not in POLAR_SCHEMES:
            raise ValueError(f"AGD polar scheme must be one of {POLAR_SCHEMES}, got {polar!r}")
        DTensor = _dtensor_type()
        rows, groups = [], set()
        for name, p in zip(names, params):
            if not isinstance(p, DTensor):
                raise ValueError(f"AGD: parameter {name!r} is a plain tensor while others are "
                                 "sharded DTensors; shard every parameter (fully_shard the "
                                 "root module) or give it to another optimiser")
            r, g = _rows(name, p)
            rows.append(r)
            if g is not None:
                groups.add(g)
        if len(groups) > 1:
            raise ValueError("AGD: the parameters are sharded over different process groups")
        self.group = groups.pop() if groups else None
        self.world = dist.get_world_size(self.group) if self.group is not None else 1
        self.rank = dist.get_rank(self.group) if self.group is not None else 0
        self.rows = rows
        self.scheme = polar
        self.collectives = 0  # calls issued so far (tests count them)

    # ------------------------------------------------------------------ the reduce hook
    def reduce(self, flat: Tensor) -> Tensor:
        """Sum ``flat`` over the shard group, in place (ONE all-reduce)."""
        if self.group is not None:
            self.collectives += 1
            dist.all_reduce(flat, group=self.group)
        return flat

    # ------------------------------------------------------------------ Newton–Schulz
    def polar_for(self, plan: Plan, local_rows: list[LocalRows]) -> Any:
        """The Newton–Schulz of ``plan``'s polar tensors (``local_rows``: of each of the plan's
        tensors) over the shards, as the step's
        ``polar(us, host, ns_steps) -> (directions of the local rows, ⟨u, D⟩ of every matrix
        in plan order, counted once: the reduce hook sums them to the global values)``."""
        order = [i for g in plan.polar for i in g.params]
        view = {i: v for g in plan.polar for i, v in zip(g.params, g.views)}
        rows = {i: local_rows[i] for i in order}
        owner = _owners(order, view, self.world)

        def polar(us: list[Tensor], host: bool, ns_steps: int
                  ) -> tuple[dict[int, Tensor], Tensor]:
            if self.group is None or self.world == 1:
                full, owned = {i: us[i] for i in order}, set(order)
            elif self.scheme == "gather":
                full = self._gather(us, order, rows)
                owned = set(order) if self.rank == 0 else set()
            else:
                full = self._to_owners(us, order, owner, rows)
                owned = {i for i in order if owner[i] == self.rank}
            acc = plan.consts.sq_w.dtype
            directions: dict[int, Tensor] = {}
            dots = []
            for group in plan.polar:
                mine = [i for i in group.params if i in full]
                D, d = _orthogonalize([full[i] for i in mine], [view[i] for i in mine], host,
                                      ns_steps, acc)
                start = 0
                for i in group.params:
                    n = view[i].n
                    if i in full:
                        directions[i] = D[mine.index(i)]
                        dots.append(d[start:start + n] * (1.0 if i in owned else 0.0))
                        start += n
                    else:
                        dots.append(torch.zeros(n, dtype=acc, device=us[i].device))
            if self.group is not None and self.world > 1:
                directions = self._local_rows(directions, us, order, owner, rows)
            return directions, torch.cat(dots)

        return polar

    def _padded(self, t: Tensor, r: LocalRows) -> Tensor:
        """The local rows ``r`` of a parameter padded to ⌈n/W⌉ rows, flattened."""
        chunk = -(-r.total // self.world)
        out = t.new_zeros((chunk, *t.shape[1:]))
        out[:r.count] = t
        return out.reshape(-1)

    def _gather(self, us: list[Tensor], order: list[int], rows: dict[int, LocalRows]
                ) -> dict[int, Tensor]:
        send = torch.cat([self._padded(us[i], rows[i]) for i in order])
        out = send.new_empty(self.world * send.numel())
        self.collectives += 1
        dist.all_gather_into_tensor(out, send, group=self.group)
        out = out.view(self.world, send.numel())
        full, off = {}, 0
        for i in order:
            n = self._padded_numel(us[i], rows[i])
            full[i] = out[:, off:off + n].reshape(-1, *us[i].shape[1:])[:rows[i].total]
            off += n
        return full

    def _padded_numel(self, t: Tensor, r: LocalRows) -> int:
        return -(-r.total // self.world) * math.prod(t.shape[1:])

    def _to_owners(self, us: list[Tensor], order: list[int], owner: dict[int, int],
                   rows: dict[int, LocalRows]) -> dict[int, Tensor]:
        """all_to_all: every rank sends its rows of matrix i to owner[i]; returns the full
        matrices this rank owns."""
        sizes = [0] * self.world
        parts = []
        for dest in range(self.world):
            for i in order:
                if owner[i] == dest:
                    parts.append(self._padded(us[i], rows[i]))
                    sizes[dest] += parts[-1].numel()
        send = torch.cat(parts)
        mine = [i for i in order if owner[i] == self.rank]
        per_src = sum(self._padded_numel(us[i], rows[i]) for i in mine)
        recv = send.new_empty(per_src * self.world)
        self.collectives += 1
        dist.all_to_all_single(recv, send, [per_src] * self.world, sizes, group=self.group)
        recv = recv.view(self.world, per_src)
        full, off = {}, 0
        for i in mine:
            n = self._padded_numel(us[i], rows[i])
            full[i] = recv[:, off:off + n].reshape(-1, *us[i].shape[1:])[:rows[i].total]
            off += n
        return full

    def _local_rows(self, directions: dict[int, Tensor], us: list[Tensor], order: list[int],
                    owner: dict[int, int], rows: dict[int, LocalRows]) -> dict[int, Tensor]:
        """Each rank's rows of every direction: slices of the full ones (gather) or a second
        all_to_all from the owners (owner)."""
        if self.scheme == "gather":
            return {i: directions[i].narrow(0, rows[i].start, rows[i].count) for i in order}
        mine = [i for i in order if owner[i] == self.rank]
        parts = []
        for dest in range(self.world):  # rows of dest, padded, of every matrix I own
            for i in mine:
                r = rows[i]
                chunk = -(-r.total // self.world)
                lo = min(dest * chunk, r.total)
                piece = directions[i][lo:lo + chunk]
                pad = piece.new_zeros((chunk, *piece.shape[1:]))
                pad[:piece.shape[0]] = piece
                parts.append(pad.reshape(-1))
        per_dest = sum(self._padded_numel(us[i], rows[i]) for i in mine)
        send = torch.cat(parts) if parts else us[order[0]].new_empty(0)
        recv_sizes = [sum(self._padded_numel(us[i], rows[i]) for i in order if owner[i] == src)
                      for src in range(self.world)]
        recv = send.new_empty(sum(recv_sizes))
        self.collectives += 1
        dist.all_to_all_single(recv, send, recv_sizes, [per_dest] * self.world,
                               group=self.group)
        out, off = {}, 0
        for src in range(self.world):
            for i in order:
                if owner[i] != src:
                    continue
                n = self._padded_numel(us[i], rows[i])
                out[i] = recv[off:off + n].view(-1, *us[i].shape[1:])[:rows[i].count]
                off += n
        return out

def _owners(order: list[int], view: dict[int, MatrixView], world: int) -> dict[int, int]:
    """Owner rank of every polar tensor: greedy by Newton–Schulz cost (largest first)."""
    load = [0.0] * world
    owner = {}
    cost = {i: view[i].n * view[i].d_out * view[i].d_in * min(view[i].d_out, view[i].d_in)
            for i in order}
    for i in sorted(order, key=lambda j: (-cost[j], j)):
        r = min(range(world), key=lambda k: (load[k], k))
        owner[i] = r
        load[r] += cost[i]
    return owner


def _orthogonalize(fulls: list[Tensor], views: list[MatrixView], host: bool, ns_steps: int,
                   acc: torch.dtype) -> tuple[list[Tensor], Tensor]:
    """Newton–Schulz of whole tensors (same matrix shape); their directions in the tensors'
    layout and ⟨u, D⟩ of every matrix."""
    if not fulls:
        return [], torch.zeros(0, dtype=acc)
    mats = torch.cat([stack_matrices(t, v) for t, v in zip(fulls, views)])
    bad = None
    if not host:
        bad = ~torch.isfinite(torch.linalg.vector_norm(mats, dtype=acc))
        mats = torch.nan_to_num(mats, nan=0.0, posinf=0.0, neginf=0.0)
    D = orthogonalize(mats, steps=ns_steps, dtype=ns_dtype(mats.dtype))
    dots = batched_dot(mats, D, acc)
    if bad is not None:
        dots = torch.where(bad, math.nan, dots)
    out, start = [], 0
    for t, v in zip(fulls, views):
        out.append(unstack_matrices(D[start:start + v.n], v, t.shape))
        start += v.n
    return out, dots


@torch.no_grad()
def init_rows_(p: Tensor, rows: LocalRows, kind: Any, generator: torch.Generator | None,
               padding_idx: int | None) -> None:
    """AGD's initialisation of a sharded parameter: the whole tensor drawn on every rank (the
    same draw when ``generator`` is seeded alike), this rank's rows written to its shard."""
    local = p.to_local()
    full = torch.empty(tuple(p.shape), dtype=local.dtype, device=local.device)
    rule_of(kind).init_(full, kind, generator, padding_idx)
    local.copy_(full.narrow(0, rows.start, rows.count))
