# Sourced by the tools/*.sh scripts: install fastai_simclr (and, with DEV=1, its test tools) into the current Python.
# An installed torch is kept; without one, the tested pair torch 2.14.1 / torchvision 0.29.1 is installed first,
# so that no requirement pulls a newer (multi-GB) torch.
PY="${PYTHON:-python3}"
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
  "$PY" -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
if [ "${DEV:-0}" = 1 ]; then "$PY" -m pip install --quiet -e ".[dev]"; else "$PY" -m pip install --quiet -e .; fi
