#!/usr/bin/env bash
# Install Debian's chromium for the headless-browser preview test (tests/test_preview.py).
# Does nothing when /usr/bin/chromium already exists. Needs root (apt-get); uses sudo if not root.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium
