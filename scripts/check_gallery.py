#!/usr/bin/env python3
"""Open the results page in headless Chromium and check that every image (curves, spectrograms) decodes and every
WAV opens.

Usage: scripts/check_gallery.py data/samples/index.html [--screenshot gallery.png]

The page records, once loaded, ``data-images="decoded/total"`` and ``data-audio="playable/total"`` on <body>;
this script dumps the DOM after a virtual-time budget and compares them. Exit 0 when all media work, 1 when some
do not, 2 when Chromium is missing. Needs `chromium` (Debian: `apt-get install -y chromium`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Offline and stateless: no background network traffic, no first-run or sync services, a throw-away profile.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required",
         "--allow-file-access-from-files", "--virtual-time-budget=15000", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def check(page: Path, screenshot: Path | None = None) -> tuple[bool, str]:
    """(all media ok, summary line) for the gallery at ``page``."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no Chromium found (tried {', '.join(BROWSERS)})")
    url = page.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="check-gallery-") as profile:
        flags = (*FLAGS, f"--user-data-dir={profile}")
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
        images = re.search(r'data-images="(\d+)/(\d+)"', dom)
        audio = re.search(r'data-audio="(\d+)/(\d+)"', dom)
        if not images or not audio:
            return False, f"{page}: the page's self-check did not run (no data-images/data-audio on <body>)"
        if screenshot is not None:
            subprocess.run([browser, *flags, "--window-size=1400,1000", f"--screenshot={screenshot.resolve()}", url],
                           capture_output=True, timeout=120, check=True)
    ok = all(int(m.group(1)) == int(m.group(2)) > 0 for m in (images, audio))
    return ok, f"{page}: images decoded {images.group(1)}/{images.group(2)}, audio playable " \
               f"{audio.group(1)}/{audio.group(2)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    if not args.page.is_file():
        print(f"{args.page}: not found", file=sys.stderr)
        return 1
    try:
        ok, summary = check(args.page, args.screenshot)
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
