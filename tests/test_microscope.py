"""The microscope: one command builds a static site that a real headless Chromium
opens with every image decoded and no broken link; no absolute paths; scores
in the site and in the PNGs agree; a rerun resumes and redoes only what is gone;
a job killed partway resumes to the site an uninterrupted run makes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from dream_jax.io import image_io
from dream_jax.workbench import exemplars, microscope, scores, site
from tests.conftest import ROOT, assert_one_line_error, run_main

pytestmark = pytest.mark.slow  # the site is built once per module: minutes on 2 cores
LAYERS = ("inception_3a/output", "inception_3b/output")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium() -> str:
    """The Chromium binary; skipped when absent, except in CI (CI=true), where it fails."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        reason = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason + "; CI must run the browser test")
        pytest.skip(reason)
    return found


def _args(inputs, out, weights_dir, **extra):
    flags = {"layers": ",".join(LAYERS), "inputs": inputs, "output_dir": out,
             "channels": "0:3", "size": 48, "steps": 4, "top_k": 2, "exemplar_size": 64,
             "random_images": 3, "weights": weights_dir, **extra}
    return [f"--{k}={v}" for k, v in flags.items()]


@pytest.fixture(scope="module")
def built(weights_dir, tmp_path_factory):
    from skimage import data
    root = tmp_path_factory.mktemp("microscope")
    inputs, out = root / "inputs", root / "site"
    inputs.mkdir(), out.mkdir()
    for i, photo in enumerate((data.chelsea(), data.coffee(), data.astronaut(),
                               data.rocket(), data.chelsea()[::-1], data.coffee()[:, ::-1])):
        Image.fromarray(photo[:200, :260]).save(inputs / f"photo{i}.png")
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    proc = run_main("microscope", *_args(inputs, out, weights_dir))
    assert proc.returncode == 0, proc.stderr
    return root, inputs, out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a":
            self.links.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "link":
            self.links.append(attrs["href"])
        assert tag != "script", "the site needs no JavaScript"


# Every page in an iframe of one harness page: the window's load event fires only
# once every frame and every image in it has loaded (or failed), so the report is
# written synchronously in that event, before Chromium dumps the DOM.
_HARNESS = """<!DOCTYPE html><html><body>%s<script>
window.addEventListener("load", () => {
  const results = [...document.querySelectorAll("iframe")].map(f => {
    const d = f.contentDocument;
    const imgs = [...d.images];
    return {url: f.getAttribute("src"), title: d.title, images: imgs.length,
            bad: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                     .map(i => i.getAttribute("src")),
            links: [...d.querySelectorAll("a[href]")].map(a => a.href),
            styled: getComputedStyle(d.body).margin !== "8px"};
  });
  const out = document.createElement("pre");
  out.id = "results";
  out.textContent = JSON.stringify(results);
  document.body.appendChild(out);
});
</script></body></html>"""


def _browse(binary, folder: Path, pages: list[str], profile: Path) -> list[dict]:
    """Open every page in headless Chromium (in iframes of a harness page beside
    the site) and report, from the browser, each page's images and links."""
    harness = folder / "harness.html"
    frames = "".join(f'<iframe src="{page}"></iframe>' for page in pages)
    harness.write_text(_HARNESS % frames)
    proc = subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                           "--allow-file-access-from-files", "--virtual-time-budget=10000",
                           "--dump-dom", harness.as_uri()],
                          capture_output=True, text=True, timeout=300)
    start = proc.stdout.find('<pre id="results">')
    assert start >= 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    body = proc.stdout[start + len('<pre id="results">'):proc.stdout.index("</pre>", start)]
    import html
    return json.loads(html.unescape(body))


def test_every_page_loads_every_image_decodes_no_broken_links(built, tmp_path):
    binary = chromium()
    root, _, out = built
    pages = sorted(p.name for p in out.glob("*.html"))
    assert len(pages) == 1 + len(LAYERS) * 4  # index, a page per layer, 3 channel pages each
    # a page with a broken image, to show the check can see one
    (root / "broken_page.html").write_text('<img src="site/missing.png"><img src="site/vis/'
                                           f'{site.dash(LAYERS[0])}/../../style.css">')
    results = _browse(binary, root, [f"site/{p}" for p in pages] + ["broken_page.html"],
                      tmp_path / "profile")
    assert results[-1]["bad"] == ["site/missing.png", f"site/vis/{site.dash(LAYERS[0])}"
                                                      "/../../style.css"]
    reached = {"index.html"}
    for page, result in zip(pages, results):
        assert result["bad"] == [] and result["styled"], (page, result)
        assert result["title"], page
        for link in result["links"]:
            target = Path(unquote(urlparse(link).path))
            assert target.exists(), (page, link)
            assert out in target.parents, (page, link)  # stays inside the site
            reached.add(target.name)
    assert reached == set(pages)  # every page is linked from another
    channel_page = next(r for p, r in zip(pages, results) if p.endswith("_c1.html"))
    assert channel_page["images"] == 2 + 3 * 2  # picture, transparency; 2 x patch/image/attr


def test_pages_are_plain_html_with_relative_links_and_no_absolute_paths(built):
    root, inputs, out = built
    for page in out.glob("*.html"):
        parser = _Links()
        text = page.read_text()
        parser.feed(text)
        assert str(root) not in text and "/tmp" not in text
        for ref in parser.links + parser.images:
            assert not urlparse(ref).scheme and not ref.startswith("/"), (page, ref)
            assert (out / ref).exists(), (page, ref)
    for path in [*out.rglob("*.json"), *out.rglob("*.png")]:
        text = path.read_text(errors="ignore") if path.suffix == ".json" else \
            json.dumps(image_io.read_png_metadata(path))
        assert str(root) not in text, path
    record = json.loads((out / "exemplars" / "exemplars.json").read_text())
    assert [f["input"] for f in record["failed"]] == ["broken.png"]
    assert "broken.png" in (out / "index.html").read_text()


def test_scores_in_the_pngs_are_those_of_the_site(built):
    _, _, out = built
    for layer in LAYERS:
        table = json.loads((out / site.scores_path(layer)).read_text())
        assert sorted(table) == ["0", "1", "2"]
        for c, result in table.items():
            stored = json.loads(image_io.read_png_metadata(
                out / site.vis_path(layer, int(c)))[scores.METADATA_KEY])
            assert stored == result
            assert 0 <= result["beats_share"] <= 1 and result["activation_ratio"] >= 0
            page = (out / site.channel_page(layer, int(c))).read_text()
            assert f"{result['activation_ratio']:.3g}" in page


def test_a_rerun_redoes_only_what_is_missing(built, weights_dir):
    _, inputs, out = built
    vis = [out / site.vis_path(LAYERS[0], c) for c in range(3)]
    before = {p: p.stat().st_mtime_ns for p in vis}
    gone = out / site.attribution_path(LAYERS[1], 2, 1)
    gone.unlink()
    proc = run_main("microscope", *_args(inputs, out, weights_dir))
    assert proc.returncode == 0, proc.stderr
    assert gone.exists() and {p: p.stat().st_mtime_ns for p in vis} == before
    assert_one_line_error(run_main("microscope", *_args(inputs, out, weights_dir, steps=5)),
                          "made with other settings")


def _files(folder: Path) -> dict[str, os.stat_result]:
    """Every file under `folder` (hidden ones too), by relative path."""
    return {p.relative_to(folder).as_posix(): p.stat() for p in folder.rglob("*") if p.is_file()}


def _same_state_file(a: Path, b: Path) -> None:
    """Two exemplar state files hold the same arrays (a zip's bytes carry its write time)."""
    with np.load(a) as x, np.load(b) as y:
        assert sorted(x.files) == sorted(y.files)
        for name in x.files:
            np.testing.assert_array_equal(x[name], y[name], err_msg=name)


@pytest.mark.parametrize("kill_at", [site.attribution_path(LAYERS[0], 0, 0),
                                     f"vis/{site.dash(LAYERS[1])}/{microscope.CHUNKS_FILE}"],
                         ids=["first attribution", "second layer planned"])
def test_a_killed_job_resumes_to_the_site_an_uninterrupted_run_makes(built, weights_dir,
                                                                     tmp_path, kill_at):
    _, inputs, whole = built
    out = tmp_path / "site"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "microscope.py"),
                             *_args(inputs, out, weights_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / kill_at).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / kill_at).exists(), f"the job ended before writing {kill_at}"
    assert not (out / "index.html").exists(), "the job finished before the kill"
    at_kill = _files(out)
    unscored = {layer for layer in LAYERS if site.scores_path(layer) not in at_kill}
    # pages are rebuilt every run, and scoring a layer writes into its pictures' metadata
    rewritten = {name for name in at_kill if name.endswith((".html", ".css"))} | {
        site.vis_path(layer, c) for layer in unscored for c in range(3)}

    proc = run_main("microscope", *_args(inputs, out, weights_dir))
    assert proc.returncode == 0, proc.stderr
    assert "channels [0, 1, 2]: already made" in proc.stdout  # LAYERS[0]'s one chunk
    unrendered = [layer for layer in LAYERS  # one chunk each: rendered again if incomplete
                  if not all(site.vis_path(layer, c) in at_kill for c in range(3))]
    assert proc.stdout.count(": rendering") == len(unrendered)
    assert "up to date: kept" in proc.stdout  # the mined exemplars and their patches
    after = _files(out)
    # a map's .npy is written before its picture, which marks the pair as done
    unfinished = {name for name in at_kill if name.endswith(".npy")
                  and name[:-len(".npy")] + ".png" not in at_kill}
    kept = {name for name in at_kill
            if name not in rewritten | unfinished and not name.endswith(".tmp")}
    assert kept and {n: (after[n].st_ino, after[n].st_mtime_ns) for n in kept} == \
        {n: (at_kill[n].st_ino, at_kill[n].st_mtime_ns) for n in kept}

    assert sorted(after) == sorted(_files(whole))  # no temp file left behind either
    state = f"exemplars/{exemplars.STATE_FILE}"
    _same_state_file(out / state, whole / state)
    for name in after:
        if name != state:
            assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert json.loads((out / "exemplars" / exemplars.RESULT_FILE).read_text()) == \
        json.loads((whole / "exemplars" / exemplars.RESULT_FILE).read_text())
    assert (out / site.vis_path(LAYERS[0], 0)).parent.joinpath(microscope.CHUNKS_FILE).exists()
