#!/usr/bin/env bash
# The main job: installs fastai_simclr, then runs the SimCLR-vs-baseline experiment sized to this machine: `--budget 10m`
# measures the machine for about 30 s, then sizes the seed recipe to end within 10 minutes (the plan is printed first).
# With --preset (and no --budget), a fixed preset runs instead, e.g. `--preset cpu1h` (about an hour on a 2-core CPU) or
# `--preset seed --yes` (the published recipe, meant for a GPU); `--budget 1h` gives another budget. Arguments go to
# `fastai-simclr reproduce` (`--data DIR`, `--out DIR`, any preset setting: see `fastai-simclr reproduce --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/install.sh
source tools/data.sh
case " $* " in
  *" --preset"*|*" --budget"*) SIZE=() ;;
  *) SIZE=(--budget 10m) ;;
esac
echo "reproduce.sh: fastai-simclr reproduce ${SIZE[*]} $* (the plan is printed before the run starts; each phase says how long it will take)"
exec fastai-simclr reproduce "${SIZE[@]}" "$@"
