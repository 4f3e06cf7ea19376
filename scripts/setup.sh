#!/usr/bin/env bash
# Set up everything mmulib needs on a Debian machine.  Safe to run again: when everything is
# already there it only checks, in about a second.
#
#   scripts/setup.sh lab    .venv with mmulib[test] + JupyterLab, and Graphviz's `dot`
#   scripts/setup.sh test   the same, plus Debian's Chromium for the browser tests
#
# As root, missing Debian packages are installed with apt-get (one `apt-get update` first).
# As another user, the script says exactly which packages to install and carries on; tests that
# need a missing tool are then skipped with that reason (tests/conftest.py).
#
# Environment: PYTHON (default python3) picks the interpreter for .venv, MMULIB_VENV the place.
set -euo pipefail

purpose=${1:-lab}
case $purpose in
  lab | test) ;;
  *) echo "usage: $0 [lab|test]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
venv=${MMULIB_VENV:-.venv}
python=${PYTHON:-python3}

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_updated=
# apt_install PKG...: install Debian packages if we are root and have apt-get; else return 1.
apt_install() {
  is_root && command -v apt-get >/dev/null || return 1
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
  say "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- Python >= 3.10 -------------------------------------------------------------------------
if ! command -v "$python" >/dev/null; then
  apt_install python3 python3-venv ||
    die "$python not found: install Python >= 3.10 (Debian: sudo apt-get install python3 python3-venv)"
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "mmulib needs Python >= 3.10, but $python is $("$python" -V 2>&1); set PYTHON=/path/to/python3.1x"
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# --- .venv ----------------------------------------------------------------------------------
venv_ok() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}
if ! venv_ok; then
  rm -rf "$venv"
  say "creating $venv with $python ($pyver)"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 ships venv without ensurepip; that lives in python3.X-venv.
    rm -rf "$venv"
    apt_install "python$pyver-venv" ||
      die "'$python -m venv' failed: install it with: sudo apt-get install python$pyver-venv"
    "$python" -m venv "$venv"
  fi
fi

# --- mmulib and its Python dependencies -----------------------------------------------------
# pip runs only when pyproject.toml changed since the last install (or the install is broken).
stamp="$venv/.mmulib-installed"
abs_venv=$(cd "$venv" && pwd)
want=$( (cat pyproject.toml; pwd) | sha256sum | cut -d' ' -f1)
installed() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/jupyter-lab" ] &&
    [ -x "$venv/bin/ruff" ] && (cd / && "$abs_venv/bin/python" -c 'import mmulib') 2>/dev/null
}
if ! installed; then
  say "pip install -e .[test] into $venv (first time: a minute or two)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" >"$stamp"
fi

# --- Graphviz's dot (the PyPI `graphviz` package is only a wrapper around it) ---------------
missing=()
if ! command -v dot >/dev/null; then
  apt_install graphviz || missing+=(graphviz)
fi

# --- Chromium, for the browser tests only ---------------------------------------------------
if [ "$purpose" = test ] && [ ! -x /usr/bin/chromium ]; then
  apt_install chromium chromium-driver fonts-liberation || missing+=(chromium chromium-driver)
fi

if [ ${#missing[@]} -gt 0 ]; then
  say "NOTE: not installed (needs root): ${missing[*]}"
  say "      install them with: sudo apt-get install ${missing[*]}"
  say "      until then, tests that need them are skipped and diagrams do not render."
fi
say "ready: $("$venv/bin/python" -V)" \
  "| dot: $(dot -V 2>&1 | sed -n 's/.*version \([^ ]*\).*/\1/p' || true)" \
  "| chromium: $([ -x /usr/bin/chromium ] && echo yes || echo no)"
