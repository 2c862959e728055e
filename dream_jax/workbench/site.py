"""The microscope's pages: plain HTML + one CSS file, relative links, no JavaScript.

`index.html` lists the layers; `<layer>.html` is a grid of its channels'
visualisations; `<layer>_c<C>.html` shows one channel: the visualisation and
its transparency map, the scores, the top exemplars with their receptive-field
patches and attribution overlays, and the command that replays each picture.
Every page is written atomically; names and text are HTML-escaped.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

from dream_jax.io import atomic
from dream_jax.vis import visualize

STYLE = """body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
a { color: #0a58ca; } h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.cell { width: 140px; text-align: center; font-size: 12px; }
.cell img { width: 128px; height: 128px; image-rendering: pixelated; display: block;
            margin: 0 auto 2px; border: 1px solid #ccc; }
.big { display: flex; gap: 8px; }
.big img { width: 256px; height: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
.checker { background: repeating-conic-gradient(#ddd 0% 25%, #fff 0% 50%) 0 0 / 16px 16px; }
.exemplar { display: flex; gap: 8px; align-items: flex-start; margin-bottom: 10px; }
.exemplar img { height: 128px; border: 1px solid #ccc; image-rendering: pixelated; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; border-bottom: 1px solid #eee;
text-align: left; } pre { background: #f6f6f6; padding: 6px; white-space: pre-wrap; }
nav { margin-bottom: 1em; }
"""

SCORE_HELP = {
    "activation_ratio": "max activation on the visualisation / on the top exemplar "
                        "(> 1: drives the unit harder than any mined image)",
    "beats_share": "share of the other channels' visualisations this one beats on its channel",
    "path_similarity": "cosine similarity in earlier layers to the channel's exemplars",
    "random_similarity": "the same, for random images (path_similarity well below it: "
                         "an unnatural path)",
}


def dash(layer: str) -> str:
    return layer.replace("/", "-")


def vis_path(layer: str, channel: int) -> str:
    return f"vis/{dash(layer)}/{visualize.file_name(layer, channel)}"


def transparency_path(layer: str, channel: int) -> str:
    return visualize.transparency_name(vis_path(layer, channel))


def attribution_path(layer: str, channel: int, rank: int) -> str:
    return f"attr/{dash(layer)}/c{channel}_{rank}.png"


def image_path(index: int) -> str:
    return f"exemplars/images/img{index}.png"


def scores_path(layer: str) -> str:
    return f"scores/{dash(layer)}.json"


def layer_page(layer: str) -> str:
    return f"{dash(layer)}.html"


def channel_page(layer: str, channel: int) -> str:
    return f"{dash(layer)}_c{channel}.html"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><link rel=\"stylesheet\" href=\"style.css\">"
            f"</head><body>\n{body}\n</body></html>\n")


def _img(src: str, alt: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<img src="{escape(src)}" alt="{escape(alt)}"{klass}>'


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _index(job, record: dict, command: str) -> str:
    rows = "".join(f'<li><a href="{layer_page(layer)}">{escape(layer)}</a> '
                   f"({len(job.channel_list(layer))} channels)</li>" for layer in job.layers)
    failed = "".join(f"<li>{escape(f['input'])}: {escape(f['error'])}</li>"
                     for f in record["failed"])
    body = (f"<h1>dream_jax microscope</h1><ul>{rows}</ul>"
            f"<p>{record['images']} natural images mined (top {record['top_k']} per channel, "
            f"each resized and centre-cropped to {record['size']} px).</p>"
            + (f"<h2>Skipped inputs</h2><ul>{failed}</ul>" if failed else "")
            + f"<h2>Made by</h2><pre>{escape(command)}</pre>")
    return _page("dream_jax microscope", body)


def _layer(job, layer: str, layer_scores: dict) -> str:
    cells = []
    for c in job.channel_list(layer):
        ratio = _number(layer_scores.get(str(c), {}).get("activation_ratio"))
        cells.append(f'<div class="cell"><a href="{channel_page(layer, c)}">'
                     f'{_img(vis_path(layer, c), f"channel {c}")}channel {c}</a>'
                     f"<br>ratio {ratio}</div>")
    body = (f'<nav><a href="index.html">all layers</a></nav><h1>{escape(layer)}</h1>'
            f'<div class="grid">{"".join(cells)}</div>')
    return _page(layer, body)


def _channel(job, layer: str, c: int, entries: list, result: dict,
             neighbours) -> str:
    prev_c, next_c = neighbours
    nav = ['<a href="index.html">all layers</a>', f'<a href="{layer_page(layer)}">'
           f"{escape(layer)}</a>"]
    nav += [f'<a href="{channel_page(layer, n)}">{label} (c{n})</a>'
            for n, label in ((prev_c, "previous"), (next_c, "next")) if n is not None]
    vis, alpha = vis_path(layer, c), transparency_path(layer, c)
    score_rows = "".join(f"<tr><th>{key}</th><td>{_number(result.get(key))}</td>"
                         f"<td>{escape(text)}</td></tr>" for key, text in SCORE_HELP.items())
    earlier = ", ".join(result.get("earlier_layers", [])) or "none"
    objective = f"channel({layer},{c})"
    replay = f"python scripts/visualize.py --replay=SITE/{vis} --transparency --output_dir=again"
    parts = [f"<nav>{' | '.join(nav)}</nav><h1>{escape(layer)} channel {c}</h1>",
             '<div class="big">', _img(vis, "visualisation"),
             _img(alpha, "visualisation with transparency", "checker"), "</div>",
             f"<pre>{escape(replay)}</pre>",
             f"<h2>Scores</h2><table>{score_rows}</table><p>earlier layers: {escape(earlier)}</p>",
             f"<h2>Top {len(entries)} natural exemplars (by spatial maximum)</h2>"]
    for rank, e in enumerate(entries):
        attr = attribution_path(layer, c, rank)
        image = image_path(e["index"])
        command = (f"python scripts/attribute.py --input=SITE/{image} "
                   f"--objective='{objective}' --method={job.method} "
                   f"--steps={job.attribution_steps} --seed={job.seed} --output=attr.png")
        parts.append(
            f'<div class="exemplar">{_img("exemplars/" + e["patch"], "receptive-field patch")}'
            f'{_img(image, "exemplar")}{_img(attr, f"{job.method} attribution")}'
            f"<div>#{rank + 1} <b>{escape(e['input'])}</b><br>max {e['score']:.4g} at "
            f"(y={e['y']}, x={e['x']}), mean {e['mean']:.4g}<br>patch rows {e['box'][0]}:"
            f"{e['box'][2]}, columns {e['box'][1]}:{e['box'][3]}"
            f"<pre>{escape(command)}</pre></div></div>")
    mine = (f"python scripts/exemplars.py {' '.join('--layer=' + l for l in job.layers)} "
            f"--inputs=INPUTS --output_dir=SITE/exemplars --top_k={job.top_k} "
            f"--size={job.exemplar_size}")
    parts.append(f"<p>Patches and exemplars replay with</p><pre>{escape(mine)}</pre>")
    return _page(f"{layer} channel {c}", "\n".join(parts))


def write(site_dir: Path, job, record: dict, command: str = "") -> Path:
    """All pages of the site from the job's outputs; returns index.html."""
    atomic.atomic_write(site_dir / "style.css", STYLE.encode())
    for layer in job.layers:
        scores_file = site_dir / scores_path(layer)
        layer_scores = json.loads(scores_file.read_text()) if scores_file.exists() else {}
        atomic.atomic_write(site_dir / layer_page(layer),
                            _layer(job, layer, layer_scores).encode())
        channels = job.channel_list(layer)
        for i, c in enumerate(channels):
            neighbours = (channels[i - 1] if i else None,
                          channels[i + 1] if i + 1 < len(channels) else None)
            html = _channel(job, layer, c, record["layers"][layer]["channels"][str(c)],
                            layer_scores.get(str(c), {}), neighbours)
            atomic.atomic_write(site_dir / channel_page(layer, c), html.encode())
    atomic.atomic_write(site_dir / "index.html", _index(job, record, command).encode())
    return site_dir / "index.html"
