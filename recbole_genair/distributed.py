"""RecBole's torch.distributed path on CPUs too: the process group, and evaluation gathered over ranks.

RecBole 1.2.1 starts its process group with NCCL on one GPU per rank and averages each rank's metrics
weighted by its users. Here a rank without CUDA joins with gloo, and evaluation gathers the ranks'
per-user rows (top-k, targets for the group metrics) so that every rank computes the metrics of all
users at once: the same numbers as one process, for group metrics too, and the same early-stopping
decision on every rank. `DistributedSampler` pads the last rows with repeated users; those repeats are
dropped before the metrics.
"""
import datetime

import torch
import torch.distributed as dist

# Rows per evaluated user (RecBole's, and ours for the group metrics).
PER_USER_KEYS = ("rec.topk", "rec.meanrank", "rec.score", "rec.items", "data.label", "rec.target_items")


def use_cuda(final):
    """Whether a distributed run of these settings uses NCCL on GPUs (RecBole's path) rather than gloo on CPUs."""
    backend = final.get("dist_backend") or "auto"
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"dist_backend must be auto, gloo or nccl, not {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("dist_backend: nccl needs CUDA, which this machine lacks; use dist_backend: gloo (or auto)")
    return backend == "nccl" or (backend == "auto" and torch.cuda.is_available() and str(final.get("gpu_id")) != "")


def init_cpu_process_group(final):
    """Join the process group with gloo, as RecBole's `_init_device` does with NCCL; settings as RecBole's."""
    rank = final["local_rank"] + (final.get("offset") or 0)
    world = final["world_size"]
    if not dist.is_initialized():
        dist.init_process_group(
            backend="gloo", rank=rank, world_size=world, init_method=f"tcp://{final['ip']}:{final['port']}",
            timeout=datetime.timedelta(seconds=float(final.get("dist_timeout") or 600)),
        )
    final["device"] = torch.device("cpu")
    final["single_spec"] = False
    if final["local_rank"] != 0:  # as RecBole: only the first process of a host logs
        final["state"] = "error"
        final["show_progress"] = False
        final["verbose"] = False


def _collective_device():
    """Where collectives need their tensors: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_rows(tensor):
    """Every rank's `tensor` (same trailing shape, any number of rows), as a list in rank order, on the CPU."""
    device = _collective_device()
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.size(0)], device=device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.size(0)] = tensor.to(device)
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return [g[: int(s.item())].cpu() for g, s in zip(gathered, sizes)]


def gather_eval_struct(struct, sample_size):
    """Replace the per-user rows of RecBole's `DataStruct` by all ranks' rows, without the sampler's repeats.

    Rank r's i-th row is the sampler's padded position i * world + r; positions >= `sample_size` repeat users.
    """
    world = dist.get_world_size()
    for key in PER_USER_KEYS:
        if key not in struct:
            continue
        parts = _gather_rows(struct.get(key).cpu())
        kept = []
        for r, part in enumerate(parts):
            positions = torch.arange(part.size(0)) * world + r
            kept.append(part[positions < sample_size])
        rows = torch.cat(kept)
        order = torch.cat([torch.arange(p.size(0)) * world + r for r, p in enumerate(kept)]).argsort()
        struct.set(key, rows[order])  # the users in the loader's order, as one process sees them
    return struct


def broadcast_value(value):
    """Rank 0's `value` (any picklable object) on every rank."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
