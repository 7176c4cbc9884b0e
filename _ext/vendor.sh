#!/usr/bin/env bash
# Fetch the book's JavaScript from the npm registry into _vendor_static/vendor/ (not committed):
# MathJax 3 (the whole es5/ folder: fonts and extensions load relative to the script),
# the standalone ipywidgets HTML manager (bundles the standard widgets, needs no require.js),
# and plotly.js at the version the installed plotly package was built for.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
MATHJAX=3.2.2
HTML_MANAGER=1.0.15
PLOTLYJS="$("$PY" -c 'import plotly.offline as o; print(o.get_plotlyjs_version())')"
out=_vendor_static/vendor
stamp="$out/.complete"
want="mathjax@$MATHJAX html-manager@$HTML_MANAGER plotly.js@$PLOTLYJS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "vendor: up to date ($want)"; exit 0
fi
command -v npm >/dev/null || { echo "vendor: npm is needed to fetch MathJax, plotly.js and the widget manager (apt-get install npm)" >&2; exit 1; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "mathjax@$MATHJAX" "@jupyter-widgets/html-manager@$HTML_MANAGER" \
    "plotly.js-dist-min@$PLOTLYJS" >/dev/null)
for t in "$tmp"/*.tgz; do mkdir -p "${t%.tgz}"; tar -xzf "$t" -C "${t%.tgz}"; done
staging="$tmp/vendor"
mkdir -p "$staging"/{mathjax,html-manager,plotly}
cp -R "$tmp/mathjax-$MATHJAX/package/es5/." "$staging/mathjax/"
hm="$tmp/jupyter-widgets-html-manager-$HTML_MANAGER/package/dist"
cp "$hm"/embed.js "$staging/html-manager/"
cp "$hm"/*.woff "$hm"/*.woff2 "$hm"/*.ttf "$hm"/*.eot "$hm"/*.svg "$staging/html-manager/" 2>/dev/null || true
cp "$tmp/plotly.js-dist-min-$PLOTLYJS/package/plotly.min.js" "$staging/plotly/"
echo "$want" > "$staging/.complete"
mkdir -p _vendor_static
rm -rf "$out.old"; [ -d "$out" ] && mv "$out" "$out.old"
mv "$staging" "$out"; rm -rf "$out.old"
echo "vendor: fetched $want into $out"
