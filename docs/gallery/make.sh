#!/usr/bin/env bash
# The README gallery, made by the project from its own inputs (the scene and
# masks drawn by scene.py, scikit-image's CC0 cat in docs/). Run from the
# project root after `make env weights`: bash docs/gallery/make.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=docs/gallery
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

$PY $OUT/scene.py "$WORK"   # scene.png, disc.png, outside.png

# 1. a contact sheet: the first 16 channels of inception_4c/output
mkdir "$WORK/channels"
$PY scripts/visualize.py --layer=inception_4c/output --channels=0:16 --size=128 --steps=256 \
    --output_dir="$WORK/channels"

# 2. MaCo: phase-only optimisation with a fixed 1/f magnitude
mkdir "$WORK/maco"
$PY scripts/visualize.py --layer=inception_4c/output --channels=3,10 --param=maco --size=224 \
    --steps=256 --output_dir="$WORK/maco"

# 3. regions: pagodas in the disc, inception_3b textures around it (masks from scene.py)
$PY scripts/dream.py --input="$WORK/scene.png" --normalize=lapnorm \
    --region="$WORK/disc.png:channel(inception_4d/output,139)" \
    --region="$WORK/outside.png:inception_3b/output" --output="$WORK/regions.png"

# 4. feature accentuation: a channel grown in a photo that stays recognisable
$PY scripts/dream.py --input=docs/chelsea_input.jpg \
    --objective="channel(inception_4c/output,61) - 0.3*input_distance()" \
    --output="$WORK/accentuated.png"

$PY - "$WORK" "$OUT" <<'PY'
import sys
from PIL import Image
work, out = sys.argv[1:]
for source, name in [("channels/contact_sheet.png", "contact_sheet"),
                     ("maco/contact_sheet.png", "maco"), ("scene.png", "scene"),
                     ("regions.png", "regions"), ("accentuated.png", "accentuated")]:
    Image.open(f"{work}/{source}").convert("RGB").save(f"{out}/{name}.jpg", quality=88)
PY
echo "gallery written to $OUT"
