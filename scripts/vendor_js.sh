#!/usr/bin/env bash
# Vendors the browser libraries of the pages served outside the mixer (media_server/):
# hls.js from npm, for browsers without native HLS (Chrome, Firefox, Edge). npm installs
# into a scratch folder (no node_modules in the tree); only dist/hls.min.js is copied into
# media_server/static/vendor/ (git-ignored: this script, run by bootstrap.sh, makes it).
# Safe to run again: nothing is fetched when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

HLS_JS_VERSION=1.7.4
dest=media_server/static/vendor
stamp="$dest/hls.js.version"
if [ -f "$dest/hls.min.js" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$HLS_JS_VERSION" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "vendor_js: npm is needed to fetch hls.js (apt-get install npm)" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "vendor_js: installing hls.js@$HLS_JS_VERSION from npm"
npm install --silent --no-audit --no-fund --prefix "$work" "hls.js@$HLS_JS_VERSION" >/dev/null
mkdir -p "$dest"
cp "$work/node_modules/hls.js/dist/hls.min.js" "$dest/hls.min.js"
cp "$work/node_modules/hls.js/LICENSE" "$dest/hls.js.LICENSE"
echo "$HLS_JS_VERSION" >"$stamp"
echo "vendor_js: $dest/hls.min.js ($(wc -c <"$dest/hls.min.js") bytes)"
