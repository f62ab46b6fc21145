#!/bin/sh
# The Debian packages the test suite drives, installed when missing (make test runs this first).
#   python3-venv  `python3 -m venv` (Debian splits ensurepip out of python3)
#   chromium      the dashboard's browser test (Playwright drives Debian's build; it never downloads one)
#   nodejs, npm   the Codex CLI's end-to-end test (tests/tools/package.json, installed with npm ci)
#   postgresql    the server binaries for the PostgreSQL store's tests (the suite starts its own server)
# Each check is a file or command lookup, so a second run costs nothing. Without root or apt-get it
# says exactly what to install and fails: a test never skips for want of a tool.
set -eu

missing=""
python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$missing python3-venv"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
{ command -v node && command -v npm; } >/dev/null 2>&1 || missing="$missing nodejs npm"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"

[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make test: installing Debian packages (first run only):$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -qq $missing >/dev/null
    exit 0
fi

cat >&2 <<MSG
make test needs these Debian packages, which are missing:$missing
Install them, then run make test again:

    sudo apt-get install -y$missing

(On another system, install the equivalents: Chromium at /usr/bin/chromium, Node.js with npm,
and the PostgreSQL server binaries.)
MSG
exit 1
