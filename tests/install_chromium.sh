#!/usr/bin/env bash
# Best effort: installs Debian's chromium for tests/test_site.py's browser check, where it is
# missing and apt-get can run (as root). Never fails: without Chromium that one test is skipped.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium (apt-get) for the documentation's browser check ..."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "could not install chromium; the browser check will be skipped"
else
  echo "no chromium and no root to install it; the documentation's browser check will be skipped"
fi
exit 0
