#!/usr/bin/env bash
# One-command set-up: a virtual environment with the pinned CPU torch, regionspot with its test and lint
# extras, and the MobileSAM checkpoint (the one real SAM that installs offline) in .cache/.
# Usage: bash scripts/setup.sh   (re-running is cheap: finished steps are skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PIN=${REGIONSPOT_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first, pinned: any unpinned request would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "$TORCH_PIN"
.venv/bin/python -m pip install -q -e '.[test,lint]'
.venv/bin/python scripts/fetch_mobile_sam.py .cache/mobile_sam.pt
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "note: the real-browser test (tests/serve/test_browser.py) needs Debian's chromium and chromium-driver;"
  echo "      it is skipped without them (install: sudo apt-get install chromium chromium-driver)"
fi
echo "set-up done: activate with '. .venv/bin/activate'"
