#!/usr/bin/env bash
# Writes constraints.txt from an environment the tests passed in (default .venv):
#   pip install -U SOME-PACKAGE && python -m pytest && bash scripts/freeze_constraints.sh
# Leaves out codesift itself (editable), torch (scripts/setup.sh installs the machine's own build) and pip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
{
  echo "# The versions the test suite passed with; scripts/setup.sh installs with -c constraints.txt."
  echo "# Regenerate with scripts/freeze_constraints.sh after upgrading (README.md, \"Pinned versions and upgrading\")."
  "$VENV/bin/python" -m pip freeze --all --exclude-editable --disable-pip-version-check \
    | grep -v -i -E '^(torch|pip|codesift)(==| @)' | LC_ALL=C sort -f
} > constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) pins"
