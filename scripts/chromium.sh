#!/usr/bin/env bash
# Debian's headless Chromium for the console's browser tests (tests/console/
# test_console_browser.py drives it through Playwright, whose own browser downloads are not
# possible on these machines). Installs it once; does nothing when /usr/bin/chromium exists.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
