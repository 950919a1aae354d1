#!/usr/bin/env bash
# Make sure Fashion-MNIST is on disk (Debian package dataset-fashion-mnist), or explain how to get it.
set -euo pipefail
dir="${WFEXPLAIN_DATA:-/usr/share/datasets/fashion-mnist}"
for d in "$dir" "$dir/fashion-mnist"; do
  [ -f "$d/train-images-idx3-ubyte.gz" ] && exit 0
done
if [ -n "${WFEXPLAIN_DATA:-}" ]; then
  echo "WFEXPLAIN_DATA=$WFEXPLAIN_DATA has no Fashion-MNIST idx files (train-images-idx3-ubyte.gz, ...)." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo="sudo -n"
if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; }; then
  echo "installing the Debian package dataset-fashion-mnist" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  exit 0
fi
cat >&2 <<MSG
Fashion-MNIST is missing and cannot be installed automatically (needs apt-get and root).
Either install it:   sudo apt-get install dataset-fashion-mnist
or point at a copy:  export WFEXPLAIN_DATA=/path/with/train-images-idx3-ubyte.gz
MSG
exit 1
