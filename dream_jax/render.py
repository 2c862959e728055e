"""From a request (config as data) to a PNG on disk, reproducibly.

A `DreamRequest` holds everything that determines the pixels and is checked
when it is made. It is stored as JSON in the PNG's text metadata with the
input's and guide's file *names* and sha256 (never a path: outputs get shared),
the weights' sha256 and the package version. `--replay` re-runs it: with the
file named by --input, or found by name beside the PNG or in the working
directory, after checking its sha256. On CPU the same request gives the same
bytes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import jax
import numpy as np
from tqdm import tqdm

from dream_jax import api, objectives
from dream_jax.engine import deepdream, inputs
from dream_jax.io import image_io, replay, replay_files
from dream_jax.model import weights
from dream_jax.io import record as records
from dream_jax.io.outputs import check_folder, check_output, same_file  # noqa: F401 -- API
from dream_jax.engine.config import DreamConfig
from dream_jax.errors import UserError

METADATA_KEY = replay.METADATA_KEY
DEFAULT_NOISE_SIZE = 512
MIN_SIDE = 16  # smaller images give the network 1x1 maps at every layer: nothing to dream
MAX_SEED = 2**32 - 1  # JAX keys take 32-bit seeds; larger ones would silently collide


@dataclasses.dataclass(frozen=True)
class DreamRequest:
    """What to dream: input (None = seeded noise), objective, config, seed, guide.
    Its objective texts are parsed once, when it is made (`region_objectives`)."""
    input: str | None = None
    objective: str = objectives.DEFAULT
    config: DreamConfig = DreamConfig()
    seed: int = 0
    guide: str | None = None
    max_side: int = 0            # 0 keeps the input's size
    noise_size: int = DEFAULT_NOISE_SIZE
    max_pixels: int = image_io.DEFAULT_MAX_PIXELS
    mask: str | None = None      # white = dream the objective, black = keep, grey = blend
    regions: tuple = ()          # ((mask, objective), ...): one objective per region

    def __post_init__(self):
        """Everything that can be checked without loading weights or pixels."""
        object.__setattr__(self, "regions", tuple(tuple(r) for r in self.regions))
        for objective in self.region_objectives:
            if objective.needs_guide and not self.guide:
                raise UserError(f"objective {str(objective)!r} uses guide(); pass --guide=IMAGE")
        checks = [
            (self.max_side >= 0, f"max_side must be >= 0 (0 keeps the size), got {self.max_side}"),
            (self.noise_size >= 32, f"noise_size must be >= 32, got {self.noise_size}"),
            (self.max_pixels >= 1, f"max_pixels must be >= 1, got {self.max_pixels}"),
            (self.input is not None or self.noise_size ** 2 <= self.max_pixels,
             f"noise_size {self.noise_size} gives {self.noise_size ** 2:,} pixels, "
             f"over --max_pixels={self.max_pixels:,}"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in 0..{MAX_SEED}, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        if self.input is None:
            image_io.check_pixels("noise input", self.noise_size, self.noise_size,
                                  self.max_pixels)

    @property
    def region_list(self) -> list[tuple[str, str]]:
        """[(mask path, objective text)]: --mask with --objective, then each --region."""
        return ([(self.mask, self.objective)] if self.mask else []) + list(self.regions)

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the request reads: input, guide, masks."""
        return tuple(p for p in (self.input, self.guide, *(m for m, _ in self.region_list))
                     if p is not None)

    @functools.cached_property
    def region_objectives(self) -> tuple[objectives.Objective, ...]:
        """The objectives that dream (every region's, or the one objective), parsed
        once per request."""
        regions = self.region_list
        return tuple(objectives.parse(text) for _, text in regions) if regions \
            else (objectives.parse(self.objective),)

    @property
    def entry(self):
        """What the image dreams (see `engine.inputs`): the objective, or with
        masks one objective per region."""
        return self.region_objectives if self.region_list else self.region_objectives[0]

    @property
    def layers(self) -> tuple[str, ...]:
        return inputs.layers([self.entry])


def parse_region(text: str) -> tuple[str, str]:
    """'MASK.png:OBJECTIVE' -> (mask, objective), split at the last ':' (objectives
    have none; a Windows drive letter stays in the path)."""
    mask, sep, objective = text.rpartition(":")
    if not sep or not mask or not objective.strip():
        raise UserError(f"--region={text!r}: expected MASK.png:OBJECTIVE")
    return mask, objective.strip()


def check_size(name: str, height: int, width: int, config: DreamConfig,
               layers: tuple[str, ...]) -> None:
    """Refuse, before any weights are loaded, an image too small to dream: under
    MIN_SIDE, too small for the deepest layer of the objective, or shrunk by the
    octave pyramid below MIN_SIDE (which would only add pointless octaves)."""
    if min(height, width) < MIN_SIDE:
        raise UserError(f"{name}: {width}x{height} is too small to dream "
                        f"(each side needs at least {MIN_SIDE} px)")
    if not deepdream.fits_network(height, width, layers):
        raise UserError(f"{name}: {width}x{height} is too small for {layers[-1]} "
                        f"(use a bigger image or a shallower layer)")
    shapes = deepdream.octave_shapes(height, width, config.octave_n, config.octave_scale)
    usable = sum(1 for shape in shapes if min(shape) >= MIN_SIDE)
    if usable < len(shapes):
        h, w = shapes[-1]
        raise UserError(f"{name}: {width}x{height} with {config.octave_n} octaves at "
                        f"octave_scale {config.octave_scale:g} shrinks to {w}x{h} at the smallest "
                        f"octave (under {MIN_SIDE} px); use at most --octaves={usable} or a "
                        f"smaller --octave_scale")


def fit_max_side(rgb: np.ndarray, alpha: np.ndarray | None, max_side: int):
    """Downscale so the longer side is at most max_side (0: unchanged)."""
    height, width = rgb.shape[:2]
    if not max_side or max(height, width) <= max_side:
        return rgb, alpha
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    rgb = image_io.resize(rgb, *size, "lanczos")
    alpha = None if alpha is None else image_io.resize(alpha, *size, "lanczos")
    return rgb, alpha


def noise_image(seed: int, size: int) -> np.ndarray:
    """The built-in default input: seeded grey noise (as the TF tutorial starts from)."""
    rng = np.random.default_rng(seed)
    return rng.integers(96, 160, (size, size, 3), dtype=np.uint8)


def load_input(request: DreamRequest, digests: dict[str, str]
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """The input's pixels (or the seeded noise), checked with `check_size`; the
    sha256 of the bytes decoded goes into `digests` under the input's path."""
    layers = request.layers
    if request.input is None:
        size = request.noise_size
        check_size("noise input", size, size, request.config, layers)
        return noise_image(request.seed, size), None
    rgb, alpha = fit_max_side(*read_file(request.input, request.max_pixels, digests),
                              request.max_side)
    check_size(str(request.input), *rgb.shape[:2], request.config, layers)
    return rgb, alpha


def read_file(path: str, max_pixels: int, digests: dict[str, str]):
    """(rgb, alpha) of an image file, its sha256 noted in `digests` for the record."""
    decoded = image_io.decode_file(path, max_pixels)
    digests[path] = decoded.sha256
    return decoded.rgb, decoded.alpha


def load_extras(request: DreamRequest, digests: dict[str, str]
                ) -> tuple[np.ndarray | None, list[np.ndarray] | None]:
    """The guide's pixels and the region masks' (None when there are none), each
    read under --max_pixels, their sha256 noted in `digests`."""
    masks = [read_file(path, request.max_pixels, digests)[0]
             for path, _ in request.region_list] or None
    guide = read_file(request.guide, request.max_pixels, digests)[0] if request.guide else None
    return guide, masks


def _recorded(request: DreamRequest) -> dict:
    """The request as a record holds it: file names, never paths."""
    def name(path):
        return None if path is None else Path(path).name
    return {**dataclasses.asdict(request), "input": name(request.input),
            "guide": name(request.guide), "mask": name(request.mask),
            "regions": [(name(m), o) for m, o in request.regions]}


def fingerprint(request: DreamRequest) -> str:
    """A sha256 of what, besides the input, decides an output's pixels: a batch
    rerun keeps an output only when its recorded fingerprint is this one."""
    return _fingerprint(_recorded(request))


def _fingerprint(recorded: dict) -> str:
    fields = {k: v for k, v in recorded.items() if k not in ("input", "max_pixels")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def recorded_fingerprint(png: str | os.PathLike) -> str | None:
    """The request fingerprint a dream's PNG records (None: it records none).
    Records written before the field existed: that of their recorded request."""
    text = replay.text_of(png)
    if text is None:
        return None
    record = records.loads(text, _request_spec(), str(png))
    return record.get("request_sha256") or _fingerprint(record["request"])


def metadata(request: DreamRequest, weights_sha256: str, digests: dict[str, str]
             ) -> dict[str, str]:
    """The PNG text chunks: the request with file names only, its fingerprint,
    and the sha256 of the bytes each file was decoded from (`digests`: path -> sha256)."""
    def sha(path):
        return None if path is None else digests[path]
    return replay.png_text(
        weights_sha256, request=_recorded(request), request_sha256=fingerprint(request),
        input_sha256=sha(request.input), guide_sha256=sha(request.guide),
        mask_sha256=sha(request.mask), region_sha256=[sha(m) for m, _ in request.regions])


def _request_spec() -> records.Obj:
    """The schema of a dream record (see `metadata`)."""
    name, sha = records.Maybe(records.Name()), records.Maybe(records.Sha256())
    objective = records.Str(64 * 1024)  # direction() over a whole layer is ~10 kB
    request = records.Obj(
        {"input": name, "objective": objective, "config": records.fields_spec(DreamConfig),
         "seed": records.Int(0, MAX_SEED)},
        {"guide": name, "mask": name, "max_side": records.Int(0, 2**31 - 1),
         "noise_size": records.Int(1, 2**31 - 1), "max_pixels": records.Int(1, 2**62),
         "regions": records.List(records.Pair(records.Name(), objective), 64)},
        closed=True)
    return replay.spec({"request": request},
                       {"request_sha256": records.Sha256(), "input_sha256": sha,
                        "guide_sha256": sha, "mask_sha256": sha,
                        "region_sha256": records.List(records.Sha256(), 64)})


def request_from_png(path: str | os.PathLike, input_path: str | None = None,
                     guide_path: str | None = None, mask_path: str | None = None
                     ) -> tuple[DreamRequest, dict]:
    """The request stored in a dream's PNG, checked against the record schema,
    with its files located and checked (see `replay_files.locate`), and the record."""
    path = Path(path)
    record = replay.read(path, None, _request_spec(),
                         f"{path}: no dream_jax metadata (not written by dream_jax?)")
    fields = dict(record["request"])
    regions = fields.pop("regions", [])
    region_digests = record.get("region_sha256", [])
    if len(region_digests) != len(regions):
        raise UserError(f"{path}: bad dream_jax metadata: {len(regions)} regions but "
                        f"{len(region_digests)} region sha256s")
    fields["config"] = DreamConfig.from_dict(fields["config"])
    fields["input"] = replay_files.locate("input", fields["input"], input_path,
                                          record.get("input_sha256"), path)
    fields["guide"] = replay_files.locate("guide", fields.get("guide"), guide_path,
                                          record.get("guide_sha256"), path)
    fields["mask"] = replay_files.locate("mask", fields.get("mask"), mask_path,
                                         record.get("mask_sha256"), path)
    fields["regions"] = tuple(
        (replay_files.locate("region mask", mask, None, digest, path), objective)
        for (mask, objective), digest in zip(regions, region_digests))
    return DreamRequest(**fields), record


def render(request: DreamRequest, output: str | os.PathLike, params=None,
           weights_dir=None, progress: bool = True, replay_record: dict | None = None) -> dict:
    """Dream `request` into `output` (PNG with metadata). Returns a summary dict."""
    output = check_output(output, request.files)
    start = time.perf_counter()
    digests: dict[str, str] = {}
    rgb, alpha = load_input(request, digests)
    guide_rgb, masks = load_extras(request, digests)
    manifest = weights.read_manifest(weights_dir)
    if replay_record is not None:
        replay.check_replayable(replay_record, manifest["sha256"], "the dream")
    params = weights.load_params(weights_dir) if params is None else params
    batch = inputs.plan(params, [request.entry], guide_rgb, masks).inputs(
        rgb[None], [request.entry], jax.random.PRNGKey(request.seed))
    bar = tqdm(total=request.config.octave_n * request.config.iter_n, unit="step",
               desc="dream", disable=None if progress else True,  # None: terminals only
               leave=False)
    try:
        dreamed = api.run(params, batch, request.config,
                          on_octave=lambda octave, steps: bar.update(request.config.iter_n))[0]
    finally:
        bar.close()
    image_io.write_png(output, dreamed, alpha, metadata(request, manifest["sha256"], digests))
    return {"output": str(output), "height": rgb.shape[0], "width": rgb.shape[1],
            "seconds": time.perf_counter() - start}
