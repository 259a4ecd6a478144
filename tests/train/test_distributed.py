"""Process-group plumbing: a single process needs no group; two gloo processes on the CPU
(loopback only) reduce, broadcast and gather, and DDP with the focal loss normalised by the
mean region count gives the single-process gradient of the whole batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from regionspot.devices import choose_device
from regionspot.processes import (
    ENV_VARIABLES,
    DistributedContext,
    LaunchError,
    all_gather_object,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown,
)
from regionspot.train.loss import sigmoid_focal_loss

WORLD = 2
SPLIT = (3, 7)  # uneven: rank 0 has 3 of the 10 regions, rank 1 has 7


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(sum(SPLIT), 6, generator=generator), torch.randint(0, 4, (sum(SPLIT),), generator=generator)


def model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))


def worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_distributed("cpu")
    try:
        results = collectives(ctx)
        results.update(data_parallel_step(ctx))
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        shutdown(ctx)


def collectives(ctx: DistributedContext) -> dict:
    local = torch.tensor([1.0, 2.0]) * (ctx.rank + 1)
    summed = all_reduce_sum(local, ctx)
    barrier(ctx)
    return {"ctx": (ctx.rank, ctx.world_size, ctx.backend, ctx.initialized, ctx.is_main, str(ctx.device)),
            "sum": summed, "input_after": local, "mean": all_reduce_mean(torch.tensor([ctx.rank]), ctx),
            "broadcast": broadcast_object({"seed": 1234} if ctx.rank == 0 else None, ctx),
            "gathered": all_gather_object(f"rank {ctx.rank}", ctx)}


def data_parallel_step(ctx: DistributedContext) -> dict:
    inputs, targets = batch()
    start = sum(SPLIT[: ctx.rank])
    inputs, targets = inputs[start: start + SPLIT[ctx.rank]], targets[start: start + SPLIT[ctx.rank]]
    net = nn.parallel.DistributedDataParallel(model())
    normalizer = all_reduce_mean(torch.tensor(float(len(targets))), ctx)  # global count / world size
    loss = sigmoid_focal_loss(net(inputs), targets, normalizer=normalizer)
    loss.backward()
    return {"grads": [p.grad for p in net.parameters()], "loss": all_reduce_mean(loss.detach(), ctx)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(free_port(), str(folder)), nprocs=WORLD, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]


def test_two_gloo_processes_all_reduce(two_process_results: list[dict]) -> None:
    for rank, result in enumerate(two_process_results):
        assert result["ctx"] == (rank, WORLD, "gloo", True, rank == 0, "cpu")
        assert torch.equal(result["sum"], torch.tensor([3.0, 6.0]))
        assert torch.equal(result["input_after"], torch.tensor([1.0, 2.0]) * (rank + 1))  # not in place
        assert torch.equal(result["mean"], torch.tensor([0.5]))
        assert result["broadcast"] == {"seed": 1234}
        assert result["gathered"] == ["rank 0", "rank 1"]


def test_data_parallel_gradient_equals_single_process(two_process_results: list[dict]) -> None:
    inputs, targets = batch()
    net = model()
    loss = sigmoid_focal_loss(net(inputs), targets)  # the whole batch, normalised by its 10 regions
    loss.backward()
    for result in two_process_results:
        torch.testing.assert_close(result["loss"], loss.detach())
        for theirs, ours in zip(result["grads"], net.parameters(), strict=True):
            torch.testing.assert_close(theirs, ours.grad, rtol=1e-5, atol=1e-7)


def test_single_process_needs_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.device) == (0, 1, None, torch.device("cpu"))
    assert ctx.is_main and not ctx.initialized and not dist.is_initialized()
    tensor = torch.tensor([2.0, 4.0])
    assert torch.equal(all_reduce_sum(tensor, ctx), tensor) and torch.equal(all_reduce_mean(tensor, ctx), tensor)
    assert broadcast_object("x", ctx) == "x" and all_gather_object(3, ctx) == [3]
    barrier(ctx)
    shutdown(ctx)
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1: still no group
    assert init_distributed("cpu").backend is None


HINT = ("start data-parallel training with 'torchrun --nproc_per_node={n} -m regionspot train CONFIG', which sets "
        "all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, or unset WORLD_SIZE to train in one process")
BAD_LAUNCHES = {  # the environment -> the message
    "WORLD_SIZE by hand": ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT "
                           "are not: this is not a torchrun launch; " + HINT.format(n=2)),
    "one variable missing": ({"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost"},
                             "WORLD_SIZE=4 is set but MASTER_PORT is not: this is not a torchrun launch; "
                             + HINT.format(n=4)),
    "not a number": ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number >= 0; " + HINT.format(n="N")),
    "a rank outside the world": ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "localhost",
                                  "MASTER_PORT": "29500"},
                                 "RANK=2 and LOCAL_RANK=0 do not fit WORLD_SIZE=2; " + HINT.format(n=2)),
    "a bad port": ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "localhost",
                    "MASTER_PORT": "http"}, "MASTER_PORT='http' is not a whole number >= 0; " + HINT.format(n="N")),
}


@pytest.mark.parametrize("case", sorted(BAD_LAUNCHES))
def test_a_launch_without_torchrun_is_one_clear_error(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    environment, message = BAD_LAUNCHES[case]
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(LaunchError) as caught:
        init_distributed("cpu")
    assert str(caught.value) == message
    assert isinstance(caught.value, RuntimeError) and not dist.is_initialized()


@pytest.mark.parametrize("command", ["eval", "predict-batch"])
def test_the_launch_hint_names_the_command_that_was_run(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LaunchError) as caught:
        init_distributed("cpu", command=command)
    assert str(caught.value) == (
        "WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not: this is not a torchrun launch; "
        f"start a data-parallel {command} with 'torchrun --nproc_per_node=2 -m regionspot {command} ...', which sets "
        f"all of RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, or unset WORLD_SIZE to {command} in one "
        "process")


@pytest.mark.slow
def test_a_group_that_cannot_be_joined_is_a_launch_error(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()  # nobody listens there: rank 1 waits for a rank 0 that never comes
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", str(port))):
        monkeypatch.setenv(name, value)
    with pytest.raises(LaunchError, match=rf"^rank 1 of 2 could not join the process group at 127.0.0.1:{port} "
                                          r"\(.*timed out.*\); start data-parallel training with 'torchrun"):
        init_distributed("cpu", timeout_minutes=0.02)
    assert not dist.is_initialized()


def test_choose_device() -> None:
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_device("cuda")
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_device("cuda:1")
