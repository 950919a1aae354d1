"""Cold start and a new session in a real browser: the Forget page of a checkpoint, from navigation to its charts drawn.

    .venv/bin/python perf/browser.py [--checkpoint fmnist-cnn] [--sessions 5] [--root DIR]

Starts ``streamlit run app.py`` (the server of ROOT, default this checkout; another for a baseline) with an empty
answers cache, then Chromium (``/usr/bin/chromium``, ``make browser``): ``cold`` is the first context's navigation
to ``/?ckpt=...`` until every chart's SVG and every image is drawn and no script runs (the server loads the model, the
data and the fast path on this first session); ``new_session`` the median of ``--sessions`` fresh contexts after it
(new browser sessions on a warm server: each downloads the frontend again); ``new_tab`` the median of as many new tabs
of one browser context whose cache holds the frontend (a second tab of a user). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
DRAWN = """() => document.querySelector('[data-testid="stApp"][data-test-script-state="notRunning"]')
  && !document.querySelector('[data-testid="stStatusWidget"]')
  && document.querySelectorAll('[data-testid="stPlotlyChart"]').length > 0
  && Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]')).every(c => c.querySelector('.main-svg'))
  && Array.from(document.images).every(i => i.complete)"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _open(browser, url: str, context=None) -> float:
    """Seconds from navigating a new tab (of ``context``, or of a fresh context: no cache) to the page drawn."""
    own = context is None
    context = context or browser.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_function(DRAWN, timeout=180_000, polling=50)
    seconds = time.perf_counter() - start
    if own:
        context.close()
    else:
        page.close()
    return seconds


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="fmnist-cnn")
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args()
    port, root = _port(), args.root.resolve()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root),
           "WFEXPLAIN_CACHE_DIR": tempfile.mkdtemp(prefix="browser-")}
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1", "--server.port",
           str(port), "--browser.gatherUsageStats", "false", "--server.headless", "true",
           "--server.fileWatcherType", "none"]
    server = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page_url = f"{url}/?ckpt={args.checkpoint}"
            cold = _open(browser, page_url)
            sessions = [_open(browser, page_url) for _ in range(args.sessions)]
            same = browser.new_context(viewport={"width": 1400, "height": 1800})
            tabs = [_open(browser, page_url, same) for _ in range(args.sessions + 1)][1:]  # the first fills the cache
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps({"checkpoint": args.checkpoint, "root": str(root), "cold_s": round(cold, 2),
                      "new_session_s": round(statistics.median(sessions), 2), "sessions_s": [round(s, 2) for s in sessions],
                      "new_tab_s": round(statistics.median(tabs), 2)}))


if __name__ == "__main__":
    main()
