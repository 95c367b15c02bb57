#!/usr/bin/env bash
# Re-make the README's screenshots from the browser tests (Chromium at /usr/bin/chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
PQSYNC_SCREENSHOTS=docs/screenshots .venv/bin/pytest -q -p no:cacheprovider \
  "tests/web/browser/test_dashboard_browser.py::test_sync_all_shows_each_patient_and_reaches_the_end[laptop]" \
  "tests/web/browser/test_sync_progress_browser.py::test_each_patient_finishes_in_turn_and_the_percentage_rises_in_steps[laptop]" \
  "tests/web/browser/test_sync_progress_browser.py::test_a_failed_run_says_what_happened_to_everyone_and_offers_to_try_again[laptop]"
ls -l docs/screenshots
