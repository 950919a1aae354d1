#!/usr/bin/env bash
# The out-of-distribution tests (tests/wfexplain/explain/test_ood.py) use the 20 sample photos each of ImageNet,
# CIFAR-10, CIFAR-100, MNIST and Fashion-MNIST that PyPI's foolbox wheel ships (foolbox/data/*.png, *.jpg).
# Downloads that one wheel once with pip (no dependencies, nothing else from the network) and extracts the photos
# into $WFEXPLAIN_PHOTOS (default ~/.cache/wfexplain/photos). Idempotent: exits at once when they are there.
set -euo pipefail
version="3.3.4"
sha256="11049d515d38e765e206a73ace9cc648b81a0d6d1da9ad9057e149ee117989cb"  # foolbox-3.3.4-py3-none-any.whl on PyPI
dir="${WFEXPLAIN_PHOTOS:-$HOME/.cache/wfexplain/photos}"
stamp="$dir/.foolbox-$version"
[ -f "$stamp" ] && exit 0
python="${PYTHON:-}"
[ -z "$python" ] && { [ -x .venv/bin/python ] && python=.venv/bin/python || python=python3; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "could not get the foolbox sample photos ($1): the out-of-distribution photo tests will be skipped" \
       "(and fail under CI)" >&2
  case "${CI:-}" in ""|0|false|FALSE|False) exit 0 ;; *) exit 1 ;; esac
}
echo "downloading the foolbox $version wheel for its sample photos into $dir" >&2
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "foolbox==$version" \
  >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log" >&2; fail "pip download foolbox==$version failed"; }
mkdir -p "$dir"
"$python" - "$tmp" "$dir" "$sha256" <<'PY' || fail "the wheel is not the expected one or holds no photos"
import hashlib, sys, zipfile
from pathlib import Path
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = tmp.glob("foolbox-*.whl")
if hashlib.sha256(wheel.read_bytes()).hexdigest() != sys.argv[3]:
    sys.exit(f"{wheel.name} does not have the expected SHA-256")
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("foolbox/data/") and n.endswith((".png", ".jpg"))]
    for n in names:
        (out / Path(n).name).write_bytes(z.read(n))
kinds = {k: sum(Path(n).name.startswith(k + "_") for n in names) for k in ("imagenet", "cifar10", "mnist")}
if min(kinds.values()) < 20:
    sys.exit(f"expected 20 photos each, found {kinds}")
PY
touch "$stamp"
