#!/usr/bin/env bash
# Install headless Chromium for tests/test_docs_browser.py, once: does nothing when `chromium` is already on PATH.
# Debian's `chromium` package (/usr/bin/chromium); uses sudo when not run as root (GitHub runners).
# Usage: bash tools/install_chromium.sh
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
command -v chromium
