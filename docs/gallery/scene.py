"""The gallery's own inputs, drawn here so every picture in it is the project's:
a 512x384 landscape (sky, sun, hills, lake) and two region masks (a disc and
the rest)."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 512, 384


def landscape(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, HEIGHT)[:, None, None]
    sky = (1 - y) * np.array([70, 130, 200]) + y * np.array([235, 200, 160])
    image = Image.fromarray(np.broadcast_to(sky, (HEIGHT, WIDTH, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((360, 50, 430, 120), fill=(255, 230, 150))
    x = np.arange(WIDTH)
    for base, amplitude, colour in ((210, 40, (90, 110, 140)), (250, 30, (60, 120, 60))):
        ridge = base + amplitude * np.sin(x / 70.0 + rng.uniform(0, 6)) \
            + 10 * np.sin(x / 17.0 + rng.uniform(0, 6))
        draw.polygon([(0, HEIGHT)] + list(zip(x.tolist(), ridge.tolist())) + [(WIDTH, HEIGHT)],
                     fill=colour)
    draw.rectangle((0, 310, WIDTH, HEIGHT), fill=(50, 90, 140))  # the lake
    grain = rng.normal(0, 6, (HEIGHT, WIDTH, 3))
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.5)), np.float32) + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def disc_masks() -> tuple[Image.Image, Image.Image]:
    disc = Image.new("L", (WIDTH, HEIGHT), 0)
    ImageDraw.Draw(disc).ellipse((96, 32, 416, 352), fill=255)
    disc = disc.filter(ImageFilter.GaussianBlur(6))  # a soft edge blends
    return disc, Image.eval(disc, lambda v: 255 - v)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    landscape().save(out / "scene.png")
    inside, outside = disc_masks()
    inside.save(out / "disc.png")
    outside.save(out / "outside.png")
