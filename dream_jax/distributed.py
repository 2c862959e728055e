"""Several processes, one job: `jax.distributed` for the agreement, a fixed
split of the inputs for the work.

Each process dreams the inputs whose stream index is `process_id` modulo
`num_processes`, on its own devices only: no collective ever crosses
processes, so after start-up a process needs its peers for nothing but the
end of the job (process 0 merges the summaries). The job is joined through
jax's coordination service (hosted by process 0) in its *recoverable* mode
(`jax_enable_recoverability`): a task that dies does not take the others
down, and a task restarted with the same `--process_id` joins the running
job as a new incarnation. So:

- a process other than 0 dies: the others go on; process 0, once its own
  share is done, waits (up to `peer_timeout`) for the dead one to be
  restarted with the same flags, which dreams the rest of its share;
- process 0 dies: the coordination service dies with it, and jax's client in
  every other process terminates that process (its heartbeat/error callback
  is fatal; jaxlib 0.10.2's `missed_heartbeat_callback`, which could replace
  it, crashes with std::bad_cast). Restart the processes with the same flags.
- a process restarted when the job is gone (no coordinator at the address, or
  not every process joined within `join_timeout`) dreams its share alone and
  writes only its own summary: the split never depends on the job, so
  outputs are the same either way. (A process other than 0 that reaches a
  coordinator which then gives up on registration is terminated by jax, as
  above; run it again and it finds no coordinator.)

This uses jax's `DistributedRuntimeService`/`Client` the way
`jax.distributed.initialize` does (its `global_state`), because
`initialize` neither lets a failed join be survived nor exposes the
recoverable flag per call.
"""
from __future__ import annotations

import dataclasses
import json
import re
import socket
import sys
import threading
import time

import jax

from dream_jax.errors import UserError

HEARTBEAT_SECONDS = 10  # a process silent this long is taken for dead (jax: 100)
SHUTDOWN_SECONDS = 30
_DONE_KEY = "dream_jax/batch/done/"


@dataclasses.dataclass(frozen=True)
class Share:
    process_id: int = 0
    num_processes: int = 1
    joined: bool = False  # connected to the job's coordination service (else: alone)

    def owns(self, index: int) -> bool:
        return index % self.num_processes == self.process_id


def parse_address(address: str) -> tuple[str, int]:
    if not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", address):
        raise UserError(f"--coordinator_address must be HOST:PORT, got {address!r}")
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None, join_timeout: float = 120, log=print) -> Share:
    """Join the job the flags describe (before any other jax call); no flags,
    one process. A process that cannot join within `join_timeout` seconds
    says so on stderr and goes on alone."""
    if coordinator_address is None and num_processes in (None, 1) and process_id in (None, 0):
        return Share()
    if coordinator_address is None or num_processes is None or process_id is None:
        raise UserError("--coordinator_address, --num_processes and --process_id go together")
    host, port = parse_address(coordinator_address)
    if num_processes < 1:
        raise UserError(f"--num_processes must be >= 1, got {num_processes}")
    if not 0 <= process_id < num_processes:
        raise UserError(f"--process_id must be in 0..{num_processes - 1}, got {process_id}")
    if join_timeout <= 0:
        raise UserError(f"--join_timeout must be > 0 seconds, got {join_timeout}")
    alone = Share(process_id, num_processes, joined=False)
    if process_id != 0 and not _reachable(host, port, join_timeout):
        log(f"warning: no coordinator at {coordinator_address} within {join_timeout:g}s (process 0 "
            f"has ended or not started): process {process_id} dreams its share alone; "
            f"summary.json is not merged", file=sys.stderr)
        return alone
    if not _connect(coordinator_address, port, num_processes, process_id, join_timeout):
        log(f"warning: not every process joined at {coordinator_address} within "
            f"{join_timeout:g}s: process {process_id} dreams its share alone; summary.json is not "
            f"merged", file=sys.stderr)
        return alone
    return Share(process_id, num_processes, joined=True)


def _reachable(host: str, port: int, timeout: float) -> bool:
    """Whether something listens at host:port within `timeout` seconds (retried)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=min(5.0, timeout)):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.25)


def _connect(address: str, port: int, num_processes: int, process_id: int,
             timeout: float) -> bool:
    from jax._src import distributed as jax_distributed
    from jax._src.lib import _jax

    state = jax_distributed.global_state
    if state.client is not None:
        raise UserError("this process has already joined a job")
    jax.config.update("jax_enable_recoverability", True)
    service = None
    if process_id == 0:
        try:
            service = _jax.get_distributed_runtime_service(
                f"[::]:{port}", num_processes, heartbeat_timeout=HEARTBEAT_SECONDS,
                shutdown_timeout=SHUTDOWN_SECONDS, recoverable=True)
        except Exception as e:  # noqa: BLE001 -- jaxlib raises its own runtime errors
            raise UserError(f"cannot start the coordinator on port {port}: "
                            f"{str(e).splitlines()[0] if str(e) else e}") from None
    # Process 0 survives a failed join (the callback turns it into an exception
    # here); a later call would crash, but in process 0 the service is local.
    callback = {"missed_heartbeat_callback": _ignore} if process_id == 0 else {}
    client = _jax.get_distributed_runtime_client(
        address, process_id, init_timeout=max(1, int(timeout)),
        heartbeat_timeout=HEARTBEAT_SECONDS, shutdown_timeout=SHUTDOWN_SECONDS,
        use_compression=True, **callback)
    try:
        client.connect()
    except Exception:  # noqa: BLE001 -- not every process came
        del client
        if service is not None:
            service.shutdown()
        return False
    state.service, state.client = service, client
    state.process_id, state.num_processes = process_id, num_processes
    state.coordinator_address = address
    return True


def _ignore(*_args) -> None:
    pass


def _client():
    from jax._src import distributed as jax_distributed
    return jax_distributed.global_state.client


def publish(share: Share, part: dict) -> bool:
    """Tell the job this process has ended its run, with its summary."""
    if not share.joined:
        return False
    try:
        _client().key_value_set(f"{_DONE_KEY}{share.process_id}", json.dumps(part),
                                allow_overwrite=True)
    except Exception:  # noqa: BLE001 -- the job is gone: nothing to tell
        return False
    return True


def gather(share: Share, peer_timeout: float, log=print, poll: float = 0.25) -> dict[int, dict]:
    """Process 0: every other process's published summary, by process id, once each
    publisher has left the job. A process that is not running (died, not yet
    restarted) is waited for up to `peer_timeout` seconds from when it is seen
    gone; then a UserError.

    `get_live_nodes` is a barrier: it returns when every listed process that
    is alive calls it too, or leaves, or is found dead (heartbeat timeout). The
    other processes never call it, so here it waits until they have finished
    (published and left) or died."""
    try:
        return _gather(share, peer_timeout, log, poll)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- jaxlib's runtime errors: the service failed
        raise UserError(f"lost the job's coordination service while waiting for the other "
                        f"processes ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
                        f"summary.json is not merged") from None


def _gather(share: Share, peer_timeout: float, log, poll: float) -> dict[int, dict]:
    client = _client()
    parts: dict[int, dict] = {}
    gone_since: float | None = None
    peers = [i for i in range(share.num_processes) if i != share.process_id]
    while True:
        parts.update(_published(client))
        missing = [i for i in peers if i not in parts]
        if not missing:
            break
        live = _live_nodes(client, [share.process_id, *missing])
        parts.update(_published(client))
        gone = [i for i in missing if i not in live and i not in parts]
        if gone and gone_since is None:
            gone_since = time.monotonic()
            log(f"process {share.process_id}: share done; waiting for process(es) "
                f"{', '.join(map(str, gone))}, not running: restart with the same flags "
                f"(giving up after {peer_timeout:g}s)", file=sys.stderr)
        elif not gone and gone_since is not None:
            gone_since = None
        if gone_since is not None:
            if time.monotonic() - gone_since > peer_timeout:
                raise UserError(
                    f"process(es) {', '.join(map(str, gone))} stopped before finishing and were "
                    f"not restarted within {peer_timeout:g}s: summary.json is not merged; "
                    f"restart them with the same flags (alone, they dream the rest of their "
                    f"share)")
            time.sleep(poll)
    _live_nodes(client, [share.process_id, *peers])  # until the publishers have left
    return {i: parts[i] for i in peers}


def _live_nodes(client, process_ids: list[int]) -> dict[int, int]:
    """`client.get_live_nodes` on a helper thread, so that Ctrl-C is not held
    back while it blocks (it can block for as long as a peer works)."""
    result: dict = {}

    def call():
        try:
            result["live"] = client.get_live_nodes(process_ids)
        except Exception as e:  # noqa: BLE001 -- raised in the caller's thread
            result["error"] = e
    thread = threading.Thread(target=call, daemon=True, name="dream_jax-live-nodes")
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
    if "error" in result:
        raise result["error"]
    return result["live"]


def _published(client) -> dict[int, dict]:
    return {int(key.rsplit("/", 1)[1]): json.loads(value)
            for key, value in client.key_value_dir_get(_DONE_KEY)}


def leave() -> None:
    """Disconnect from the job (the coordinator too, in process 0). A process
    other than 0 leaves right after publishing, so that it never outlives
    the coordinator while connected (jax would then terminate it)."""
    from jax._src import distributed as jax_distributed
    jax_distributed.global_state.shutdown()
