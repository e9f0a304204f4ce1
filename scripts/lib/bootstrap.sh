# Sourced by the scripts: find Python >= 3.11, create .venv, install the project, write and load .env.
# Variables already set by the caller win over .env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export MCP_PROJECT_ROOT="$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

find_python() {
  local candidate
  for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_venv() {
  if [ ! -x "$PY" ]; then
    local base
    base="$(find_python)" || die "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"
    say "creating .venv with $("$base" --version)"
    "$base" -m venv "$VENV"
  fi
  # Reinstall only when the dependency list changed.
  local stamp
  stamp="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ "$(cat "$VENV/.installed" 2>/dev/null || true)" != "$stamp" ]; then
    say "installing the project and its dependencies into .venv (log: .venv/install.log)"
    if ! { "$PY" -m pip install --disable-pip-version-check --upgrade pip &&
           "$PY" -m pip install --disable-pip-version-check -e ".[test]"; } > "$VENV/install.log" 2>&1; then
      tail -n 30 "$VENV/install.log" >&2
      die "pip install failed; the whole log is in .venv/install.log"
    fi
    echo "$stamp" > "$VENV/.installed"
  fi
  export PATH="$VENV/bin:$PATH"
}

load_env() {
  "$PY" -m mcp.ops ensure-env >&2
  eval "$("$PY" -m mcp.ops env-exports)"
}

ensure_database() {
  if [ -n "${DATABASE_URL:-}" ]; then
    say "database: DATABASE_URL (external server)"
  else
    "$PY" -W ignore -m db.embedded start >/dev/null || die "the embedded PostgreSQL did not start; see .data/pg/log"
    say "database: embedded PostgreSQL in .data/pg"
  fi
  "$PY" -m db.migrate >&2 || die "migrations failed (see above)"
}

# Run the calling script again under flock(1) so that only one copy of it runs at a time for this
# checkout; a second one exits 1 at once, saying so. flock -o keeps the lock in flock's own process,
# so nothing the script starts (honcho, PostgreSQL) holds it after the script ends.
#   hold_lock "$@"   (first thing in the script, before bootstrap)
hold_lock() {
  local script="$ROOT/scripts/$(basename "$0")" name rc=0
  name="$(basename "$0")"
  if [ "${MCP_LOCK_HELD:-}" = "$script" ]; then
    unset MCP_LOCK_HELD  # the processes this run starts must not think they hold it
    return 0
  fi
  if ! command -v flock >/dev/null 2>&1; then
    say "warning: flock (util-linux) not found; nothing stops two scripts/$name from running at once"
    return 0
  fi
  mkdir -p "$ROOT/.run"
  MCP_LOCK_HELD="$script" flock -n -o -E 75 "$ROOT/.run/$name.lock" "$script" "$@" || rc=$?
  if [ "$rc" = 75 ]; then
    die "another scripts/$name is already running for this checkout; wait for it to finish (then see scripts/status)"
  fi
  exit "$rc"
}

bootstrap() {
  mkdir -p "$ROOT/logs" "$ROOT/.run"
  ensure_venv
  load_env
}
