#!/usr/bin/env bash
# Refresh lock/constraints.txt from pyproject.toml: run this on purpose, commit the result,
# and let CI try it. Installs never refresh it on their own.
#   bash lock/refresh.sh            # newest releases that pyproject.toml allows
#   bash lock/refresh.sh -P typer   # move one package, keep every other pin
# Releases of the last two days are left out (EXCLUDE_NEWER=YYYY-MM-DD to choose): a release that
# new may not have reached every mirror pip reads from, and is the likeliest to be pulled.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-uv}
command -v "$uv" >/dev/null || { echo "uv is not installed: pip install uv (or set UV=/path/to/uv)" >&2; exit 2; }
"$uv" pip compile pyproject.toml --all-extras --universal --python-version 3.10 \
  --override lock/overrides.txt --no-header --annotation-style line \
  --exclude-newer "${EXCLUDE_NEWER:-$(date -u -d "2 days ago" +%Y-%m-%d)}" \
  -o lock/constraints.txt "$@"
