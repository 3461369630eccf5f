"""This process's place in a ``torchrun`` job, and the few collectives training needs.

DistributedDataParallel (nccl on GPUs, gloo on CPUs): each process takes a GPU of its own, the ranks
read different windows, rank 0 alone writes, and every process compares the dataset's fingerprint
before training, so that nodes which prepared their own datasets never train on different data.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from smallgpt import hardware
from smallgpt.dataset import Dataset
from smallgpt.errors import UserError

# the model's only buffers are rotary tables, the same on every rank: DDP need not sync them each step
# (the argument was renamed in torch 2.13; the old name warns there)
NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                  inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
                  else {"broadcast_buffers": False})


@dataclass
class Proc:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_gpus_per_node(local_processes: int, gpus: int) -> None:
    """Refuse more processes on a node than the GPUs they all see: two ranks would share a GPU, which NCCL
    refuses at the first collective with a traceback from deep inside it."""
    if local_processes > gpus:
        raise UserError(f"{local_processes} processes on this node but {gpus} GPU(s): two ranks would share a GPU, "
                        f"which NCCL refuses; start at most {gpus} a node (torchrun --nproc_per_node={gpus}), or train "
                        "on the CPU with --train.device=cpu (gloo)")


def process_and_device(device_name: str) -> tuple[Proc, torch.device]:
    """This process's place in a torchrun job (env RANK, WORLD_SIZE, LOCAL_RANK) and its device.

    Under torchrun each process takes GPU ``local_rank`` of the node's, and more processes on a node than
    GPUs are refused (:func:`check_gpus_per_node`; torchrun says how many in LOCAL_WORLD_SIZE).  Where a
    launcher chose each process's GPUs itself (CUDA_VISIBLE_DEVICES set, e.g. one GPU each), a process
    takes ``local_rank`` modulo the GPUs it sees.  The process group is joined later
    (:func:`join_process_group`), once the dataset is ready, so that a long first preparation cannot run
    into a collective's timeout.
    """
    device = hardware.pick_device(device_name)
    proc = Proc()
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        proc = Proc(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), int(os.environ["WORLD_SIZE"]))
        if device.type == "cuda":
            gpus = torch.cuda.device_count()
            if "CUDA_VISIBLE_DEVICES" not in os.environ:
                check_gpus_per_node(max(int(os.environ.get("LOCAL_WORLD_SIZE", "0")), proc.local_rank + 1), gpus)
            device = torch.device("cuda", proc.local_rank % gpus)
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())
        torch.cuda.set_device(device)  # so that kernels and allocations of this process land on it
    return proc, device


def join_process_group(proc: Proc, device: torch.device) -> None:
    """Join the process group torchrun set up: nccl on GPUs, gloo on CPUs.  On CUDA the process's GPU is named
    (``device_id``): NCCL then binds the group to it at once, instead of guessing the device at the first
    collective (and warning that a wrong guess can hang)."""
    if proc.distributed and not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")


def local_accumulation(accum: int, world_size: int) -> int:
    """Micro-batches per process for ``accum`` micro-batches per step over ``world_size`` processes.

    ``gradient_accumulation_steps`` counts the micro-batches of all processes together, so the global
    batch is the same on 1 or 8 GPUs.  When it does not divide over the processes (the default of 1 on
    2 GPUs), each process takes the smallest equal share that covers it: ceil(accum / world_size), and
    the global batch grows to that times world_size (said at start).  Nothing is refused.
    """
    return -(-accum // world_size)


def all_sum(t: torch.Tensor, proc: Proc) -> torch.Tensor:
    if proc.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def check_same_data(ds: Dataset, proc: Proc, device: torch.device) -> None:
    """Refuse to train when the processes opened different datasets (nodes with local disks that built
    their own from a different corpus or Python: the same token id would mean different text)."""
    if not proc.distributed:
        return
    mine = int(ds.fingerprint[:15], 16)  # 60 bits of the fingerprint fit an int64
    low, high = (torch.tensor([mine], device=device) for _ in range(2))
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise UserError(f"the processes' datasets differ (this one, rank {proc.rank}: {ds.dir}, fingerprint "
                        f"{ds.fingerprint}); prepare the dataset once on storage all nodes share, or from the same "
                        "corpus with the same Python on every node")
