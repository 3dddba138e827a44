#!/usr/bin/env bash
# Install what the JupyterLab browser check (tests/browser/test_jupyterlab.py) needs:
# Debian's chromium (apt) and the playwright Python package (pip; it bundles its driver).
# Idempotent: does nothing for a part that is already there.  Never runs `playwright install`
# (that downloads browsers); the test drives /usr/bin/chromium through executable_path.
#
# Usage: .ci/install_browser.sh [PYTHON]   (default: .venv/bin/python of this repository)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"

if [ -x /usr/bin/chromium ]; then
    echo "== chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
else
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install_browser.sh: need root or sudo for apt-get" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "== installing chromium with apt-get"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
fi

if [ ! -x "$PYTHON" ]; then
    echo "== $PYTHON does not exist yet: skipping playwright (the [test] extra installs it)"
elif "$PYTHON" -c "import playwright.sync_api" >/dev/null 2>&1; then
    echo "== playwright already installed in $PYTHON"
else
    echo "== installing playwright into $PYTHON"
    "$PYTHON" -m pip install playwright
fi
