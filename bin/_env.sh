# Shared by bin/run and bin/test: a project virtualenv with the package installed, kept in step
# with pyproject.toml (re-installed when it changes). Sourced, not executed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CICD_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

ensure_venv() {
  local extras="$1"  # "" or "[test]"
  local stamp="$VENV/.cicd-installed$extras"
  local want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv in $VENV" >&2
    "$PYTHON_BIN" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "==> installing cicd$extras into $VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -e "$ROOT$extras" 2>&1 \
      | grep -v "^WARNING: Location" >&2 || true
    "$VENV/bin/python" -c "import cicd, django, celery, channels" \
      || { echo "installation of cicd failed" >&2; exit 1; }
    echo "$want" > "$stamp"
  fi
}
