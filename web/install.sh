#!/usr/bin/env bash
# Vendors the web UI's front-end libraries (exact versions in package-lock.json, from the npm registry):
# `npm ci --omit=dev` here, then copies the files the browser loads into src/corral/web/static/vendor/
# (gitignored), where `corral serve` serves them under /ui/vendor/. Idempotent: skipped while the lock file
# is unchanged and the copies are there. Run by scripts/setup; needs node and npm.
set -euo pipefail
cd "$(dirname "$0")"
VENDOR=../src/corral/web/static/vendor
want="$(sha256sum package-lock.json install.sh | sha256sum | cut -c1-16)"
if [[ "$(cat "$VENDOR/.installed" 2>/dev/null || true)" == "$want" ]]; then
  exit 0
fi
npm ci --omit=dev --no-audit --no-fund --loglevel=error
rm -rf "$VENDOR"
mkdir -p "$VENDOR/xterm" "$VENDOR/novnc" "$VENDOR/swagger"
cp node_modules/@xterm/xterm/lib/xterm.mjs node_modules/@xterm/xterm/css/xterm.css \
   node_modules/@xterm/xterm/LICENSE "$VENDOR/xterm/"
cp node_modules/@xterm/addon-fit/lib/addon-fit.mjs "$VENDOR/xterm/"
cp -r node_modules/@novnc/novnc/core node_modules/@novnc/novnc/vendor node_modules/@novnc/novnc/LICENSE.txt \
   "$VENDOR/novnc/"
# /api/docs (Swagger UI) from these files too: no CDN.
cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
   node_modules/swagger-ui-dist/LICENSE "$VENDOR/swagger/"
echo "$want" >"$VENDOR/.installed"
echo "[web] front-end libraries vendored into src/corral/web/static/vendor/"
