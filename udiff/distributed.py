"""Several processes under torchrun: the process group, which work is this process's, results gathered in order.

`torchrun --nproc-per-node N -m udiff CMD ...` starts N copies of the command with RANK, WORLD_SIZE and
LOCAL_RANK in their environment. A command reads them with `world()`, calls `start(device)` once its device is
known (NCCL on CUDA, gloo on the CPU), splits its work with `batches` (items) or `shard` (rows of one training
batch), and `gather`s the results back in order on rank 0, which alone writes files and prints.

Items are split in whole batches of the one-process run: the run of B items in batches of b is cut into the
same ceil(B/b) batches, and rank r takes a contiguous block of them. Every rank therefore computes exactly
what one process computes for those batches (the same shapes, the same per-item seeds), and the result in
order is that of one process, also where a computation couples the items of a batch (an adaptive ODE step
shared by the batch). With fewer batches than ranks, the ranks past the last batch have nothing to do.
"""

from __future__ import annotations

import torch

from .world import World, world  # noqa: F401  (re-exported: distributed.World, distributed.world)


def start(device) -> World:
    """Join the process group of a torchrun launch (once): NCCL on CUDA, gloo on the CPU. One process: no-op."""
    w = world()
    if w.size == 1:
        return w
    import torch.distributed as dist

    if not dist.is_initialized():
        dev = torch.device(device)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            dist.init_process_group("nccl", device_id=dev)
        else:
            dist.init_process_group("gloo")
    return w


def stop():
    """Leave the process group, if this process joined one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _comm_device() -> torch.device:
    """Where collectives take their tensors: the current CUDA device for NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def blocks(n: int, parts: int) -> list[tuple[int, int]]:
    """n things cut into `parts` contiguous blocks (start, stop) whose sizes differ by at most one."""
    q, r = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + q + (1 if i < r else 0)
        out.append((start, stop))
        start = stop
    return out


def batches(n: int, batch_size: int, w: World | None = None) -> list[tuple[int, int]]:
    """This rank's batches (start, stop) of n items in batches of `batch_size`, as one process would cut them."""
    w = w or world()
    cuts = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
    a, b = blocks(len(cuts), w.size)[w.rank]
    return cuts[a:b]


def shard(n: int, w: World | None = None) -> slice:
    """This rank's rows of a batch of n rows (training: each rank its part of the global batch)."""
    w = w or world()
    a, b = blocks(n, w.size)[w.rank]
    return slice(a, b)


def _padded(x: torch.Tensor, rows: int) -> torch.Tensor:
    pad = torch.zeros((rows - x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad]) if rows > x.shape[0] else x


def _counts(x: torch.Tensor) -> list[int]:
    import torch.distributed as dist

    dev = _comm_device()
    n = torch.tensor([x.shape[0]], dtype=torch.int64, device=dev)
    out = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(out, n)
    return [int(c) for c in out]


def all_gather(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (dim 0; their counts may differ, zero included) concatenated in rank order, on every
    rank, on x's device. One process: x itself."""
    if not _active():
        return x
    import torch.distributed as dist

    counts = _counts(x)
    dev = _comm_device()
    local = _padded(x.to(dev), max(counts)).contiguous()
    out = [torch.empty_like(local) for _ in counts]
    dist.all_gather(out, local)
    return torch.cat([o[:c] for o, c in zip(out, counts)]).to(x.device)


def gather(x: torch.Tensor) -> torch.Tensor | None:
    """Every rank's rows concatenated in rank order on rank 0 (on x's device); None on the other ranks."""
    if not _active():
        return x
    import torch.distributed as dist

    counts = _counts(x)
    dev = _comm_device()
    local = _padded(x.to(dev), max(counts)).contiguous()
    main = dist.get_rank() == 0
    out = [torch.empty_like(local) for _ in counts] if main else None
    dist.gather(local, out, dst=0)
    return torch.cat([o[:c] for o, c in zip(out, counts)]).to(x.device) if main else None


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of x over the ranks, on every rank (x's device and dtype). One process: x."""
    if not _active():
        return x
    import torch.distributed as dist

    y = x.to(_comm_device()).clone()
    dist.all_reduce(y)
    return y.to(x.device)


def average_gradients(params) -> None:
    """Replace each parameter's gradient by its mean over the ranks (a missing gradient counts as zero), in
    one flat all-reduce per dtype."""
    if not _active():
        return
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    size = dist.get_world_size()
    by_dtype: dict[torch.dtype, list] = {}
    for p in params:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dev = flat.device
        flat = flat.to(_comm_device())
        dist.all_reduce(flat)
        flat = flat.to(dev).div_(size)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
            offset += n


def barrier() -> None:
    if _active():
        import torch.distributed as dist

        dist.barrier()
