"""How fast the first screen of `retrain-edge review` renders in headless Chromium, by listing size.

Generates --save_uncertain folders (edge.collect.UncertainSaver itself writes them: bursts, class
folders, uncertain.jsonl) of BASELINE_IMAGES and of --images photos, serves each with the
`retrain-edge review` command in its own process, and times, in a fresh browser context, from
navigation to the moment every thumbnail in the first screen has loaded: cold (empty thumbnail
cache, the first visit) and warm (the thumbnails cached on disk, a later visit), median of --runs.

    python scripts/bench_review.py [--images 10000] [--runs 5]

Needs Chromium (apt-get install chromium) and Playwright (the dev extra).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.collect import UncertainSaver

BASELINE_IMAGES = 100
FRAME_SIZE = (240, 320)  # (height, width) px: what a Pi camera's low-resolution stream gives
LABELS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen
# The first screen has rendered when every card in the viewport shows its thumbnail: then this gives
# the time since navigation began, in ms.
FIRST_SCREEN_LOADED = """() => {
  const cards = Array.from(document.querySelectorAll(".card")).filter(card => {
    const box = card.getBoundingClientRect();
    return box.bottom > 0 && box.top < innerHeight;
  });
  const loaded = cards.length > 0 && cards.every(card => card.firstChild.complete && card.firstChild.naturalWidth > 0);
  return loaded && performance.now();
}"""


def make_uncertain_folder(root: Path, count: int, seed: int = 0, labels=LABELS, frame_size=FRAME_SIZE) -> Path:
    """`count` frames as edge-classify --save_uncertain keeps them: root/<predicted>/<burst>_nohash_<n>.jpg and
    root/uncertain.jsonl with each frame's top scores; bursts of up to 10 frames."""
    rng = np.random.default_rng(seed)
    saver = UncertainSaver(root, threshold=1.01, every=0, max_files=count)
    height, width = frame_size
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 12, (height, width, 3)).astype(np.float32)  # one grain for all: drawing it is most of the time
    for index in range(count):
        if index % 10 == 0:
            saver.writer.new_burst()
        colours = rng.integers(0, 256, (2, 3)).astype(np.float32)
        frame = (colours[0] * (1 - ramp) + colours[1] * ramp).repeat(height, axis=0)
        frame += noise
        scores = rng.dirichlet(np.ones(len(labels)))
        order = np.argsort(-scores)
        top = [(labels[i], float(scores[i])) for i in order[:3]]
        record = {"source": "camera", "frame": index, "time": 0.0, "label": top[0][0],
                  "top_k": [{"label": label, "score": round(score, 6)} for label, score in top]}
        saver.offer(np.clip(frame, 0, 255).astype(np.uint8), float(index), top, record)
    saver.close()
    return root


def serve(source: Path, data: Path, thumbnail_dir: Path) -> tuple[subprocess.Popen, str]:
    """`retrain-edge review SOURCE --into DATA` in its own process on a free port; returns it and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-c", "from trainer.cli import main; main()", "review", str(source), "--into", str(data),
         "--serve", "127.0.0.1:0", "--thumbnail_dir", str(thumbnail_dir)],
        stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # the first line names the page, or the process ended
    if not line.startswith("review at "):
        process.kill()
        raise RuntimeError(f"review did not start: {line!r}")
    return process, line.split()[2]


def first_screen_ms(browser, url: str) -> float:
    """Milliseconds from navigation start to the first screen's thumbnails loaded, in a fresh context."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(url)
        return page.wait_for_function(FIRST_SCREEN_LOADED, polling="raf", timeout=60_000).json_value()
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Chromium: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, headless=True)
        warm_up = browser.new_context()  # a browser's first page pays its start-up: not the baseline's to carry
        warm_up.new_page().goto("data:text/html,<p style='font-family: system-ui'>warm-up</p>")
        warm_up.close()
        for count in (BASELINE_IMAGES, arguments.images):
            started = time.perf_counter()
            source = make_uncertain_folder(Path(folder) / f"uncertain{count}", count)
            made_s = time.perf_counter() - started
            process, url = serve(source, Path(folder) / f"data{count}", Path(folder) / f"thumbnails{count}")
            try:
                cold = first_screen_ms(browser, url)
                warm = [first_screen_ms(browser, url) for _ in range(arguments.runs)]
            finally:
                process.terminate()
                process.wait(10)
            rows.append((count, made_s, cold, statistics.median(warm)))
        browser.close()
    baseline = rows[0][3]
    print(f"{'images':>7} {'first screen cold ms':>21} {'warm ms (median of ' + str(arguments.runs) + ')':>22} "
          f"{'warm / baseline':>16}   (generating the images: s)")
    for count, made_s, cold, warm in rows:
        print(f"{count:>7} {cold:>21.0f} {warm:>22.0f} {warm / baseline:>16.2f}   ({made_s:.1f})")


if __name__ == "__main__":
    main()
