"""Sphinx extension: serve the book's JavaScript from the built site, never from a CDN.

* ``_vendor_static/`` (filled by ``_ext/vendor.sh`` from the npm registry at build time) is
  added to ``html_static_path`` only after Jupyter Book has scanned the static folders: Jupyter
  Book links every ``.js``/``.css`` file of those folders into every page, which would add
  MathJax's dozens of component files to each page.
* plotly.js is added to the pages that hold a plotly figure (and only to those), in ``<head>``,
  because the figures' inline scripts call ``Plotly.newPlot`` as the page loads.
* sphinx-thebe's inline loader names a CDN; with Thebe not enabled it is dropped.
"""

from pathlib import Path

from docutils import nodes

VENDOR = "_vendor_static"
PLOTLY_JS = "vendor/plotly/plotly.min.js"


def _add_vendor_static(app, config):
    folder = Path(app.srcdir, VENDOR)
    if not (folder / "vendor" / ".complete").is_file():
        raise RuntimeError(f"{folder}/vendor is missing or incomplete: run `bash _ext/vendor.sh` "
                           "(or `make book`) before `jupyter-book build`")
    config.html_static_path.append(str(folder))


def _page_context(app, pagename, templatename, context, doctree):
    if doctree is not None and any("plotly-graph-div" in node.astext()
                                   for node in doctree.findall(nodes.raw)):
        app.add_js_file(PLOTLY_JS)
    thebe = (app.config.html_theme_options or {}).get("launch_buttons", {}) or {}
    if not thebe.get("thebe") and not getattr(app.config, "thebe_config", {}).get("always_load"):
        scripts = context.get("script_files")
        if isinstance(scripts, list):
            scripts[:] = [s for s in scripts
                          if "THEBE_JS_URL" not in getattr(s, "attributes", {}).get("body", "")]


def setup(app):
    app.connect("config-inited", _add_vendor_static)
    app.connect("html-page-context", _page_context)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
