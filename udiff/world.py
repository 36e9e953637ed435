"""Which process of a torchrun launch this is, from the environment alone (stdlib only: the command line reads
it before anything imports torch, so that `--help` and shell completion stay fast). udiff/distributed.py
does the rest: the process group, sharding and gathers."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import UdiffError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run: rank in 0 .. size - 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes outputs, prints results and shows progress."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UdiffError(f"environment variable {name}={text!r}: not an integer; start several processes with "
                         "torchrun, which sets it") from None


def world() -> World:
    """This process's World, from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (one process without them)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise UdiffError(f"RANK={rank}, WORLD_SIZE={size}: need 0 <= RANK < WORLD_SIZE; start several processes "
                         "with torchrun, which sets them")
    return World(rank, size, _env_int("LOCAL_RANK", rank))
