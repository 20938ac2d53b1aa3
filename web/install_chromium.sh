#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests (tests/browser.py runs this when chromium is absent).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
