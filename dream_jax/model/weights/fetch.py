"""Reading a source that is a local path or an http(s) URL.

URLs are downloaded with pooch into a cache folder, under a file name unique
to the URL. pooch writes to a temporary file, checks the sha256 when one is
known, and only then moves the file to its final name, so a failed download
never leaves a file there. A cached file is reused when its sha256 matches
the known one, or as it is when none is known.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pooch
import requests
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


class _NotFound(WeightsError):
    """The server answered 404: the file does not exist there."""


def _reason(error: OSError) -> str:
    """One line: the HTTP status, else the first message inside (e.g. a cut connection)."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if not isinstance(error, requests.RequestException):
        return str(error)  # a local OSError, e.g. the disk is full
    while True:  # requests wraps urllib3's error, which may hold its cause in `reason`
        inner = error.args[0] if error.args else None
        if not isinstance(inner, BaseException):
            inner = getattr(error, "reason", None)
        if not isinstance(inner, BaseException):
            break
        error = inner
    text = next((arg for arg in error.args if isinstance(arg, str)), str(error))
    return " ".join(text.split())


def download(url: str, folder: Path, expected_sha256: str | None = None,
             progress: bool = True) -> Path:
    """The path of `url` downloaded (or already cached) in `folder`."""
    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)  # pooch logs every download and a hash hint at INFO
    # pooch sets the total from Content-Length; it only drives a bar that is truthy (total > 0).
    bar = tqdm(total=1, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False,
               disable=None if progress else True)
    try:
        return Path(pooch.retrieve(url, expected_sha256, path=folder, progressbar=bar))
    except requests.HTTPError as e:
        error = _NotFound if e.response is not None and e.response.status_code == 404 else WeightsError
        raise error(f"download failed: {url}: {_reason(e)}") from None
    except OSError as e:  # requests' errors are OSErrors too
        raise WeightsError(f"download failed: {url}: {_reason(e)}") from None
    except ValueError:  # pooch's hash mismatch; the download is already deleted
        raise WeightsError(f"checksum mismatch for {url}: expected sha256 {expected_sha256} "
                           f"(file corrupted or tampered with)") from None
    finally:
        bar.close()
        logger.setLevel(level)


def fetch(source: str, relative: str, cache_dir: Path, expected_sha256: str | None = None,
          progress: bool = True, required: bool = True) -> Path | None:
    """The local path of `relative` under `source`, downloading it if `source` is a URL.

    Returns None for a missing optional file (required=False)."""
    location = join(source, relative)
    if is_url(source):
        try:
            return download(location, cache_dir, expected_sha256, progress)
        except _NotFound:
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
