#!/usr/bin/env python3
"""Open the results page in headless Chromium, 1400 px wide, and check that every image (curves, spectrograms)
decodes, every WAV opens and nothing is wider than the window (no column cut off).

Usage: scripts/check_gallery.py data/samples/index.html [--screenshot gallery.png]

The page records, once loaded, ``data-images="decoded/total"``, ``data-audio="playable/total"`` and
``data-overflow`` (page width beyond the window, px) on <body>; this script dumps the DOM after a virtual-time
budget and checks them. Exit 0 when all media work, 1 when some
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
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")


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
        overflow = re.search(r'data-overflow="(-?\d+)"', dom)
        if not images or not audio or not overflow:
            return False, f"{page}: the page's self-check did not run (no data-images/audio/overflow on <body>)"
        if screenshot is not None:
            subprocess.run([browser, *flags, f"--screenshot={screenshot.resolve()}", url],
                           capture_output=True, timeout=120, check=True)
    ok = all(int(m.group(1)) == int(m.group(2)) > 0 for m in (images, audio)) and int(overflow.group(1)) <= 0
    return ok, f"{page}: images decoded {images.group(1)}/{images.group(2)}, audio playable " \
               f"{audio.group(1)}/{audio.group(2)}, {max(0, int(overflow.group(1)))} px wider than the 1400 px window"


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
