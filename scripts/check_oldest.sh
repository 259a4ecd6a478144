#!/usr/bin/env bash
# CI: run the tests that touch library internals against the OLDEST versions pyproject.toml
# allows (the main run tests the newest). transformers: the SAM mask decoder is re-implemented
# on transformers' own layers (their attention scaling and layer norms); fastapi/starlette: the
# upload limits hook starlette's form reader. The pins below must equal pyproject's lower
# bounds (tests/test_packaging.py checks it).
set -euo pipefail
cd "$(dirname "$0")/.."
OLDEST=("transformers==5.10.4" "fastapi==0.140.13" "starlette==1.3.1")

overlay=.venv-oldest
rm -rf "$overlay"
base=$(.venv/bin/python -c 'import sys; print(sys.base_prefix)')
"$base/bin/python3" -m venv "$overlay"
main_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
overlay_site=$("$overlay/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# everything else (torch, numpy, ...) comes from the main environment, after the overlay's own
echo "$main_site" > "$overlay_site/zz-main-environment.pth"
"$overlay/bin/python" -m pip install -q "${OLDEST[@]}"
"$overlay/bin/python" -c 'import fastapi, starlette, transformers; print("oldest allowed:", "transformers", transformers.__version__, "fastapi", fastapi.__version__, "starlette", starlette.__version__)'
"$overlay/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" tests/backbones tests/test_hub.py \
  tests/model/test_zero_shot.py tests/serve/test_api.py tests/serve/test_session.py
