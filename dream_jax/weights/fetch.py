"""Reading a source that is a local path or an http(s) URL.

Downloads go to `<dest>.part` (resumed with an HTTP Range request when a
previous attempt left one), are checksum-verified when a checksum is known,
and only then renamed into place: a crash never leaves a half file under the
final name.
"""
from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from dream_jax.errors import WeightsError

_CHUNK = 1 << 20


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def join(source: str, relative: str) -> str:
    return f"{source.rstrip('/')}/{relative}" if is_url(source) else str(Path(source) / relative)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, expected_sha256: str | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` atomically; resume a leftover `.part` file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and response.status != 206:  # server ignored Range: start over
                offset = 0
            total = response.length + offset if response.length is not None else None
            with open(part, "ab" if offset else "wb") as out, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True, file=sys.stderr,
                    desc=Path(url).name, disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:  # connection cut short
            raise WeightsError(f"download of {url} stopped at {part.stat().st_size:,} of "
                               f"{total:,} bytes; run again to resume")
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part is already complete
            pass
        else:
            raise WeightsError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError) as e:
        raise WeightsError(f"download failed: {url}: {getattr(e, 'reason', e)}") from None
    if expected_sha256 is not None:
        actual = sha256_file(part)
        if actual != expected_sha256:
            part.unlink()
            raise WeightsError(f"checksum mismatch for {url}: expected sha256 {expected_sha256}, "
                               f"got {actual}")
    os.replace(part, dest)
    return dest


def fetch(source: str, relative: str, cache_dir: Path, expected_sha256: str | None = None,
          progress: bool = True, required: bool = True) -> Path | None:
    """The local path of `relative` under `source`, downloading it if `source` is a URL.

    Returns None for a missing optional file (required=False)."""
    location = join(source, relative)
    if is_url(source):
        try:
            return download(location, cache_dir / relative, expected_sha256, progress)
        except WeightsError:
            if required:
                raise
            return None
    path = Path(location)
    if not path.is_file():
        if required:
            raise WeightsError(f"weights source file not found: {path}")
        return None
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise WeightsError(f"checksum mismatch for {path}: expected sha256 {expected_sha256}, "
                           f"got {sha256_file(path)} (file corrupted or tampered with)")
    return path
