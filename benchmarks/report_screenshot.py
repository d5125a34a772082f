"""The report page's screenshot (README, docs/deployment.md): ``stainshift report`` of a finished benchmark, built into
a temporary folder, photographed by a headless Chromium at 1280x2000 (the top of the page) and reduced to a
palette PNG under 1 MB.

    python benchmarks/report_screenshot.py                        # the demo's project: stainshift-demo/, hgtp -> clinic
    python benchmarks/report_screenshot.py --project DIR --src hgtp --dst clinic

Needs a project with ``stainshift benchmark --src S --dst D`` done (``stainshift demo`` makes one) and chromium on
PATH (``apt-get install chromium``). The project is only read: the page goes to a temporary folder (``--out``), not
``runs/<src>_to_<dst>/report``. Writes ``results/report_screenshot.png`` and ``report_screenshot.json`` (provenance).
It refuses a tree with uncommitted changes (``--allow-dirty`` to override).

The browser helpers here (:func:`find_chromium`, :class:`DevTools`) are also what ``tests/test_report.py`` drives
Chromium with; this module's top level imports only the standard library and light stainshift modules for that.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stainshift.atomic import atomic_write_bytes, atomic_write_text
from stainshift.errors import StainshiftError
from stainshift.provenance import record, require_clean

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DEFAULT_PROJECT = HERE.parent / "stainshift-demo"
WIDTH, HEIGHT = 1280, 2000
LIMIT = 1_000_000                # bytes: the PNG stays small enough for the repository and the docs
COLOURS = (256, 128, 64, 32)     # palette sizes tried, largest first, until the PNG is under LIMIT
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


# -- the browser --------------------------------------------------------------------------------------------------
def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


class DevTools:
    """Chromium driven over its DevTools protocol on ``--remote-debugging-pipe``: JSON messages ending in NUL, read
    by the browser on fd 3 and written on fd 4 (here: the child's stdin and stdout, moved there by ``sh``)."""

    def __init__(self, binary: str, profile: Path) -> None:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}"]
        self.proc = subprocess.Popen(["sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', binary, *flags],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buffer = b""
        self.last_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed the pipe (exit status {self.proc.poll()})")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        """Call ``method`` and return its result; events that arrive meanwhile are kept in ``events``."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.proc.stdin.write(json.dumps(message).encode() + b"\0")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.last_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        """The first event ``method`` (waiting for it if it has not come yet)."""
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))
        return next(e for e in self.events if e.get("method") == method)

    def open(self, page: Path, domains: tuple[str, ...] = ("Page",), size: tuple[int, int] | None = None,
             timeout: float = 60) -> str:
        """Load ``page`` in a new tab (``domains`` enabled first, the viewport ``size`` = width, height if given)
        and wait for its load event (every image loaded or failed); returns the tab's session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in dict.fromkeys((*domains, "Page")):
            self.send(f"{domain}.enable", session=session)
        if size is not None:
            self.send("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                                                             "deviceScaleFactor": 1, "mobile": False},
                      session=session)
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired", timeout)
        return session

    def close(self) -> None:
        """Close the browser (kill it when it does not exit)."""
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def screenshot(binary: str, page: Path, profile: Path, width: int = WIDTH, height: int = HEIGHT
               ) -> tuple[bytes, str]:
    """The top ``width`` x ``height`` CSS pixels of ``page`` in a fresh headless Chromium, as PNG bytes, and the
    browser's version."""
    browser = DevTools(binary, profile)
    try:
        version = browser.send("Browser.getVersion").get("product", "")
        session = browser.open(page, size=(width, height))
        shot = browser.send("Page.captureScreenshot", {"format": "png", "clip": {
            "x": 0, "y": 0, "width": width, "height": height, "scale": 1}}, session=session, timeout=60)
    finally:
        browser.close()
    return base64.b64decode(shot["data"]), version


def reduce_png(png: bytes, limit: int = LIMIT) -> tuple[bytes, int]:
    """``png`` as a palette PNG under ``limit`` bytes (the most colours of COLOURS that fit); returns it and its
    number of colours."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    size = 0
    for colours in COLOURS:
        out = io.BytesIO()
        image.quantize(colours).save(out, format="PNG", optimize=True)
        size = out.tell()
        if size < limit:
            return out.getvalue(), colours
    raise StainshiftError(f"the screenshot is {size} bytes with {COLOURS[-1]} colours, over {limit}; "
                          "take a smaller --height")


# -- the script ---------------------------------------------------------------------------------------------------
def _benchmark_provenance(project, src: str, dst: str) -> dict[str, Any] | None:
    from stainshift import runs

    made = runs.benchmark_dir(project, src, dst) / "provenance.json"
    if not made.is_file():
        return None
    full = json.loads(made.read_text())
    return {k: full.get(k) for k in ("started", "commit", "dirty", "command")}


def make(project_dir: Path, src: str, dst: str, width: int = WIDTH, height: int = HEIGHT,
         results: Path = RESULTS) -> tuple[Path, Path]:
    """Build the report into a temporary folder, photograph it, write the PNG and its provenance JSON; returns
    their paths."""
    from stainshift.project import load_project
    from stainshift.report import build_report

    binary = find_chromium()
    if binary is None:
        raise StainshiftError(f"no browser found (tried {', '.join(BROWSERS)}); apt-get install chromium")
    started = record({"project": str(project_dir), "src": src, "dst": dst, "width": width, "height": height})
    project = load_project(project_dir)
    with tempfile.TemporaryDirectory(prefix="report_screenshot.") as tmp:
        page = build_report(project, src, dst, Path(tmp) / "report")
        raw, browser = screenshot(binary, page, Path(tmp) / "profile", width, height)
    small, colours = reduce_png(raw)
    png, meta = results / "report_screenshot.png", results / "report_screenshot.json"
    atomic_write_bytes(png, small)
    about = {"provenance": started, "what": f"top {width}x{height} CSS px of `stainshift report --src {src} --dst "
                                            f"{dst}`, built into a temporary folder",
             "project": str(project.root), "benchmark": _benchmark_provenance(project, src, dst),
             "browser": browser, "viewport": [width, height], "device_scale_factor": 1,
             "png": {"file": png.name, "bytes": len(small), "sha256": hashlib.sha256(small).hexdigest(),
                     "colours": colours, "unreduced_bytes": len(raw)}}
    atomic_write_text(meta, json.dumps(about, indent=2) + "\n")
    return png, meta


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module's docstring."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", type=Path, default=DEFAULT_PROJECT,
                   help=f"project folder (or its stainshift.toml) with a finished benchmark (default "
                        f"{DEFAULT_PROJECT})")
    p.add_argument("--src", default="hgtp", help="the benchmark's source domain (default hgtp)")
    p.add_argument("--dst", default="clinic", help="the benchmark's target domain (default clinic)")
    p.add_argument("--width", type=int, default=WIDTH, help=f"viewport width in CSS px (default {WIDTH})")
    p.add_argument("--height", type=int, default=HEIGHT, help=f"viewport height in CSS px (default {HEIGHT})")
    p.add_argument("--allow-dirty", action="store_true", help="run on a tree with uncommitted changes")
    args = p.parse_args(argv)
    try:
        require_clean(args.allow_dirty, "benchmarks/report_screenshot.py")
        png, meta = make(args.project, args.src, args.dst, args.width, args.height)
    except StainshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {png} ({png.stat().st_size} bytes) and {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
