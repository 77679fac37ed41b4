#!/usr/bin/env bash
# fxlens tests: makes sure the set-up is there (install.sh --no-run), then runs the fast suite.
# Extra arguments go to pytest (e.g. `bash test.sh -m slow` for the slow tests).
set -uo pipefail
cd "$(dirname "$0")"
bash install.sh --no-run || exit 1
if [ $# -eq 0 ]; then set -- -m "not slow"; fi
.venv/bin/python -m pytest -q "$@"
rc=$?
# pytest exits 5 when no test was collected (e.g. a filter that matches nothing): not a failure of the code.
[ $rc -eq 5 ] && { echo "no tests collected"; rc=0; }
exit $rc
