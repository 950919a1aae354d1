#!/usr/bin/env bash
# Debian's python3 lacks ensurepip (venv) until python3.11-venv is installed.
set -euo pipefail
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing the Debian package python3.11-venv" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11-venv >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11-venv >/dev/null; }
  exit 0
fi
echo "Python's venv module is missing: install it with 'sudo apt-get install python3.11-venv'." >&2
exit 1
