# Shared by scripts/demo.sh and scripts/test.sh: bootstrap what the project needs on a fresh
# Debian or Ubuntu machine. Everything here is idempotent and only acts where something is missing.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

if [ -t 1 ]; then _B=$'\033[1;34m' _Y=$'\033[1;33m' _R=$'\033[1;31m' _N=$'\033[0m'; else _B= _Y= _R= _N=; fi
say() { printf '%s==>%s %s\n' "$_B" "$_N" "$*"; }
warn() { printf '%s!!%s %s\n' "$_Y" "$_N" "$*" >&2; }
die() { printf '%sxx%s %s\n' "$_R" "$_N" "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

apt_install() {
  # Install Debian packages that are missing; refresh the package lists once per run.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || { warn "apt-get not found; install ${missing[*]} yourself"; return 1; }
  say "installing ${missing[*]}"
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq >/dev/null && _APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

base_python() {
  # The interpreter .venv is made from: the distribution's /usr/bin/python3 when it is 3.11 or
  # newer, else the first python3 on PATH. Debian and Ubuntu build theirs with profile-guided
  # optimisation and LTO; a plain source build (pyenv's default) ran the same HBONE relay with
  # about 10 % more CPU (bench/hbone_pingpong.py; README, Quick start).
  local candidate
  for candidate in /usr/bin/python3 "$(command -v python3 2>/dev/null)"; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

bootstrap_python() {
  # A virtualenv in .venv with the project installed (editable) and its test tools.
  local stamp="$VENV/.installed" want base
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  base="$(base_python)" || { apt_install python3 && base="$(base_python)"; } || die "Python 3.11 or newer is needed"
  if [ -x "$PY" ] && [ "$(cat "$VENV/.base" 2>/dev/null)" != "$base" ]; then
    say "making $VENV again from $base"
    rm -rf "$VENV"
  fi
  if [ ! -x "$PY" ]; then
    "$base" -m venv --help >/dev/null 2>&1 && "$base" -c 'import ensurepip' 2>/dev/null || apt_install python3-venv
    say "creating $VENV ($base, $("$base" -c 'import platform; print(platform.python_version())'))"
    "$base" -m venv "$VENV"
    echo "$base" > "$VENV/.base"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the project and its dependencies into .venv (log: .venv/pip.log)"
    if ! { "$PY" -m pip install -q --upgrade pip && "$PY" -m pip install -q -e "$ROOT[test]"; } >"$VENV/pip.log" 2>&1; then
      tail -20 "$VENV/pip.log" >&2
      die "pip install failed; see $VENV/pip.log"
    fi
    echo "$want" > "$stamp"
  fi
}

ensure_redis() {
  # The machine's Redis on 127.0.0.1:6379, or one we start (no persistence) when none answers.
  port_open 127.0.0.1 6379 && return 0
  command -v redis-server >/dev/null || apt_install redis-server
  say "starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp --logfile "${TMPDIR:-/tmp}/mesh-redis.log"
  for _ in $(seq 50); do port_open 127.0.0.1 6379 && return 0; sleep 0.1; done
  warn "redis-server did not start"; return 1
}

ensure_postgres() {
  # PostgreSQL on 127.0.0.1:5432 accepting the postgres user without a password (tests create
  # and drop their own databases). Where none answers: start the machine's cluster, or
  # initialise a private one with trust authentication.
  port_open 127.0.0.1 5432 && return 0
  if command -v pg_ctlcluster >/dev/null && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    say "starting the PostgreSQL cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 50); do port_open 127.0.0.1 5432 && return 0; sleep 0.2; done
  fi
  apt_install postgresql || return 1
  local bin; bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  local data="/var/tmp/mesh-postgres"
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a private PostgreSQL cluster in $data (trust auth, loopback only)"
    as_root mkdir -p "$data" && as_root chown postgres "$data"
    as_root su postgres -s /bin/sh -c "$bin/initdb -D $data -A trust -U postgres" >/dev/null
  fi
  as_root su postgres -s /bin/sh -c "$bin/pg_ctl -D $data -l $data/log -o '-h 127.0.0.1 -p 5432 -k /tmp' start" >/dev/null
  for _ in $(seq 50); do port_open 127.0.0.1 5432 && return 0; sleep 0.2; done
  warn "PostgreSQL did not start"; return 1
}
