"""Data-parallel training across processes and machines, with torch.distributed.

`torchrun` starts one process per device and tells each, in environment variables, its rank
(RANK), the number of processes (WORLD_SIZE), its rank and the number of processes on its
machine (LOCAL_RANK, LOCAL_WORLD_SIZE), and where to meet (MASTER_ADDR/PORT). `Dist` reads
them, joins the process group (gloo on CPU, nccl on CUDA) and offers the few collective
operations the command line and the trainer need. For a single process every one of them is a
plain local call, so training has one code path.

`launch_command` builds the torchrun command behind `charrnn train --nproc N`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from charrnn.errors import CharRNNError

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Dist:
        """The place of this process among those torchrun started (a single process otherwise)."""
        env = os.environ if env is None else env
        if "WORLD_SIZE" not in env:
            return cls()
        try:
            world = int(env["WORLD_SIZE"])
            rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError:
            raise CharRNNError("WORLD_SIZE, RANK, LOCAL_RANK must be integers (they are set by torchrun)") from None
        if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world):
            raise CharRNNError(f"bad torchrun environment: RANK {rank}, WORLD_SIZE {world}, LOCAL_RANK {local_rank}")
        return cls(rank=rank, world=world, local_rank=local_rank, local_world=local_world)

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes checkpoints and metrics and shows progress."""
        return self.rank == 0

    def error(self, message: str, exit_code: int = 2, kind: type[CharRNNError] = CharRNNError) -> CharRNNError:
        """An error every process meets at the same point: rank 0 reports it, the others just end."""
        return kind(message, exit_code, elsewhere=not self.main)

    def start(self, device: torch.device) -> torch.device:
        """Join the process group; returns the device this process trains on."""
        if self.world == 1:
            self.device = device
            return device
        import torch.distributed as dist

        if device.type == "cuda":
            device, self.backend = torch.device("cuda", self.local_rank), "nccl"
            torch.cuda.set_device(device)
        elif device.type == "cpu":
            self.backend = "gloo"
        else:
            raise CharRNNError(
                f"distributed training runs on CPUs (gloo) or CUDA GPUs (nccl), not on {device.type}; pass --device cpu"
            )
        self.device = device
        if not dist.is_initialized():
            dist.init_process_group(self.backend)
        return device

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    # ------------------------------------------------------------------ collectives
    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all processes."""
        if self.world == 1:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every process' `obj` (small picklable things), in rank order, on every process."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and give its result, or raise its CharRNNError, everywhere.

        For what only rank 0 can or should do: reading the run folder, which may exist on the
        first machine only."""
        if self.world == 1:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        failure = None
        if self.main:
            try:
                box[0] = ("ok", fn())
            except CharRNNError as exc:
                box[0] = ("error", str(exc), exc.exit_code)
            except BaseException as exc:  # tell the others before dying, so they do not wait
                box[0], failure = ("error", f"rank 0 failed: {type(exc).__name__}: {exc}", 1), exc
        dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        if box[0][0] == "error":
            raise CharRNNError(box[0][1], box[0][2], elsewhere=not self.main)
        return box[0][1]

    def local_first(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the first process of each machine, then on the others (which then find
        its work done, e.g. a prepared corpus in the cache). An error anywhere stops all."""
        if self.world == 1:
            return fn()
        result, error, failure = None, None, None
        if self.local_rank == 0:
            try:
                result = fn()
            except CharRNNError as exc:
                error = (str(exc), exc.exit_code)
            except BaseException as exc:  # tell the others before dying, so they do not wait
                error, failure = (f"rank {self.rank} failed: {type(exc).__name__}: {exc}", 1), exc
        errors = [e for e in self.gather(error) if e is not None]
        if failure is not None:
            raise failure
        if errors:
            message, code = error or errors[0]
            raise CharRNNError(message, code, elsewhere=error is None)
        return result if self.local_rank == 0 else fn()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A hash of a model's weights, to check that every process holds the same ones."""
    h = hashlib.sha1()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def strip_option(args: list[str], name: str) -> tuple[list[str], str | None]:
    """`args` without `name VALUE` / `name=VALUE`, and the value (the last one given)."""
    out, value, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg == name and i + 1 < len(args):
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    return out, value


STARTED_WALL = "CHARRNN_STARTED_AT"  # when the user's command began (time.time()), for --time-budget


def launch_command(argv: list[str], nproc: int, cores: int, started_wall: float) -> tuple[list[str], dict[str, str]]:
    """torchrun's arguments (and environment additions) to run `charrnn ARGV` in `nproc` local
    processes: argv without --nproc. With --threads auto (the default) each process chooses its
    threads from its share of the cores (`cores // nproc` at most) and their load."""
    args, _ = strip_option(argv, "--nproc")
    _, given = strip_option(args, "--threads")
    threads = int(given) if given is not None and given.isdigit() else max(1, cores // nproc)
    torchrun = ["--standalone", "--nproc-per-node", str(nproc), "-m", "charrnn", *args]
    env = {"OMP_NUM_THREADS": str(threads), "CHARRNN_LAUNCHED_AS": json.dumps(argv), STARTED_WALL: repr(started_wall)}
    return torchrun, env


def command_started(started: float, environ=os.environ) -> float:
    """The time.monotonic() at which the user's command began: `started` (this process'), or
    earlier when a launcher that began earlier says so (`charrnn train --nproc`)."""
    try:
        launched = float(environ[STARTED_WALL])
    except (KeyError, ValueError):
        return started
    import time

    return min(started, time.monotonic() - max(0.0, time.time() - launched))
