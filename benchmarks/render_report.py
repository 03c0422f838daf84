"""Render check of the HTML report: a headless Chromium screenshot of a run's report, to look at.

    python benchmarks/render_report.py RUN_DIR OUT.png [--width 1280] [--height 4000] [--existing]

The report is rendered afresh from RUN_DIR by the current code into a temporary file (the
run's own OUT/report.html, a stage output, is left alone); `--existing` shots that file
instead. Chromium runs with networking off: what the page shows, it holds. Prints the
report's size and the time rendering and the screenshot took.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def find_chromium() -> str | None:
    return next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))),
        None,
    )


def screenshot(
    page: Path, png: Path, width: int = 1280, height: int = 4000, chromium: str | None = None
) -> None:
    """A screenshot of the file `page`, `width` x `height` pixels, into `png`."""
    browser = chromium or find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found (Debian: apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="repolm-chromium-") as profile:
        cmd = [
            browser,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png.resolve()}",
            f"--window-size={width},{height}",
            page.resolve().as_uri(),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed ({r.returncode}): {r.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    ap.add_argument("--existing", action="store_true", help="shoot RUN_DIR/report.html as is")
    args = ap.parse_args(argv)
    if not args.run_dir.is_dir():
        ap.error(f"no run directory at {args.run_dir}")
    with tempfile.TemporaryDirectory(prefix="repolm-report-") as tmp:
        if args.existing:
            page = args.run_dir / "report.html"
            seconds = 0.0
        else:
            from repolm.report.stage import render

            t0 = time.perf_counter()
            text = render(args.run_dir)
            seconds = time.perf_counter() - t0
            page = Path(tmp) / "report.html"
            page.write_text(text, encoding="utf-8")
        t0 = time.perf_counter()
        screenshot(page, args.png, args.width, args.height)
        shot = time.perf_counter() - t0
        body = page.read_text(encoding="utf-8")
        print(
            f"report: {len(body.encode('utf-8')):,} bytes, {body.count('<svg')} plots, "
            f"rendered in {seconds:.1f} s; screenshot {args.png} in {shot:.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
