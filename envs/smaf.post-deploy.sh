#!/usr/bin/env bash
# Runs once inside the new conda env: install the smaf library from this checkout (no deps:
# the env already has them).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pip install --no-deps -e "${here}/.."
