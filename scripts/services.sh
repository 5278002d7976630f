# Shared helpers for scripts/test and .ci/run: install the packages the tests need and start the
# real services they talk to, all on loopback. Sourced, not executed.
#
# State that must outlive a clone (built binaries, caches) goes under CALLVAULT_CACHE; throwaway
# service data goes under CALLVAULT_RUN.

CALLVAULT_CACHE=${CALLVAULT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/callvault}
CALLVAULT_RUN=${CALLVAULT_RUN:-${TMPDIR:-/tmp}/callvault-test}
mkdir -p "$CALLVAULT_CACHE" "$CALLVAULT_RUN"

log() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ensure_packages PKG...: apt-get install the Debian packages that are missing (update once).
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  apt_get update -qq
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# apt_get ARGS...: apt-get that waits for another package manager (unattended upgrades, a cloud
# machine's first-boot set-up) to release its locks instead of failing at once. DPkg::Lock::Timeout
# covers dpkg's locks; `update` takes the package lists' lock, which it does not, so a failure
# while another apt process runs is retried.
apt_get() {
  local waited=0
  until DEBIAN_FRONTEND=noninteractive as_root apt-get -o DPkg::Lock::Timeout=600 "$@"; do
    if ! pgrep -x 'apt-get|apt|dpkg|unattended-upgr' >/dev/null || [ "$waited" -ge 600 ]; then
      log "apt-get $* failed"
      return 1
    fi
    log "another package manager is running; waiting for it (${waited}s so far)"
    sleep 5
    waited=$((waited + 5))
  done
}

# ensure_build_packages: what the Rust build itself links against (the recorder uses libopus).
ensure_build_packages() { ensure_packages pkg-config libopus-dev; }

# start_postgres: a throwaway PostgreSQL cluster on 127.0.0.1:$CALLVAULT_PG_PORT, trust auth on
# loopback only. Exports CALLVAULT_TEST_DATABASE_URL (the tests create one database per test).
start_postgres() {
  ensure_packages postgresql postgresql-contrib
  local port=${CALLVAULT_PG_PORT:-55432}
  local bin; bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
  local data="$CALLVAULT_RUN/pg"
  export CALLVAULT_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  if "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then return 0; fi
  log "starting PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on port $port"
  as_root rm -rf "$data"
  as_root install -d -o postgres -g postgres "$data"
  as_root su postgres -s /bin/sh -c "'$bin/initdb' -D '$data' -U postgres --auth=trust -E UTF8 >/dev/null"
  as_root su postgres -s /bin/sh -c "'$bin/pg_ctl' -D '$data' -l '$data/log' -w start \
    -o \"-p $port -k '$data' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300\" >/dev/null"
}

# More services, one file each (object stores, the Kubernetes control plane, ...).
for f in "$(dirname "${BASH_SOURCE[0]}")"/services.d/*.sh; do
  # shellcheck source=/dev/null
  . "$f"
done
