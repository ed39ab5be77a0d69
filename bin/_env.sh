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

# -- services: shared by bin/test and bin/bench ----------------------------------------------
# PostgreSQL (127.0.0.1:5432, trust) and Redis (127.0.0.1:6379) are started when they are not
# running; a Docker engine is installed (docker.io) and started when none answers, and then
# stopped again by stop_dockerd (callers set DATA_DIR for dockerd's log and trap stop_dockerd).

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  echo "==> starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return; sleep 0.2; done
  echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1
}

ensure_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  echo "==> starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.2; done
  echo "Redis is not reachable on 127.0.0.1:6379" >&2; exit 1
}

APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# A Docker engine, and Debian's static busybox that the local test and benchmark images are built
# from (no registry is reachable).
DOCKERD_PID=""  # set only when ensure_docker started dockerd: then stop_dockerd stops it
ensure_docker() {
  if [ ! -x /bin/busybox ]; then
    echo "==> installing busybox-static (the local Docker images are built from it)" >&2
    apt_install busybox-static
  fi
  if docker info >/dev/null 2>&1; then return; fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    echo "==> installing docker.io" >&2
    apt_install docker.io
  fi
  local log="${DATA_DIR:-/tmp}/dockerd.log"
  echo "==> starting dockerd (vfs storage driver, log in $log)" >&2
  dockerd --storage-driver=vfs >"$log" 2>&1 &
  DOCKERD_PID=$!
  for _ in $(seq 120); do
    if docker info >/dev/null 2>&1; then return; fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "No Docker engine: dockerd exited or did not answer within 60 s. Its log ends with:" >&2
  tail -n 30 "$log" >&2 || true
  exit 1
}

# HAProxy: the load balancer `cicd/deploy` puts in front of the replicas it runs (runners.deploy).
ensure_haproxy() {
  if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then return; fi
  echo "==> installing haproxy (deployment tests)" >&2
  apt_install haproxy
}

stop_dockerd() {
  if [ -z "${DOCKERD_PID:-}" ]; then return 0; fi
  kill -TERM "$DOCKERD_PID" 2>/dev/null || return 0
  for _ in $(seq 60); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || return 0
    sleep 0.5
  done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
}
