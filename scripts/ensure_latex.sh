#!/usr/bin/env bash
# The LaTeX test (tests/wfexplain/test_latex.py) compiles the exported metric tables with Debian's pdflatex and booktabs
# (texlive-latex-base: about 39 MB to download with its dependencies; texlive-latex-recommended: 9 MB more).
set -euo pipefail
have_latex() { command -v pdflatex >/dev/null && kpsewhich booktabs.sty >/dev/null 2>&1; }
have_latex && exit 0
packages="texlive-latex-base texlive-latex-recommended"  # pdflatex; booktabs.sty
if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "installing the Debian packages $packages (for the LaTeX test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086  # two package names
  apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $packages >/dev/null 2>&1; } \
    || echo "could not install $packages: the LaTeX test will be skipped" >&2
  have_latex || echo "pdflatex with booktabs.sty is still missing: the LaTeX test will be skipped" >&2
  exit 0
fi
echo "pdflatex with booktabs.sty is missing: install it with" \
     "'sudo apt-get install --no-install-recommends $packages';" \
     "the LaTeX test is skipped until then." >&2
