# Sourced by the tools/*.sh scripts: make sure FASTAI_SIMCLR_DATA points at CIFAR-10 when it can be found offline.
# Order: an existing $FASTAI_SIMCLR_DATA; the archive in ../shared/data (extracted once to a cache folder);
# otherwise leave it unset, and fastai_simclr uses fastai's own download (needs internet).
if [ -z "${FASTAI_SIMCLR_DATA:-}" ]; then
  _archive="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/data/cifar10-jpg.tar.gz"
  if [ -f "$_archive" ]; then
    _dest="${XDG_CACHE_HOME:-$HOME/.cache}/fastai_simclr/data"
    if [ ! -d "$_dest/cifar10/train" ] || [ ! -d "$_dest/cifar10/test" ]; then
      echo "Extracting $_archive to $_dest"
      rm -rf "$_dest.partial" && mkdir -p "$_dest.partial" && tar xzf "$_archive" -C "$_dest.partial"
      rm -rf "$_dest" && mv "$_dest.partial" "$_dest"
    fi
    export FASTAI_SIMCLR_DATA="$_dest/cifar10"
  fi
fi
echo "CIFAR-10: ${FASTAI_SIMCLR_DATA:-fastai download, untar_data(URLs.CIFAR)}"
