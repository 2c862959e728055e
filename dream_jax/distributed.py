"""Several processes, one job: `jax.distributed`, and a fixed split of the inputs.

Each process dreams the inputs whose stream index is `process_id` modulo
`num_processes`, on its own devices: images differ in size, so processes do
not wait for each other batch by batch, and a process's share never depends
on timing. When a process dies jax's coordination service takes the job
down; the job rerun with the same flags finds the finished outputs and dreams
the rest. The runtime joins the processes for the end of the job: a
barrier across all devices, after which process 0 merges the summaries.
On CPU the barrier's collectives need gloo.
"""
from __future__ import annotations

import dataclasses
import re

import jax

from dream_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Share:
    process_id: int = 0
    num_processes: int = 1

    def owns(self, index: int) -> bool:
        return index % self.num_processes == self.process_id


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None) -> Share:
    """Join the job the flags describe (before any other jax call); no flags, one process."""
    if coordinator_address is None and num_processes in (None, 1) and process_id in (None, 0):
        return Share()
    if coordinator_address is None or num_processes is None or process_id is None:
        raise UserError("--coordinator_address, --num_processes and --process_id go together")
    if not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", coordinator_address):
        raise UserError(f"--coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    if num_processes < 1:
        raise UserError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process_id must be in 0..{num_processes - 1}, got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only CPU reads it
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return Share(process_id, num_processes)


def barrier(name: str) -> None:
    """Wait until every process reaches `name` (a collective over all devices)."""
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
