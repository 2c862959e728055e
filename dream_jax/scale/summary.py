"""A batch job's summary.json, from one process or merged from one part per process.

With several processes each writes `summary.part-I-of-N.json` atomically at
the end of its run, tagged with the job's fingerprint (its inputs'
names, objectives, request and N). Whichever process then finds all N parts
of that job, each from a complete run, writes the merged `summary.json`; the
merge depends only on the parts, so several processes merging at once write
the same bytes. A process removes its own part and `summary.json` when it
starts, so a merged summary always describes finished work and no stale part
of an earlier run is merged with a running one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

from dream_jax.io import atomic, input_folders
from dream_jax.scale.distributed import Share
from dream_jax.errors import UserError

SUMMARY_FILE = "summary.json"
_PART = re.compile(r"summary\.part-(\d+)-of-(\d+)\.json")
_TIMES = ("dream_seconds", "read_seconds", "write_seconds")


def part_name(process_id: int, num_processes: int) -> str:
    return f"summary.part-{process_id}-of-{num_processes}.json"


def job_fingerprint(input_spec: str, texts: list[str], request, num_processes: int) -> str:
    """What makes two processes' parts one job: the stream of input and output
    names (not their folders, so hosts may mount the data at different
    paths), the objectives, the request and N."""
    def name(path):
        return None if path is None else Path(path).name
    record = {**dataclasses.asdict(request), "input": None, "guide": name(request.guide),
              "mask": name(request.mask), "regions": [(name(m), o) for m, o in request.regions]}
    digest = hashlib.sha256(json.dumps({"request": record, "objectives": texts,
                                        "num_processes": num_processes},
                                       sort_keys=True, default=str).encode())
    for entry in input_folders.entries(input_spec, texts, Path(".")):
        digest.update(json.dumps([entry.index, entry.input.name,
                                  [output.name for _, output in entry.outputs]]).encode())
    return digest.hexdigest()[:32]


def write(path: Path, summary: dict) -> UserError | None:
    """Write a summary atomically; a failure is returned, so that it never
    hides the error that stopped the run."""
    try:
        atomic.atomic_write(path, (json.dumps(summary, indent=2) + "\n").encode())
    except OSError as e:
        return UserError(f"{path}: cannot write the batch summary ({e.strerror or e})")
    return None


def start_part(out_dir: Path, share: Share) -> None:
    """A process starts: its old part and the merged summary no longer hold."""
    (out_dir / part_name(share.process_id, share.num_processes)).unlink(missing_ok=True)
    (out_dir / SUMMARY_FILE).unlink(missing_ok=True)


def finish_part(out_dir: Path, share: Share, job: str, summary: dict,
                complete: bool) -> UserError | None:
    """Write this process's part; merge the job's parts if they are all there."""
    part = {**summary, "job": job, "process_id": share.process_id,
            "num_processes": share.num_processes, "complete": complete}
    error = write(out_dir / part_name(share.process_id, share.num_processes), part)
    if error or not complete:
        return error
    parts = _read_parts(out_dir, share.num_processes, job)
    if len(parts) == share.num_processes and all(p["complete"] for p in parts):
        return write(out_dir / SUMMARY_FILE, merged(parts))
    return None


def merged(parts: list[dict]) -> dict:
    """One job's summary from its parts, in process order: the same parts give
    the same summary."""
    parts = sorted(parts, key=lambda p: p["process_id"])
    summary = {
        "done": sum(p["done"] for p in parts), "skipped": sum(p["skipped"] for p in parts),
        "failed": [f for p in parts for f in p["failed"]],
        "interrupted": any(p["interrupted"] for p in parts),
        "devices": sum(p["devices"] for p in parts), "processes": len(parts),
        "seconds": max(p["seconds"] for p in parts),
        **{key: round(sum(p[key] for p in parts), 3) for key in _TIMES}, "job": parts[0]["job"]}
    summary["images_per_second"] = (round(summary["done"] / summary["seconds"], 3)
                                    if summary["seconds"] else 0.0)
    return summary


def _read_part(path: Path) -> dict | None:
    try:
        part = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return part if isinstance(part, dict) and "job" in part else None


def _read_parts(out_dir: Path, num_processes: int, job: str) -> list[dict]:
    parts = [_read_part(out_dir / part_name(i, num_processes)) for i in range(num_processes)]
    return [p for p in parts if p is not None and p["job"] == job]


def merge_folder(out_dir: str) -> dict:
    """`--merge_summaries=DIR`: merge the parts found in DIR into summary.json,
    or say which are missing."""
    folder = Path(out_dir)
    if not folder.is_dir():
        raise UserError(f"--merge_summaries: no folder {folder}")
    jobs: dict[tuple[int, str], list[dict]] = {}
    for path in sorted(folder.glob("summary.part-*-of-*.json")):
        match = _PART.fullmatch(path.name)
        part = _read_part(path) if match else None
        if part is not None:
            jobs.setdefault((int(match.group(2)), part["job"]), []).append(part)
    if not jobs:
        raise UserError(f"no summary parts (summary.part-I-of-N.json) in {folder}")
    whole = [parts for (n, _), parts in jobs.items()
             if len(parts) == n and all(p["complete"] for p in parts)]
    if len(whole) > 1:
        raise UserError(f"{folder} holds the parts of {len(whole)} finished jobs; "
                        f"keep one job's parts in a folder")
    if not whole:
        described = []
        for (n, _), parts in sorted(jobs.items()):
            have = {p["process_id"] for p in parts if p["complete"]}
            described.append(f"process(es) {', '.join(str(i) for i in range(n) if i not in have)}"
                             f" of {n}")
        raise UserError(f"not every process of the job in {folder} has finished: "
                        f"run {'; '.join(described)} again with the same flags")
    summary = merged(whole[0])
    error = write(folder / SUMMARY_FILE, summary)
    if error:
        raise error
    return summary
