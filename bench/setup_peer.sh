#!/usr/bin/env bash
# Install the peer library `self_supervised` (PyPI self-supervised==1.0.4) into its own virtual environment .venv-peer/,
# so it never becomes a dependency of fastai_simclr. The venv sees the global site-packages (torch, fastai, timm):
# the peer and its one missing dependency (kornia) are installed with --no-deps, and the script checks torch is unchanged.
# Prints the venv's python, for `fastai-simclr bench --peer-python`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV="${PEER_VENV:-.venv-peer}"
before=$("$PY" -c "import torch; print(torch.__version__)")
[ -x "$VENV/bin/python" ] || "$PY" -m venv --system-site-packages "$VENV"
if ! "$VENV/bin/python" -c "import self_supervised.vision.simclr" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --no-deps "self-supervised==1.0.4" "kornia>=0.7,<0.9" "kornia_rs>=0.1"
fi
after=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
[ "$before" = "$after" ] || { echo "setup_peer.sh: torch changed in $VENV ($before -> $after)" >&2; exit 1; }
"$VENV/bin/python" -c "import self_supervised.vision.simclr, kornia; print('self_supervised 1.0.4 + kornia', kornia.__version__, file=__import__('sys').stderr)"
echo "$(pwd)/$VENV/bin/python"
