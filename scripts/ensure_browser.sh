#!/usr/bin/env bash
# The end-to-end test drives Debian's Chromium through Playwright (never `playwright install`).
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing the Debian package chromium (for the browser test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
    || echo "could not install chromium: the browser test will be skipped" >&2
  exit 0
fi
echo "Chromium (/usr/bin/chromium) is missing: install it with 'sudo apt-get install chromium';" \
     "the browser test is skipped until then." >&2
