"""Several processes, one job: jax's coordination service for the agreement,
a fixed split of the inputs for the work.

Each process dreams the inputs whose stream index is `process_id` modulo
`num_processes`, on its own devices only: no collective ever crosses
processes, and jax in a dreaming process never knows about the job (its
devices are local ones). The job is joined through jax's coordination service
(`jaxlib`'s `DistributedRuntimeService`/`Client`, what `jax.distributed`
uses), hosted by process 0, in its *recoverable* mode: a task that dies does
not take the others down, and a task started again with the same
`--process_id` registers as a new incarnation of the running job.

Process 0 holds the service and its own client. Every other process holds
its client in a small helper process (a "sidecar", `python -c`, only
`jaxlib` imported) tied to it by pipes: jax's client terminates its process
when the service goes away (its error callback is fatal; jaxlib 0.10.2's
`missed_heartbeat_callback`, which could replace it, crashes with
std::bad_cast when the client's polling thread calls it), so it is the
sidecar that jax terminates, and the dreaming process goes on alone. When the
dreaming process dies, its sidecar reads end-of-file and leaves the job.

- a process other than 0 dies: the others go on; process 0, once its own
  share is done, waits (up to `peer_timeout`) for the dead one to be started
  again with the same flags, which dreams the rest of its share;
- process 0 dies: the others finish their shares alone (summaries not
  merged); process 0 started again finds no peers within `join_timeout` and
  dreams the rest of its share alone;
- a process started when the job is gone (no coordinator at the address, or
  not every process registered within `join_timeout`) dreams its share alone.
  The split never depends on the job, so the outputs are the same either way.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import re
import subprocess
import sys
import threading
import time

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


class _Job:
    """This process's connection to the job: process 0's service and client,
    or another process's sidecar."""
    service = None
    client = None
    sidecar: subprocess.Popen | None = None
    lost = threading.Event()  # the sidecar ended before this process was done


_job = _Job()


def parse_address(address: str) -> tuple[str, int]:
    if not re.fullmatch(r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:]+\]:\d{1,5}", address):
        raise UserError(f"--coordinator_address must be HOST:PORT, got {address!r}")
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def initialize(coordinator_address: str | None, num_processes: int | None,
               process_id: int | None, join_timeout: float = 120, log=print) -> Share:
    """Join the job the flags describe; no flags, one process. A process that
    cannot join within `join_timeout` seconds says so on stderr and goes on alone."""
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
    if _job.client is not None or _job.sidecar is not None:
        raise UserError("this process has already joined a job")
    joined = (_serve(coordinator_address, port, num_processes, join_timeout) if process_id == 0
              else _start_sidecar(coordinator_address, num_processes, process_id, join_timeout,
                                  log))
    if not joined:
        log(f"warning: could not join the job at {coordinator_address} within "
            f"{join_timeout:g}s (process 0 has ended or not started, or not every process "
            f"came): process {process_id} dreams its share alone; summary.json is not merged",
            file=sys.stderr)
    return Share(process_id, num_processes, joined=joined)


def _serve(address: str, port: int, num_processes: int, timeout: float) -> bool:
    """Process 0: start the coordination service and join it; False when not
    every process registered in time (the service is then stopped)."""
    from jaxlib import _jax
    try:
        service = _jax.get_distributed_runtime_service(
            f"[::]:{port}", num_processes, heartbeat_timeout=HEARTBEAT_SECONDS,
            shutdown_timeout=SHUTDOWN_SECONDS, recoverable=True)
    except Exception as e:  # noqa: BLE001 -- jaxlib raises its own runtime errors
        raise UserError(f"cannot start the coordinator on port {port}: "
                        f"{str(e).splitlines()[0] if str(e) else e}") from None
    # With a callback, a failed registration is an exception here instead of
    # a fatal error (later calls would crash, but the service is in this process).
    client = _jax.get_distributed_runtime_client(
        address, 0, init_timeout=max(1, int(timeout)), heartbeat_timeout=HEARTBEAT_SECONDS,
        shutdown_timeout=SHUTDOWN_SECONDS, use_compression=True,
        missed_heartbeat_callback=lambda *_: None)
    try:
        client.connect()
    except Exception:  # noqa: BLE001 -- not every process came
        del client
        service.shutdown()
        return False
    _job.service, _job.client = service, client
    atexit.register(leave)
    return True


# The sidecar: joins as `process_id`, says "joined", then waits for one line
# on stdin: "done <summary json>" (publish it) or end-of-file (its process
# died or stopped early); either way it leaves the job and exits. If the job
# cannot be reached it says "alone"; if jax terminates it (process 0 died),
# its process reads end-of-file on the sidecar's stdout.
_SIDECAR = r"""
import signal, socket, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is its process's to handle
address, process_id, timeout, heartbeat, shutdown, key = sys.argv[1:7]
host, port = address.rsplit(":", 1)
deadline = time.monotonic() + float(timeout)
while True:
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        break
    except OSError:
        if time.monotonic() >= deadline:
            print("alone", flush=True)
            sys.exit(0)
        time.sleep(0.25)
from jaxlib import _jax
client = _jax.get_distributed_runtime_client(
    address, int(process_id), init_timeout=max(1, int(float(timeout))),
    heartbeat_timeout=int(heartbeat), shutdown_timeout=int(shutdown), use_compression=True)
client.connect()
print("joined", flush=True)
line = sys.stdin.readline()
if line.startswith("done "):
    try:
        client.key_value_set(key + process_id, line[5:].strip(), allow_overwrite=True)
    except Exception:
        sys.exit(1)
client.shutdown()
print("left", flush=True)
"""


def _start_sidecar(address: str, num_processes: int, process_id: int, timeout: float,
                   log) -> bool:
    sidecar = subprocess.Popen(
        [sys.executable, "-c", _SIDECAR, address, str(process_id), str(timeout),
         str(HEARTBEAT_SECONDS), str(SHUTDOWN_SECONDS), _DONE_KEY],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    said = sidecar.stdout.readline().strip()
    if said != "joined":
        sidecar.stdin.close()
        sidecar.wait()
        return False
    _job.sidecar = sidecar

    def watch():
        said = sidecar.stdout.readline()
        if not said and not _job.lost.is_set():  # not "left": jax ended it
            _job.lost.set()
            log(f"warning: lost the job (process 0 died?): process {process_id} finishes its "
                f"share alone; summary.json is not merged", file=sys.stderr)
    threading.Thread(target=watch, daemon=True, name="dream_jax-sidecar").start()
    return True


def lost() -> bool:
    """Whether this process, once joined, has lost the job (process 0 died)."""
    return _job.lost.is_set()


def publish(share: Share, part: dict) -> bool:
    """A process other than 0: give the job this run's summary, and leave it."""
    sidecar = _job.sidecar
    if not share.joined or sidecar is None or _job.lost.is_set():
        return False
    try:
        sidecar.stdin.write(f"done {json.dumps(part)}\n")
        sidecar.stdin.close()
        code = sidecar.wait(timeout=SHUTDOWN_SECONDS + 10)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        sidecar.kill()
        return False
    finally:
        _job.sidecar = None
    return code == 0


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
    client = _job.client
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
    """Leave the job: process 0 stops its client and the service (the others
    have left by then), another process lets its sidecar go."""
    if _job.sidecar is not None:
        try:
            _job.sidecar.stdin.close()
        except OSError:
            pass
        _job.sidecar.wait()
        _job.sidecar = None
    if _job.client is not None:
        _job.client.shutdown()
        _job.client = None
    if _job.service is not None:
        _job.service.shutdown()
        _job.service = None
