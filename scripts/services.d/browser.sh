# Browser: what the portal's web UI tests need, all from package registries.
#
#   ensure_browser   Debian's chromium, Node.js with npm (Debian's unless one is installed), and the npm package playwright-core (pinned;
#                    it drives the installed Chromium, so no browser download) under
#                    $CALLVAULT_CACHE/browser. Exports CALLVAULT_TEST_CHROMIUM (the browser
#                    binary) and CALLVAULT_TEST_PLAYWRIGHT (the playwright-core module directory).

PLAYWRIGHT_CORE_VERSION=1.49.1

ensure_browser() {
  ensure_packages chromium
  # A Node.js that ships its own npm (e.g. from another repository) conflicts with Debian's npm.
  command -v npm >/dev/null || ensure_packages nodejs npm
  local dir="$CALLVAULT_CACHE/browser/playwright-core-$PLAYWRIGHT_CORE_VERSION"
  if [ ! -f "$dir/node_modules/playwright-core/package.json" ]; then
    log "installing playwright-core $PLAYWRIGHT_CORE_VERSION"
    mkdir -p "$dir"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-save --no-audit --no-fund \
      "playwright-core@$PLAYWRIGHT_CORE_VERSION" >/dev/null
  fi
  export CALLVAULT_TEST_PLAYWRIGHT="$dir/node_modules/playwright-core"
  export CALLVAULT_TEST_CHROMIUM=/usr/bin/chromium
}
