"""`stainshift report` on a tiny real benchmark: the page's table is benchmark.csv, every image is a file next to the
page, missing pieces are one-line errors, and a headless Chromium loads the page with no console error."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import shutil
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from stainshift.benchmark import BenchmarkRequest, run_benchmark
from stainshift.errors import StainshiftError
from stainshift.project import load_project
from stainshift.report import FILES, MARKER, build_report
from stainshift.train.loop import TrainRequest, train

from .conftest import TINY_CYCLEGAN, simulated_project
from .test_benchmark import REQUEST

REPO = Path(__file__).resolve().parents[1]
REQUIRE_CHROMIUM = os.environ.get("STAINSHIFT_REQUIRE_CHROMIUM") == "1"  # set by .ci/run where chromium is installed

# what the page shows of benchmark.csv, and how
SHOWN = {"accuracy": "{:.3f}", "ci_low": "{:.3f}", "ci_high": "{:.3f}", "macro_f1": "{:.3f}",
         **{f"d_{r}{p}": "{:+.3f}" for r in ("original", "classical", "augment") for p in ("", "_low", "_high")},
         "gap_closed": "{:.0%}", "gap_low": "{:.0%}", "gap_high": "{:.0%}"}


@pytest.fixture(scope="module")
def benchmarked(tmp_path_factory):
    """A simulated pair with a 2-epoch CycleGAN (tracked, for its mlflow run id) and a one-classifier benchmark."""
    project = simulated_project(tmp_path_factory.mktemp("report"), per_class=6, split=(0.5, 0.25, 0.25))
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="g", progress=False, track=True,
                                overrides={**TINY_CYCLEGAN, "epochs": 2, "keep_epochs": (1, 2)}))
    run_benchmark(project, BenchmarkRequest("hgtp", "clinic", **{**REQUEST, "stain_augment": ("lab",)}))
    return project


@pytest.fixture(scope="module")
def page(benchmarked) -> Path:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = build_report(benchmarked, "hgtp", "clinic")
    # no page note: the confusion matrices agree with the table, the selection records with its rows
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    return path


class Page(HTMLParser):
    """The parts of the page the tests read: result rows with their number cells, images, grid columns."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[dict]] = {}
        self.images: list[str] = []
        self.grid_rows: list[list[str | None]] = []
        self._table: str | None = None
        self._row: dict | None = None
        self._number: dict | None = None
        self._in_grid = self._in_grid_body = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data-table" in a:
            self._table = a["data-table"]
            self.tables[self._table] = []
        elif tag == "table" and a.get("class") == "grid":
            self._in_grid = True
        elif tag == "tbody" and self._in_grid:
            self._in_grid_body = True
        elif tag == "tr" and self._table and "data-condition" in a:
            self._row = {"classifier": a.get("data-classifier"), "condition": a["data-condition"], "numbers": {}}
        elif tag == "tr" and self._in_grid_body:
            self.grid_rows.append([])
        elif tag == "span" and self._row is not None and "data-col" in a:
            self._number = {"raw": a["data-value"], "text": ""}
            self._row["numbers"][a["data-col"]] = self._number
        elif tag == "img":
            self.images.append(a["src"])
            if self._in_grid_body:
                self.grid_rows[-1].append(a["src"])
        elif tag == "span" and self._in_grid_body and "empty" in a.get("class", ""):
            self.grid_rows[-1].append(None)

    def handle_endtag(self, tag):
        if tag == "span":
            self._number = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
            self._in_grid = self._in_grid_body = False

    def handle_data(self, data):
        if self._number is not None:
            self._number["text"] += data


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_page_table_holds_exactly_the_numbers_of_benchmark_csv(benchmarked, page):
    rows = _csv_rows(benchmarked.runs / "hgtp_to_clinic" / "benchmark" / "benchmark.csv")
    shown = Page(page.read_text()).tables["benchmark"]
    assert [(r["classifier"], r["condition"]) for r in shown] == [(r["classifier"], r["condition"]) for r in rows]
    for row, on_page in zip(rows, shown, strict=True):
        assert set(on_page["numbers"]) == set(SHOWN)
        for column, fmt in SHOWN.items():
            cell = on_page["numbers"][column]
            if row[column] == "":
                assert cell["raw"] == "" and cell["text"] == "–"
            else:  # the file's exact text, and the shown value rounded from it
                assert cell["raw"] == row[column], (row["condition"], column)
                assert float(cell["raw"]) == float(row[column])
                assert cell["text"] == fmt.format(float(row[column])), (row["condition"], column)
    text = page.read_text()
    run = benchmarked.runs / "hgtp_to_clinic" / "cyclegan" / "g"
    selected = json.loads((run / "selected.json").read_text())
    assert selected["reason"] in text.replace("&gt;", ">").replace("&lt;", "<")  # the rule's reason, as written
    config = json.loads((run / "config.json").read_text())
    assert f"#/runs/{config['mlflow_run_id']}" in text and "mlflow ui --backend-store-uri" in text
    assert json.loads((run.parents[1] / "benchmark" / "provenance.json").read_text())["command"] in text


def test_every_image_is_a_file_in_the_report_folder_and_the_grid_shows_the_same_cells(benchmarked, page):
    parsed = Page(page.read_text())
    assert parsed.images
    for src in parsed.images:
        assert "://" not in src and not src.startswith("/")  # relative: the folder can be moved
        path = (page.parent / src).resolve()
        assert path.is_relative_to(page.parent.resolve()) and path.is_file(), src
        assert cv2.imread(str(path)) is not None, src
    # columns: original, 3 classical methods, 2 kept epochs, the target's own cells; rows: 2 cells per class
    assert len(parsed.grid_rows) == 2 * 2 and {len(r) for r in parsed.grid_rows} == {7}
    for row in parsed.grid_rows:  # every column shows the same source cell (a real image), the target column too
        assert all(row) and len({Path(src).name for src in row[:-1]}) == 1
    for source in ("accuracy_vs_epoch.png",):
        assert f"files/plots/{source}" in parsed.images

    assert (page.parent / FILES / MARKER).is_file()  # the report owns its files/ folder

    # another folder holding an earlier report (2 cells per class, one more leftover): the new page (1 cell per class)
    # removes the files it does not show, the page is still whole
    out = page.parent.parent / "report_copy"
    shutil.copytree(page.parent, out)
    stale = out / "files" / "cells" / "old" / "gone.png"
    stale.parent.mkdir(parents=True)
    shutil.copyfile(page.parent / parsed.images[0], stale)
    again = build_report(benchmarked, "hgtp", "clinic", out, per_class=1, confusions=False)
    assert again == out / "index.html" and not stale.exists() and not stale.parent.exists()
    copy = Page(again.read_text())
    assert len(copy.grid_rows) == 2 and all((out / src).is_file() for src in copy.images)
    kept = {p.relative_to(out).as_posix() for p in (out / FILES).rglob("*") if p.is_file()}
    assert kept == {*copy.images, f"{FILES}/{MARKER}"}
    assert copy.tables["benchmark"] == parsed.tables["benchmark"]
    assert not list(out.glob(".*.tmp*")) and not list((out / "files").rglob(".*.tmp*"))  # atomic writes, no debris


def test_an_out_folder_the_report_did_not_write_is_refused_and_left_untouched(benchmarked, tmp_path, capsys):
    from stainshift.cli.main import main

    def snapshot(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    # `--out ~/share` where ~/share/files/ is someone's own folder: pruning it would delete their files
    share = tmp_path / "share"
    (share / "files" / "photos").mkdir(parents=True)
    (share / "files" / "notes.txt").write_text("mine")
    (share / "files" / "photos" / "cat.png").write_bytes(b"not the report's")
    (share / "readme.md").write_text("mine too")
    before = snapshot(share)
    with pytest.raises(StainshiftError, match=rf"^{re.escape(str(share / 'files'))}: not written by stainshift report "
                                              r".*; choose another --out$"):
        build_report(benchmarked, "hgtp", "clinic", share, confusions=False)
    assert snapshot(share) == before and not (share / "index.html").exists()
    code = main(["report", "--src", "hgtp", "--dst", "clinic", "--project", str(benchmarked.file), "--out", str(share),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "choose another --out" in err and "Traceback" not in err
    assert snapshot(share) == before

    # an index.html of someone else's (no files/ yet) is not overwritten either
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<p>my page</p>")
    with pytest.raises(StainshiftError, match=r"index\.html: not written by stainshift report .*choose another --out"):
        build_report(benchmarked, "hgtp", "clinic", site, confusions=False)
    assert snapshot(site) == {"index.html": b"<p>my page</p>"}


def test_missing_pieces_are_one_line_errors_naming_the_command(benchmarked, tmp_path, capsys):
    from stainshift.cli.main import main

    fresh = simulated_project(tmp_path / "fresh", per_class=2, split=(0.5, 0.25, 0.25))
    code = main(["report", "--src", "hgtp", "--dst", "clinic", "--project", str(fresh.file), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "run `stainshift benchmark --src hgtp --dst clinic` first" in err
    assert not (fresh.runs / "hgtp_to_clinic" / "report").exists()
    code = main(["report", "--src", "hgtp", "--dst", "nowhere", "--project", str(fresh.file)])
    err = capsys.readouterr().err
    assert code == 2 and "unknown domain 'nowhere'" in err and err.count("\n") == 1

    # a run trained after the benchmark: the table would describe another run than the page; rerun the benchmark
    copy = tmp_path / "copy"
    shutil.copytree(benchmarked.root, copy, ignore=shutil.ignore_patterns("report*", "mlflow.db", "mlartifacts"))
    project = load_project(copy / "stainshift.toml")
    train(project, TrainRequest(src="hgtp", dst="clinic", run_id="newer", progress=False, track=False,
                                overrides={**TINY_CYCLEGAN, "epochs": 1, "keep_epochs": (1,)}))
    with pytest.raises(StainshiftError, match=r"newer: epoch 1 is not in the benchmark .*rerun `stainshift benchmark"):
        build_report(project, "hgtp", "clinic", confusions=False)
    shutil.rmtree(project.runs / "hgtp_to_clinic" / "benchmark")
    code = main(["report", "--src", "hgtp", "--dst", "clinic", "--project", str(project.file)])
    err = capsys.readouterr().err
    assert code == 2 and "no benchmark for hgtp -> clinic yet" in err and err.count("\n") == 1


# -- a real browser -----------------------------------------------------------------------------------------------
def _screenshot_script():
    """benchmarks/report_screenshot.py, which holds the browser helpers (find_chromium, DevTools) this test shares."""
    spec = importlib.util.spec_from_file_location("report_screenshot", REPO / "benchmarks" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


browser = _screenshot_script()


def load_in_chromium(binary: str, page: Path, profile: Path) -> tuple[list[dict], list[str], list[str]]:
    """Open ``page`` in a fresh headless Chromium; returns every image's state after the load event, the console
    errors (console.error, uncaught exceptions, browser log errors such as a file that failed to load) and every URL
    the page requested."""
    chromium = browser.DevTools(binary, profile)
    try:
        session = chromium.open(page, ("Runtime", "Log", "Network", "Page"))
        state = chromium.send("Runtime.evaluate", {"returnByValue": True, "expression": (
            "JSON.stringify(Array.from(document.images, i => ({src: i.getAttribute('src'), complete: i.complete, "
            "width: i.naturalWidth})))")}, session=session)
        images = json.loads(state["result"]["value"])
    finally:
        chromium.close()
    errors, requested = [], []
    for event in chromium.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            errors.append(f"failed: {params.get('errorText')}")
        elif method == "Network.requestWillBeSent":
            requested.append(params["request"]["url"])
    return images, errors, requested


@pytest.mark.skipif(browser.find_chromium() is None and not REQUIRE_CHROMIUM, reason="chromium is not installed "
                    "(apt-get install chromium); the browser check needs it")
def test_chromium_loads_the_page_with_every_image_and_no_console_error(page, tmp_path):
    binary = browser.find_chromium()
    assert binary is not None, "STAINSHIFT_REQUIRE_CHROMIUM=1 but no chromium on PATH: the browser check cannot run"
    images, errors, requested = load_in_chromium(binary, page, tmp_path / "profile")
    assert errors == []
    assert len(images) == len(Page(page.read_text()).images) > 10
    assert [i["src"] for i in images if not i["complete"] or i["width"] == 0] == []
    assert requested and all(url.startswith(("file://", "data:")) for url in requested)  # nothing from the network

    # the check can fail: the same page with one image gone gives a console error and an image of width 0
    broken = tmp_path / "broken"
    shutil.copytree(page.parent, broken)
    (broken / images[0]["src"]).unlink()
    images, errors, _ = load_in_chromium(binary, broken / "index.html", tmp_path / "profile2")
    assert errors and [i["src"] for i in images if i["width"] == 0] == [images[0]["src"]]

    # the README's screenshot (benchmarks/report_screenshot.py): the viewport's size, and under 1 MB once reduced
    shot, version = browser.screenshot(binary, page, tmp_path / "profile3", 320, 400)
    assert version and cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR).shape == (400, 320, 3)
    small, colours = browser.reduce_png(shot)
    assert len(small) < browser.LIMIT and colours == browser.COLOURS[0]
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape == (400, 320, 3)
