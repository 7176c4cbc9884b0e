"""The built HTML book in headless Chromium.

The book is built in a temporary folder from the golden smoke runs (``tests/golden/*.ipynb``)
in place of ``book/*.ipynb``, with the repository's own ``_config.yml``, ``_toc.yml``, ``_ext/``
and the other files of ``book/``. Each page of ``_toc.yml`` is then served from 127.0.0.1 and
opened in Debian's ``chromium`` through Playwright. A page passes when every request stays on
that server, no script logs an error, every image loads, every plotly figure draws and every
ipywidget renders; every numbered chapter must show a figure, and an interactive one (a plotly
figure or a widget).

Full-page screenshots and ``report.json`` go to ``<artifacts>/test-artifacts/book-html/``.
``FTGEO_BOOK_HTML=_build/html pytest tests/test_book_html.py`` checks the book that ``make book``
built instead.
The goldens keep the outputs the book needs (glue values, plotly figures, widgets; see
``tests/golden/make_golden.py``), so nothing is executed here.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import nbformat
import pytest
import yaml

from ftgeo._util import artifacts_dir

pytestmark = pytest.mark.browser  # select with -m browser, leave out with -m 'not browser'

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
CHROMIUM = os.environ.get("FTGEO_CHROMIUM", "/usr/bin/chromium")
RENDER_TIMEOUT_MS = 30_000

# Console errors that are not faults of the book. Each entry says where it comes from.
BENIGN_CONSOLE_ERRORS = [
    # pydata-sphinx-theme on a first visit, when localStorage holds no theme yet.
    re.compile(r"^Got invalid theme mode: .*Resetting to auto\.$"),
]


def _toc_files() -> list[str]:
    """The documents of ``_toc.yml`` in reading order (``book/intro``, ``book/01_...``)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [str(Path(f).with_suffix("")) for f in files]


PAGES = _toc_files()


def _is_chapter(page: str) -> bool:
    """Numbered chapters (``book/01_...``) carry figures; the intro and scorecard do not."""
    return re.match(r"\d\d_", Path(page).name) is not None


def _unavailable(message: str):
    """Fail in CI (a missing tool must never pass silently there); skip on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


# ---------------------------------------------------------------------------------------------
# Set-up: Chromium, the vendored JavaScript, the smoke runs and the build


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path to Debian's chromium. The test installs nothing: ``.ci/run`` installs chromium
    (``apt-get install chromium``) before it runs the tests."""
    if Path(CHROMIUM).is_file():
        return CHROMIUM
    _unavailable(f"headless Chromium is needed at {CHROMIUM}: run `apt-get install chromium` as root "
                 "(Debian package; .ci/run does), or point FTGEO_CHROMIUM at a Chromium binary. "
                 "Leave the browser test out with `pytest -m 'not browser'`")


@pytest.fixture(scope="module")
def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is missing: `make install` "
                     "(it is pinned in requirements.txt)")
    return sync_playwright


@pytest.fixture(scope="module")
def vendored() -> Path:
    """``_vendor_static/``, which ``make vendor`` (run by ``make test`` and ``make book``)
    fills with the book's JavaScript; the test fetches nothing itself."""
    folder = ROOT / "_vendor_static"
    if not (folder / "vendor" / ".complete").is_file():
        _unavailable("the book's JavaScript is not in _vendor_static/: run `make vendor` "
                     "(it needs npm and the npm registry once)")
    return folder


def _sources() -> tuple[dict[str, Path], list[str]]:
    """For each notebook page of the table of contents, the notebook the test book uses: the
    golden smoke run if there is one, else the executed ``book/`` notebook (written by
    ``make book``). Also the pages that have neither."""
    sources, missing = {}, []
    for page in PAGES:
        name = Path(page).name
        if (ROOT / f"{page}.md").is_file() or name == "execution":  # execution.md: written by the pipeline
            continue
        golden, built = GOLDEN / f"{name}.ipynb", ROOT / f"{page}.ipynb"
        if golden.is_file():
            sources[page] = golden
        elif built.is_file():
            sources[page] = built
        else:
            missing.append(page)
    return sources, missing


@pytest.fixture(scope="module")
def report_dir() -> Path:
    folder = artifacts_dir() / "test-artifacts" / "book-html"
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.png"), folder / "report.json"]:
        old.unlink(missing_ok=True)
    return folder


def _missing_glue(notebook: Path) -> list[str]:
    """The glue keys that the notebook's Markdown cites and none of its outputs holds (a golden
    whose glue cells were committed without outputs cannot be built with -W as it is)."""
    nb = nbformat.read(notebook, as_version=4)
    text = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    cited = {ref.split(":")[0] for ref in re.findall(r"\{glue(?::\w+)?\}`([^`]+)`", text)
             if "::" not in ref}  # path::key glues from another page
    cited |= set(re.findall(r"^\s*[`:]{3,}\{glue(?::\w+)?\}\s+(\S+)", text, flags=re.M))
    glued = {out.get("metadata", {}).get("scrapbook", {}).get("name")
             for cell in nb.cells for out in cell.get("outputs", [])}
    return sorted(cited - glued)


@pytest.fixture(scope="module")
def smoke_runs() -> dict[str, Path]:
    """The notebook of each notebook page (see :func:`_sources`). A golden that lacks a glue
    output its text cites cannot be built with -W: the test says to regenerate it."""
    sources, _ = _sources()
    incomplete = {p.name: keys for p in sources.values() if p.parent == GOLDEN
                  and (keys := _missing_glue(p))}
    assert not incomplete, (
        f"golden smoke runs without the glue outputs their text cites: {incomplete}; "
        "regenerate them with `python tests/golden/make_golden.py` (it keeps glue outputs)")
    return sources


@dataclass
class Build:
    html: Path
    returncode: int
    warnings: list[str]
    missing: list[str]  # pages of _toc.yml with neither a golden nor a book/ notebook


@pytest.fixture(scope="module")
def book(tmp_path_factory, vendored, smoke_runs) -> Build:
    """The book built with ``jupyter-book build -W --keep-going`` from the smoke runs; or, with
    FTGEO_BOOK_HTML=<folder>, a book already built there (``make book``: ``_build/html``),
    which the browser then checks as it is."""
    if os.environ.get("FTGEO_BOOK_HTML"):
        built = Path(os.environ["FTGEO_BOOK_HTML"])
        assert (built / "index.html").is_file(), f"FTGEO_BOOK_HTML={built} holds no built book"
        return Build(built, 0, [], [])
    src = tmp_path_factory.mktemp("book-src")
    for name in ["_config.yml", "_toc.yml", *[p.name for p in ROOT.glob("*.bib")]]:
        shutil.copy2(ROOT / name, src / name)
    for folder in ["_ext", "_static"]:
        if (ROOT / folder).is_dir():
            shutil.copytree(ROOT / folder, src / folder)
    # Everything of book/ except the notebooks: intro.md, bibliographies, images.
    shutil.copytree(ROOT / "book", src / "book", ignore=shutil.ignore_patterns("*.ipynb", "execution.md"))
    from ftgeo.pipeline import write_execution_page

    write_execution_page(src / "book" / "execution.md", [])  # the pipeline writes it for make book
    (src / "_vendor_static").symlink_to(vendored, target_is_directory=True)
    for page, notebook in smoke_runs.items():
        shutil.copy2(notebook, src / f"{page}.ipynb")
    done = subprocess.run([str(Path(sys.executable).with_name("jupyter-book")), "build", str(src),
                           "-W", "--keep-going"], capture_output=True, text=True)
    log = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    return Build(src / "_build" / "html", done.returncode, warnings, _sources()[1])


# ---------------------------------------------------------------------------------------------
# The browser


@dataclass
class PageReport:
    page: str
    built: bool
    requests: int = 0
    outside_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0
    plotly_outputs: int = 0  # plotly figures in the page's HTML
    plotly_rendered: int = 0  # of those, drawn (an svg .main-svg inside)
    widget_outputs: int = 0  # ipywidgets views in the page's HTML
    widgets_rendered: int = 0
    screenshot: str = ""

    @property
    def figures(self) -> int:
        return self.images - len(self.broken_images) + self.plotly_rendered + self.widgets_rendered

    @property
    def interactive(self) -> int:
        return self.plotly_rendered + self.widgets_rendered


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# Counted after the page's scripts ran: figures, how many plotly drew, widgets rendered by the
# html-manager (it puts each view into a .widget-subarea before its script tag).
_MEASURE = """() => {
  const imgs = [...document.querySelectorAll('img')];
  return {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    plotly: [...document.querySelectorAll('.plotly-graph-div')]
              .filter(d => d.classList.contains('js-plotly-plot') && d.querySelector('svg.main-svg'))
              .length,
    widgets: [...document.querySelectorAll('.widget-subarea')]
               .filter(d => d.querySelector('.jupyter-widgets')).length,
  };
}"""

_SETTLED = """([nPlotly, nWidgets]) =>
  [...document.images].every(i => i.complete)
  && document.querySelectorAll('.js-plotly-plot svg.main-svg').length >= nPlotly
  && document.querySelectorAll('.widget-subarea .jupyter-widgets').length >= nWidgets"""


def _visit(context, base: str, page: str, html: Path, shots: Path) -> PageReport:
    text = html.read_text(encoding="utf-8")
    report = PageReport(page, built=True,
                        plotly_outputs=len(re.findall(r'class="plotly-graph-div"', text)),
                        widget_outputs=len(re.findall(
                            r'type="application/vnd\.jupyter\.widget-view\+json"', text)))
    tab = context.new_page()
    tab.on("request", lambda _: setattr(report, "requests", report.requests + 1))
    tab.on("console", lambda m: m.type == "error" and report.console_errors.append(
        f"{m.text} ({m.location.get('url', '')}:{m.location.get('lineNumber', '')})"))
    tab.on("pageerror", lambda err: report.console_errors.append(f"uncaught: {err}"))
    tab.on("requestfailed", lambda r: r.url not in report.outside_requests
           and report.failed_requests.append(f"{r.url}: {r.failure}"))
    tab.on("response", lambda r: r.status >= 400
           and report.failed_requests.append(f"{r.url}: HTTP {r.status}"))
    tab.on("websocket", lambda ws: report.outside_requests.append(ws.url))

    def route(request_route):
        url = request_route.request.url
        if urlsplit(url).netloc == urlsplit(base).netloc:
            request_route.continue_()
        else:  # never let a page reach the internet; the test fails on it
            report.outside_requests.append(url)
            request_route.abort()

    context.route("**/*", route)
    tab.goto(f"{base}/{page}.html", wait_until="load")
    try:
        tab.wait_for_function(_SETTLED, arg=[report.plotly_outputs, report.widget_outputs],
                              timeout=RENDER_TIMEOUT_MS)
    except Exception:  # playwright's TimeoutError: what did not render is reported below
        pass
    # Then until no request starts for a second (late fonts, async scripts). Playwright's
    # "networkidle" never comes on the pages with plotly figures, with no request pending.
    seen, deadline = -1, time.monotonic() + RENDER_TIMEOUT_MS / 1000
    while seen != report.requests and time.monotonic() < deadline:
        seen = report.requests
        tab.wait_for_timeout(1000)
    measured = tab.evaluate(_MEASURE)
    report.images, report.broken_images = measured["images"], measured["broken"]
    report.plotly_rendered, report.widgets_rendered = measured["plotly"], measured["widgets"]
    shot = shots / f"{Path(page).name}.png"
    tab.screenshot(path=str(shot), full_page=True)
    report.screenshot = str(shot)
    report.console_errors = [e for e in report.console_errors
                             if not any(p.search(e.split(" (")[0]) for p in BENIGN_CONSOLE_ERRORS)]
    tab.close()
    context.unroute("**/*", route)
    return report


@pytest.fixture(scope="module")
def rendered(book, chromium, sync_playwright, report_dir) -> dict[str, PageReport]:
    """Every page of the table of contents, opened once; screenshots and report.json."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(book.html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"127.0.0.1:{server.server_port}"
    reports = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            for page in PAGES:
                html = book.html / f"{page}.html"
                reports[page] = (_visit(context, f"http://{host}", page, html, report_dir)
                                 if html.is_file() else PageReport(page, built=False))
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    summary = {page: {**asdict(r), "figures": r.figures, "interactive": r.interactive}
               for page, r in reports.items()}
    (report_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\nbook-html: screenshots and report.json in {report_dir}")
    for page, r in reports.items():
        print(f"  {page}: images {r.images - len(r.broken_images)}/{r.images}, plotly "
              f"{r.plotly_rendered}/{r.plotly_outputs}, widgets {r.widgets_rendered}/"
              f"{r.widget_outputs}, outside requests {len(r.outside_requests)}, console errors "
              f"{len(r.console_errors)}")
    return reports


# ---------------------------------------------------------------------------------------------
# The tests


def test_book_builds_without_warnings(book):
    assert book.returncode == 0, (
        "jupyter-book build -W --keep-going of the smoke-run book failed"
        + (f"; no golden smoke run (tests/golden/) and no executed book/ notebook for "
           f"{book.missing}: add the chapter to tests/golden/make_golden.py and run it"
           if book.missing else "")
        + ":\n" + "\n".join(book.warnings[-30:]))


@pytest.mark.parametrize("page", PAGES, ids=[Path(p).name for p in PAGES])
def test_page_renders(rendered, page):
    r = rendered[page]
    assert r.built, (f"{page}.html is not in the built site (see test_book_builds_without_"
                     f"warnings for why)")
    problems = []
    if r.outside_requests:
        problems.append(f"requests to outside hosts (blocked): {r.outside_requests}")
    if r.failed_requests:
        problems.append(f"failed requests: {r.failed_requests}")
    if r.console_errors:
        problems.append(f"console errors: {r.console_errors}")
    if r.broken_images:
        problems.append(f"images that did not load: {r.broken_images}")
    if r.plotly_rendered < r.plotly_outputs:
        problems.append(f"{r.plotly_outputs - r.plotly_rendered} of {r.plotly_outputs} plotly "
                        "figures did not draw")
    if r.widgets_rendered < r.widget_outputs:
        problems.append(f"{r.widget_outputs - r.widgets_rendered} of {r.widget_outputs} "
                        "ipywidgets did not render")
    if _is_chapter(page) and r.figures == 0:
        problems.append("the chapter shows no figure")
    assert not problems, f"{page} ({r.screenshot}):\n  " + "\n  ".join(problems)


def test_every_chapter_has_an_interactive_figure(rendered):
    """The issue's done-when: a drawn plotly figure or a rendered widget in every chapter."""
    chapters = [page for page in PAGES if _is_chapter(page)]
    lacking = [page for page in chapters if rendered[page].interactive == 0]
    assert not lacking, (f"{len(lacking)} of {len(chapters)} chapters have no interactive "
                         f"figure (plotly or ipywidgets): {lacking}")
