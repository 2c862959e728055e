"""Several processes, one job: a fixed split of the inputs, and the index of
each process from its flags or its cluster scheduler.

Input i of the stream belongs to process `i mod num_processes`. Processes
never talk to each other: no collective crosses them (images are
independent), whole outputs come from atomic writes, resuming from skipping
the outputs that exist, and the job's summary from per-process parts
(`summary.py`). So any process can die and be run again alone with the same
flags; the scheduler's own retries (SLURM requeue, a Kubernetes Indexed Job's
per-index restarts) are enough.

`share_from` is called at a script's edge with `os.environ`: the library
itself never reads the environment.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from dream_jax.errors import UserError

# Kubernetes gives a pod its index (JOB_COMPLETION_INDEX) but not the Job's
# `completions`: the manifest passes it in this variable (or --num_processes).
NUM_PROCESSES_ENV = "DREAM_JAX_NUM_PROCESSES"


@dataclasses.dataclass(frozen=True)
class Share:
    process_id: int = 0
    num_processes: int = 1

    def owns(self, index: int) -> bool:
        return index % self.num_processes == self.process_id


def _int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"${name} must be an integer, got {value!r}") from None


def scheduler_share(environ: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(process_id, num_processes) from a SLURM job array or a Kubernetes
    Indexed Job, None where the environment does not say."""
    task = _int(environ, "SLURM_ARRAY_TASK_ID")
    if task is not None:
        count = _int(environ, "SLURM_ARRAY_TASK_COUNT")
        first = _int(environ, "SLURM_ARRAY_TASK_MIN") or 0
        step = _int(environ, "SLURM_ARRAY_TASK_STEP") or 1
        if count is None:
            raise UserError("$SLURM_ARRAY_TASK_ID is set but $SLURM_ARRAY_TASK_COUNT is not")
        index, rest = divmod(task - first, step)
        if rest or not 0 <= index < count:
            raise UserError(f"SLURM array task {task} is not in a range {first}-"
                            f"{first + (count - 1) * step}:{step} of {count} tasks; "
                            f"use --array=A-B[:STEP] (a list of task ids cannot be split)")
        return index, count
    index = _int(environ, "JOB_COMPLETION_INDEX")
    return index, _int(environ, NUM_PROCESSES_ENV)


def share_from(num_processes: int | None, process_id: int | None,
               environ: Mapping[str, str]) -> Share:
    """This process's share: each value from its flag, else from the scheduler's
    environment; neither, one process."""
    env_id, env_count = scheduler_share(environ)
    process_id = env_id if process_id is None else process_id
    num_processes = env_count if num_processes is None else num_processes
    if process_id is None and num_processes is None:
        return Share()
    if num_processes is None:
        raise UserError(f"process {process_id} of how many? pass --num_processes=N "
                        f"(or set ${NUM_PROCESSES_ENV})")
    if num_processes < 1:
        raise UserError(f"--num_processes must be >= 1, got {num_processes}")
    if process_id is None:
        if num_processes == 1:
            return Share()
        raise UserError(f"--num_processes={num_processes} needs --process_id=I "
                        f"(or a scheduler's index: $SLURM_ARRAY_TASK_ID, $JOB_COMPLETION_INDEX)")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process_id must be in 0..{num_processes - 1}, got {process_id}")
    return Share(process_id, num_processes)
