# Identity provider: a real OpenID Connect provider for the portal's single sign-on tests.
#
#   start_idp   the npm package oidc-provider (version pinned by portal/tests/idp/package-lock.json,
#               installed with `npm ci` under $CALLVAULT_CACHE/idp, keyed by the lock file) run by
#               portal/tests/idp/idp.mjs on loopback. Exports CALLVAULT_TEST_OIDC_ISSUER.

start_idp() {
  command -v npm >/dev/null || ensure_packages nodejs npm
  local src; src="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/portal/tests/idp"
  local port=${CALLVAULT_IDP_PORT:-58090}
  export CALLVAULT_TEST_OIDC_ISSUER="http://127.0.0.1:$port"
  if curl -sf -o /dev/null --max-time 2 "$CALLVAULT_TEST_OIDC_ISSUER/.well-known/openid-configuration"; then
    return 0
  fi
  local key; key=$(cat "$src/package-lock.json" | sha256sum | cut -c1-12)
  local dir="$CALLVAULT_CACHE/idp/$key"
  if [ ! -f "$dir/node_modules/oidc-provider/package.json" ]; then
    log "installing oidc-provider (npm ci, pinned by its package-lock.json)"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund >/dev/null) || { rm -rf "$dir"; return 1; }
  fi
  # The script is copied beside node_modules: ES modules resolve packages from their own path.
  cp "$src/idp.mjs" "$dir/idp.mjs"
  mkdir -p "$CALLVAULT_RUN/idp"
  log "starting oidc-provider on $CALLVAULT_TEST_OIDC_ISSUER"
  setsid nohup node "$dir/idp.mjs" "$port" >"$CALLVAULT_RUN/idp/log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 150); do
    if curl -sf -o /dev/null --max-time 2 "$CALLVAULT_TEST_OIDC_ISSUER/.well-known/openid-configuration"; then
      return 0
    fi
    sleep 0.2
  done
  log "oidc-provider did not start; last lines of $CALLVAULT_RUN/idp/log:"
  tail -n 20 "$CALLVAULT_RUN/idp/log" >&2
  return 1
}
