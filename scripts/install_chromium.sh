#!/usr/bin/env bash
# Install the Debian packages the tests run: chromium (the headless-browser preview test) and curl
# (webdataset's reader of http(s) shard URLs, in the Hub download test).
# Does nothing when both are there already. Needs root (apt-get); uses sudo if not root.
set -euo pipefail
if [ -x /usr/bin/chromium ] && command -v curl > /dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium curl
