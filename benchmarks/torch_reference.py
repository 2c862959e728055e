"""BVLC GoogLeNet and DeepDream in PyTorch, built from dream_jax's converted params.

A second, independent implementation (NCHW, torch.nn.functional) that the tests
hold the Flax model to, and the baseline the benchmark races: the steps loop in
Python, as pytorch-deepdream and neural-dream do. Benchmarks and tests only:
dream_jax itself never imports torch.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch._dynamo
import torch.nn.functional as F

from dream_jax.engine import deepdream as jax_deepdream
from dream_jax.model import googlenet, preprocess
from dream_jax.engine.config import DreamConfig

Params = dict[str, tuple[torch.Tensor, torch.Tensor]]


def torch_params(params, device="cpu") -> Params:
    """Flax pytree {layer: {"kernel" (kH,kW,in,out) or (in,out), "bias"}} ->
    {layer: (weight in torch's (out,in,kH,kW) or (out,in) order, bias)}."""
    out = {}
    for layer, leaves in params.items():
        kernel = np.asarray(leaves["kernel"], np.float32)
        weight = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        out[layer] = (torch.tensor(np.ascontiguousarray(weight), device=device),
                      torch.tensor(np.asarray(leaves["bias"], np.float32), device=device))
    return out


def _conv(p: Params, x, name, stride=1, pad=0):
    weight, bias = p[name]
    return F.relu(F.conv2d(x, weight, bias, stride=stride, padding=pad))


def _max_pool(x, stride, pad=0):
    # torch's ceil_mode has Caffe's rule: the last window may not start in the padding.
    return F.max_pool2d(x, 3, stride, pad, ceil_mode=True)


def _lrn(x):
    # torch, like Caffe, divides alpha by the window size.
    return F.local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=1.0)


def _inception(p: Params, block: str, x) -> Iterator[tuple[str, torch.Tensor]]:
    b1 = _conv(p, x, f"{block}/1x1")
    yield f"{block}/1x1", b1
    b3r = _conv(p, x, f"{block}/3x3_reduce")
    yield f"{block}/3x3_reduce", b3r
    b3 = _conv(p, b3r, f"{block}/3x3", pad=1)
    yield f"{block}/3x3", b3
    b5r = _conv(p, x, f"{block}/5x5_reduce")
    yield f"{block}/5x5_reduce", b5r
    b5 = _conv(p, b5r, f"{block}/5x5", pad=2)
    yield f"{block}/5x5", b5
    pooled = _max_pool(x, 1, pad=1)
    yield f"{block}/pool", pooled
    proj = _conv(p, pooled, f"{block}/pool_proj")
    yield f"{block}/pool_proj", proj
    yield f"{block}/output", torch.cat([b1, b3, b5, proj], dim=1)


def _blobs(p: Params, x) -> Iterator[tuple[str, torch.Tensor]]:
    """Every blob in Caffe's order, as in googlenet.GoogLeNet._blobs."""
    x = _conv(p, x, "conv1/7x7_s2", stride=2, pad=3)
    yield "conv1/7x7_s2", x
    x = _max_pool(x, 2)
    yield "pool1/3x3_s2", x
    x = _lrn(x)
    yield "pool1/norm1", x
    x = _conv(p, x, "conv2/3x3_reduce")
    yield "conv2/3x3_reduce", x
    x = _conv(p, x, "conv2/3x3", pad=1)
    yield "conv2/3x3", x
    x = _lrn(x)
    yield "conv2/norm2", x
    x = _max_pool(x, 2)
    yield "pool2/3x3_s2", x
    for block in googlenet.INCEPTION:
        if block in googlenet.POOL_BEFORE:
            x = _max_pool(x, 2)
            yield googlenet.POOL_BEFORE[block], x
        for name, value in _inception(p, block, x):
            yield name, value
        x = value  # the block's output is its last blob
    x = F.avg_pool2d(x, 7, stride=1)
    yield "pool5/7x7_s1", x
    weight, bias = p["loss3/classifier"]
    # The classifier at every pool5 position, averaged (the Flax model's rule).
    logits = F.linear(x.permute(0, 2, 3, 1), weight, bias).mean(dim=(1, 2))
    yield "loss3/classifier", logits
    yield "prob", torch.softmax(logits, dim=-1)


def forward(p: Params, images: torch.Tensor, taps: Sequence[str]) -> dict[str, torch.Tensor]:
    """images (N, 3, H, W) in model space -> {tap: NCHW activation, or (N, classes)};
    stops after the deepest tap."""
    wanted = set(taps)
    unknown = wanted - set(googlenet.LAYERS)
    if unknown:
        raise ValueError(f"unknown layer(s) {sorted(unknown)}")
    found = {}
    for name, value in _blobs(p, images):
        if name in wanted:
            found[name] = value
            if len(found) == len(wanted):
                break
    return found


# --- DeepDream: the default objective (L2 of one layer), default config, no tiling ---

_LOW = torch.tensor(-preprocess.DREAM_MEAN_BGR).view(1, 3, 1, 1)
_HIGH = torch.tensor(255.0 - preprocess.DREAM_MEAN_BGR).view(1, 3, 1, 1)


def _ascend(p: Params, images, layer: str, step_size: float, precision: str = "float32"):
    """Gradient of each image's 0.5*sum(x^2)/positions w.r.t. `images` (a leaf
    that requires grad), normalised per image by mean |g|, one step, clipped to
    valid pixels. Clipping is per element, so it commutes with the roll back.
    bfloat16 runs the network under autocast, as a PyTorch user would."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16,
                        enabled=precision == "bfloat16"):
        act = forward(p, images, (layer,))[layer].float()
    positions = act[0, 0].numel()
    # Each image's objective depends on that image only: the sum's gradient is per-image.
    (g,) = torch.autograd.grad(0.5 * act.square().sum() / positions, images)
    g = g / (g.abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
    out = torch.nan_to_num(images.detach() + step_size * g)
    return torch.clamp(out, _LOW.to(out.device), _HIGH.to(out.device))


def make_step(p: Params, images, layer: str, generator: torch.Generator,
              config: DreamConfig = DreamConfig(), ascend: Callable = _ascend):
    """deepdream.make_step for a batch: one random roll for the whole batch per step
    (torch.roll takes Python ints), gradient ascent, roll back."""
    oy, ox = torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator).tolist()
    rolled = torch.roll(images.detach(), (oy, ox), dims=(2, 3)).requires_grad_(True)
    return torch.roll(ascend(p, rolled, layer, config.step_size, config.precision), (-oy, -ox),
                      dims=(2, 3))


def compiled_ascend() -> Callable:
    """The per-step gradient ascent (forward, backward, update) as one torch.compile
    graph, static shapes (one graph per size, like XLA). The rolls stay eager:
    their shifts change every step. Tracing autograd.grad is opt-in in dynamo;
    without it the step breaks into pieces."""
    torch._dynamo.config.trace_autograd_ops = True
    return torch.compile(_ascend, dynamic=False)


def dream_octave(p: Params, images, layer: str, generator: torch.Generator,
                 config: DreamConfig = DreamConfig(), ascend: Callable = _ascend):
    """config.iter_n steps on a batch (N, 3, H, W), a Python loop like the notebook's."""
    for _ in range(config.iter_n):
        images = make_step(p, images, layer, generator, config, ascend)
    return images


def _resize(images, shape):
    # The notebook's scipy.ndimage.zoom(order=1): corners aligned, no antialiasing.
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=True)


def deepdream(p: Params, images, layer: str, generator: torch.Generator,
              config: DreamConfig = DreamConfig(), ascend: Callable = _ascend):
    """deepdream.deepdream's octave loop: dream from the smallest level up, carrying
    the detail; levels too small for `layer` are skipped."""
    height, width = images.shape[2:]
    shapes = jax_deepdream.octave_shapes(height, width, config.octave_n, config.octave_scale)
    bases = [images]
    for shape in shapes[1:]:
        bases.append(_resize(bases[-1], shape))
    detail = torch.zeros_like(bases[-1])
    for level in reversed(range(len(shapes))):
        base = bases[level]
        if detail.shape != base.shape:
            detail = _resize(detail, shapes[level])
        if not jax_deepdream.fits_network(*shapes[level], (layer,)):
            continue
        detail = dream_octave(p, base + detail, layer, generator, config, ascend) - base
    return bases[0] + detail
