"""Reading any image a user has, and writing PNGs that are never half-written.

`read_image` accepts every mode Pillow decodes (grayscale, palette, RGBA/LA,
CMYK, 16-bit, EXIF-rotated: pixels come back in displayed orientation;
animated files: the first frame) and returns uint8 RGB plus the alpha channel,
if any, so callers can re-attach it. Problems become one-line `ImageError`s
naming the file. The pixel count is checked from the header, before decoding,
against `max_pixels` (decompression bombs); PNG chunk checksums are verified
before decoding too. Only the raster formats in `FORMATS` are decoded, whatever
the name says, and the file is read once: the pixels and the recorded sha256
come from the same bytes. The decoders read untrusted bytes, so *any*
exception they raise is reported as a bad file, never as a traceback.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import math
import os
import stat
import threading
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from dream_jax.errors import ImageError
from dream_jax.io.atomic import atomic_output

DEFAULT_MAX_PIXELS = 100_000_000


# The raster formats README lists, by Pillow's format name: Pillow picks a
# decoder from the bytes, not the file name, and some of its plug-ins (EPS via
# Ghostscript, for one) run other programs.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # JPEG includes MPO


@dataclasses.dataclass(frozen=True)
class Decoded:
    """An image's pixels and the sha256 of exactly the bytes they were decoded from."""
    rgb: np.ndarray               # uint8 (H, W, 3)
    alpha: np.ndarray | None      # uint8 (H, W)
    sha256: str


def max_file_bytes(max_pixels: int) -> int:
    """The largest file read for an image of at most `max_pixels` pixels: 16
    bytes a pixel (float RGBA, uncompressed) plus room for metadata."""
    return 16 * max_pixels + (64 << 20)


def _float_to_uint8(grey: np.ndarray, what: str) -> np.ndarray:
    """A float image in 0..1 (scaled) or 0..255 (as is); anything else is refused."""
    if not np.all(np.isfinite(grey)):
        raise ImageError(f"{what}: float image with NaN or Inf values")
    low, high = float(grey.min()), float(grey.max())
    if low < 0 or high > 255:
        raise ImageError(f"{what}: float image with values in {low:g}..{high:g}; "
                         f"expected 0..1 or 0..255")
    scale = 255.0 if high <= 1.0 else 1.0
    return np.clip(np.rint(grey.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _to_rgb_and_alpha(img: Image.Image, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):  # 16/32-bit grey: scale, don't clip
        grey = np.asarray(img).astype(np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(np.rint(grey * 255.0 / peak), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1), None
    if img.mode == "F":
        grey = _float_to_uint8(np.asarray(img), what)
        return np.repeat(grey[..., None], 3, axis=-1), None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    return np.asarray(img.convert("RGB")), None


BYTES_PER_PIXEL = 16  # the float32 RGB(A) copies any image costs, at the least


def check_pixels(what: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse, before allocating it, an image of more than `max_pixels` pixels,
    or one whose float copy alone would not fit this machine's memory (with
    --max_pixels raised)."""
    if width * height > max_pixels:
        raise ImageError(f"{what}: {width}x{height} is {width * height:,} pixels, "
                         f"over the limit of {max_pixels:,} (raise --max_pixels "
                         f"if you trust this file)")
    need, have = width * height * BYTES_PER_PIXEL, physical_memory()
    if have and need > have:
        raise ImageError(f"{what}: {width}x{height} would need at least {need / 2**30:,.1f} "
                         f"GiB, more than this machine's {have / 2**30:,.1f} GiB")


def physical_memory() -> int:
    """Bytes of RAM (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _check_header(img: Image.Image, what: str, max_pixels: int) -> None:
    width, height = img.size
    check_pixels(what, width, height, max_pixels)
    if width < 1 or height < 1:
        raise ImageError(f"{what}: image has no pixels ({width}x{height})")


def _decode(img: Image.Image, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    img.seek(0)
    img.load()
    return _to_rgb_and_alpha(ImageOps.exif_transpose(img), what)


def _open(data: bytes) -> Image.Image:
    Image.init()  # every plug-in registered, so that each of FORMATS is known
    return Image.open(io.BytesIO(data), formats=FORMATS)


def _open_and_decode(data: bytes, what: str, max_pixels: int
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    with _open(data) as img:
        _check_header(img, what, max_pixels)
        if img.format != "PNG":
            return _decode(img, what)
        img.verify()  # every chunk's CRC, without decoding; leaves `img` unusable
    with _open(data) as img:
        return _decode(img, what)


_limit_lock = threading.Lock()
_limit_users = 0          # readers inside `_own_pixel_limit`, on any thread
_saved_limit = None       # Pillow's limit as it was before the first of them


@contextlib.contextmanager
def _own_pixel_limit():
    """Pillow's pixel limit off while we decode (`check_pixels` replaces it).
    Pillow keeps it process-wide, so readers on several threads (the batch's
    read-ahead and the caller) share one switch: the first one in turns it
    off, the last one out puts the caller's value back."""
    global _limit_users, _saved_limit
    with _limit_lock:
        if _limit_users == 0:
            _saved_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        _limit_users += 1
    try:
        yield  # with no limit Pillow neither warns nor refuses: nothing to filter
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_limit


class NotRegular(OSError):
    """A path that is a folder, device or FIFO: never read."""


def open_regular(path: str | os.PathLike):
    """A binary file object on a regular file. Opened without blocking and
    checked before any read, so a FIFO or device is refused, never waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegular("is a directory, not an image file" if stat.S_ISDIR(mode)
                         else "not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them (refused past it); one
    `ImageError` for every way the file cannot be read."""
    what = str(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise ImageError(f"{what}: {size:,} bytes, over the {limit:,} "
                                 f"read for an image within --max_pixels")
            data = f.read(size + 1)  # one byte more shows a file still growing
    except NotRegular as e:
        raise ImageError(f"{what}: {e}") from None
    except IsADirectoryError:
        raise ImageError(f"{what}: is a directory, not an image file") from None
    except FileNotFoundError:
        raise ImageError(f"{what}: no such file") from None
    except PermissionError:
        raise ImageError(f"{what}: permission denied") from None
    except OSError as e:  # e.g. a name or path too long, an I/O error
        raise ImageError(f"{what}: cannot read ({e.strerror or e})") from None
    if len(data) > size:
        raise ImageError(f"{what}: changed while being read")
    return data


def decode_file(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """The image at `path` as `Decoded`: the file is read once, and the pixels
    and the sha256 both come from those bytes."""
    what = str(path)
    data = read_bytes(path, max_file_bytes(max_pixels))
    if not data:
        raise ImageError(f"{what}: empty file (0 bytes)")
    try:
        with _own_pixel_limit():
            rgb, alpha = _open_and_decode(data, what, max_pixels)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image in a format dream_jax reads "
                         f"({', '.join(FORMATS)}), or corrupt") from None
    except MemoryError:
        raise ImageError(f"{what}: not enough memory to decode this image") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"{what}: corrupt or truncated image ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - a decoder choking on hostile bytes is a bad file
        raise ImageError(f"{what}: cannot decode image ({type(e).__name__}: "
                         f"{_first_line(e)})") from None
    return Decoded(rgb, alpha, hashlib.sha256(data).hexdigest())


def read_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 RGB (H, W, 3), uint8 alpha (H, W) or None) in displayed orientation."""
    decoded = decode_file(path, max_pixels)
    return decoded.rgb, decoded.alpha


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


RESIZE_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                  "lanczos": Image.LANCZOS}


def resize(pixels: np.ndarray, width: int, height: int, method: str = "bilinear",
           box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Pillow's resampling (antialiased when shrinking) of uint8 (H, W) / (H, W, 3)
    pixels, or of float (H, W[, C]) planes one by one in mode F, so floats keep
    their precision. `box` (left, top, right, bottom) resamples only that part
    of the source, so a crop costs the output's memory, not the source's."""
    resample = RESIZE_FILTERS[method]
    pixels = np.asarray(pixels)
    if pixels.dtype == np.uint8:
        return np.asarray(Image.fromarray(pixels).resize((width, height), resample, box=box))
    planes = pixels[..., None] if pixels.ndim == 2 else pixels
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], np.float32), "F")
                      .resize((width, height), resample, box=box))
           for c in range(planes.shape[-1])]
    return out[0] if pixels.ndim == 2 else np.stack(out, axis=-1)


def write_gif(path: str | os.PathLike, frames: list[np.ndarray], frame_ms: int = 80) -> None:
    """uint8 RGB frames as a looping GIF: temp file, then rename."""
    images = [Image.fromarray(f) for f in frames]
    with atomic_output(path) as f:
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                       duration=frame_ms, loop=0)


def read_png_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks before a PNG's pixel data (where `write_png` puts them),
    read without decoding the pixels; Pillow bounds each chunk's decompressed
    size. Any other format, or hostile bytes, is one `ImageError`."""
    what = str(path)
    try:
        Image.init()
        with open(path, "rb") as f, _own_pixel_limit(), Image.open(f, formats=("PNG",)) as img:
            return {k: v for k, v in img.info.items()
                    if isinstance(k, str) and isinstance(v, str)}
    except FileNotFoundError:
        raise ImageError(f"{what}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not a PNG file") from None
    except OSError as e:
        raise ImageError(f"{what}: cannot read PNG metadata ({e.strerror or _first_line(e)})"
                         ) from None
    except Exception as e:  # noqa: BLE001 - crafted chunks (text bombs, bad lengths)
        raise ImageError(f"{what}: cannot read PNG metadata ({type(e).__name__}: "
                         f"{_first_line(e)})") from None


def contact_sheet(images, labels, columns: int = 0) -> np.ndarray:
    """The pictures on a grid, each labelled underneath (PIL's default font)."""
    from PIL import ImageDraw, ImageFont
    n, h, w = len(images), images[0].shape[0], images[0].shape[1]
    columns = columns or math.ceil(math.sqrt(n))
    rows, label_h, gap = math.ceil(n / columns), 14, 4
    sheet = Image.new("RGB", (columns * (w + gap) + gap, rows * (h + label_h + gap) + gap),
                      "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default()
    for i, (image, label) in enumerate(zip(images, labels)):
        x = gap + (i % columns) * (w + gap)
        y = gap + (i // columns) * (h + label_h + gap)
        sheet.paste(Image.fromarray(image), (x, y))
        draw.text((x + 2, y + h + 1), label, fill="black", font=font)
    return np.asarray(sheet)
