#!/usr/bin/env bash
# Builds the web demo into web/build/: installs the JS runtime from the lock (npm ci) and lays out the
# page with only the runtime files a browser loads, so the folder is served as is (no CDN, no bundler).
#   bash web/build.sh            (from anywhere; needs node and npm)
set -euo pipefail
cd "$(dirname "$0")"
npm ci --omit=dev --no-audit --no-fund --loglevel=error
rm -rf build.tmp
mkdir -p build.tmp/vendor/litertjs-core build.tmp/vendor/litertjs-wasm-utils build.tmp/wasm
cp index.html app.js pose.js style.css build.tmp/
cp node_modules/@litertjs/core/dist/index.js build.tmp/vendor/litertjs-core/
cp node_modules/@litertjs/wasm-utils/dist/index.js build.tmp/vendor/litertjs-wasm-utils/
# One thread, no JSPI: the relaxed-SIMD build, and the plain-SIMD build for browsers without relaxed SIMD
# (LiteRT.js picks between them); the threaded and JSPI builds are never requested by the page.
for name in litert_wasm_internal litert_wasm_compat_internal; do
  cp "node_modules/@litertjs/core/wasm/$name.js" "node_modules/@litertjs/core/wasm/$name.wasm" build.tmp/wasm/
done
rm -rf build
mv build.tmp build
echo "web demo built in $(pwd)/build"
