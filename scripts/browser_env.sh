#!/usr/bin/env bash
# Debian's chromium, for the test that renders report.html in a real headless browser
# (`make browser-env`; tests/test_report_html.py). Idempotent and quiet: an installed chromium is kept.
# Without apt (or root) it says so and exits 0; the browser test then skips, naming what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if command -v chromium >/dev/null; then echo "browser-env: ready ($(command -v chromium))"; exit 0; fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "browser-env: skipped: needs root with apt-get (Debian/Ubuntu); the browser test will skip"; exit 0
fi
install() { apt-get install -y -q --no-install-recommends chromium >/dev/null; }
install || { apt-get update -q >/dev/null && install; }
echo "browser-env: ready ($(command -v chromium))"
