"""Reading any image a user has, and writing PNGs that are never half-written.

`read_image` accepts every mode Pillow decodes (grayscale, palette, RGBA/LA,
CMYK, 16-bit, EXIF-rotated: pixels come back in displayed orientation;
animated files: the first frame) and returns uint8 RGB plus the alpha channel,
if any, so callers can re-attach it. Problems become one-line `ImageError`s
naming the file. The pixel count is checked from the header, before decoding,
against `max_pixels` (decompression bombs); PNG chunk checksums are verified
before decoding too. The decoders read untrusted bytes, so *any* exception
they raise is reported as a bad file, never as a traceback.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from dream_jax.errors import ImageError
from dream_jax.atomic import atomic_output

DEFAULT_MAX_PIXELS = 100_000_000


def _to_rgb_and_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16/32-bit grey: scale, don't clip
        grey = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(np.rint(grey * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1), None
    if img.mode == "F":
        grey = np.clip(np.rint(np.nan_to_num(np.asarray(img))), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1), None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(img.convert("RGB")), None


def _check_header(img: Image.Image, path: Path, max_pixels: int) -> None:
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width}x{height} is {width * height:,} pixels, "
                         f"over the limit of {max_pixels:,} (raise --max_pixels "
                         f"if you trust this file)")
    if width < 1 or height < 1:
        raise ImageError(f"{path}: image has no pixels ({width}x{height})")


def _decode(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    img.seek(0)
    img.load()
    return _to_rgb_and_alpha(ImageOps.exif_transpose(img))


def _open_and_decode(path: Path, max_pixels: int) -> tuple[np.ndarray, np.ndarray | None]:
    with Image.open(path) as img:
        _check_header(img, path, max_pixels)
        if img.format != "PNG":
            return _decode(img)
        img.verify()  # every chunk's CRC, without decoding; leaves `img` unusable
    with Image.open(path) as img:
        return _decode(img)


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 RGB (H, W, 3), uint8 alpha (H, W) or None) in displayed orientation."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image file")
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # our own pixel limit replaces Pillow's warning
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                return _open_and_decode(path, max_pixels)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (unknown or corrupt format)") from None
    except MemoryError:
        raise ImageError(f"{path}: not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - a decoder choking on hostile bytes is a bad file
        raise ImageError(f"{path}: cannot decode image ({type(e).__name__}: "
                         f"{_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def write_png(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None,
              metadata: dict[str, str] | None = None) -> None:
    """Write uint8 RGB (+ alpha) as PNG with text metadata: temp file, fsync, rename."""
    path = Path(path)
    info = PngImagePlugin.PngInfo()
    for key, value in (metadata or {}).items():
        info.add_itxt(key, value)
    pixels = rgb if alpha is None else np.dstack([rgb, alpha])
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB" if alpha is None else "RGBA")
    try:
        with atomic_output(path) as f:
            image.save(f, format="PNG", pnginfo=info)
    except OSError as e:
        raise ImageError(f"{path}: cannot write output ({e.strerror or e})") from None


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks of a PNG written by `write_png`."""
    try:
        with Image.open(path) as img:
            img.load()
            return dict(getattr(img, "text", {}))
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise ImageError(f"{path}: cannot read PNG metadata ({e})") from None
