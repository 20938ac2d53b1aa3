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
# A gzip copy (x.wasm.gz beside x.wasm) of each file a server may send compressed (pose.web_demo.GZIP_SUFFIXES):
# the WASM runtime is 9.4 MB as is and under 3 MB gzipped. `python -m pipeline demo` sends the .gz with
# Content-Encoding: gzip to browsers that accept it; publish gzips what it uploads to a bucket itself.
find build.tmp -type f \( -name '*.wasm' -o -name '*.js' -o -name '*.html' -o -name '*.css' \) \
  -exec gzip -9 -n -k {} \;
rm -rf build
mv build.tmp build
echo "web demo built in $(pwd)/build"
