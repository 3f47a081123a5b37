#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test (nbdev-test on the notebooks, then pytest).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=1 source tools/install.sh
[ -f tools/install_chromium.sh ] && bash tools/install_chromium.sh
source tools/data.sh
echo "== nbdev-test"
nbdev-test --timing
echo "== pytest"
"$PY" -m pytest tests "$@"
