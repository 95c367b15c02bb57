#!/usr/bin/env bash
# Re-make the README's screenshots from the browser tests (Chromium at /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
PQSYNC_SCREENSHOTS=docs/screenshots .venv/bin/pytest -q -p no:cacheprovider \
  "tests/web/browser/test_dashboard_browser.py::test_sync_all_shows_each_patient_and_reaches_the_end[laptop]"
ls -l docs/screenshots
