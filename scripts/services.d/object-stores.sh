# start_object_stores: S3/Azure/GCS-compatible servers on loopback for the storage tests.
#
#   S3     MinIO, built from its Go module          CALLVAULT_TEST_S3_*
#   Azure  Azurite (blob service), from npm         CALLVAULT_TEST_AZURE_*
#   GCS    fake-gcs-server, built from its module   CALLVAULT_TEST_GCS_*
#
# Binaries are cached under $CALLVAULT_CACHE/object-stores (first build takes minutes, later
# runs seconds); data and logs go under $CALLVAULT_RUN. A server already answering on its port
# is reused. Each server gets the buckets/containers `callvault-test` and `callvault-archive`.
# The exports are also written to $CALLVAULT_RUN/object-stores.env for `source`.

OBJSTORE_MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
OBJSTORE_FAKE_GCS_VERSION=v1.56.1
OBJSTORE_AZURITE_VERSION=3.37.0
OBJSTORE_BUCKETS="callvault-test callvault-archive"
# Azurite's documented development account (public, loopback only).
OBJSTORE_AZURE_ACCOUNT=devstoreaccount1
OBJSTORE_AZURE_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# _objstore_go_install MODULE VERSION BINARY: prints the path of a cached build of MODULE.
_objstore_go_install() {
  local module=$1 version=$2 binary=$3
  local dir="$CALLVAULT_CACHE/object-stores/$binary-$version"
  if [ ! -x "$dir/$binary" ]; then
    command -v go >/dev/null || { log "Go is required to build $binary (go install $module@$version)"; return 1; }
    log "building $binary $version from the Go module proxy (first run only; takes minutes)"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local go install "$module@$version" >&2 || return 1
  fi
  printf '%s\n' "$dir/$binary"
}

# _objstore_wait NAME URL LOG: waits until URL answers (any HTTP status), at most ~60 s.
_objstore_wait() {
  local name=$1 url=$2 logfile=$3 i
  for i in $(seq 1 300); do
    if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
    sleep 0.2
  done
  log "$name did not start; last lines of $logfile:"
  tail -n 20 "$logfile" >&2
  return 1
}

_objstore_start_minio() {
  local port=${CALLVAULT_S3_PORT:-59000}
  local user=callvault-test secret=callvault-test-secret
  export CALLVAULT_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export CALLVAULT_TEST_S3_ACCESS_KEY_ID=$user CALLVAULT_TEST_S3_SECRET_ACCESS_KEY=$secret
  export CALLVAULT_TEST_S3_REGION=us-east-1
  export CALLVAULT_TEST_S3_BUCKET=callvault-test CALLVAULT_TEST_S3_ARCHIVE_BUCKET=callvault-archive
  if ! curl -sf -o /dev/null --max-time 2 "$CALLVAULT_TEST_S3_ENDPOINT/minio/health/live"; then
    local bin; bin=$(_objstore_go_install github.com/minio/minio "$OBJSTORE_MINIO_VERSION" minio) || return 1
    log "starting MinIO ($OBJSTORE_MINIO_VERSION) on $CALLVAULT_TEST_S3_ENDPOINT"
    mkdir -p "$CALLVAULT_RUN/minio/data"
    MINIO_ROOT_USER=$user MINIO_ROOT_PASSWORD=$secret MINIO_BROWSER=off MINIO_UPDATE=off \
      setsid nohup "$bin" server --quiet --address "127.0.0.1:$port" \
      --console-address "127.0.0.1:$((port + 1))" "$CALLVAULT_RUN/minio/data" \
      >"$CALLVAULT_RUN/minio/log" 2>&1 </dev/null &
    _objstore_wait MinIO "$CALLVAULT_TEST_S3_ENDPOINT/minio/health/live" "$CALLVAULT_RUN/minio/log" || return 1
  fi
  local b code
  for b in $OBJSTORE_BUCKETS; do
    # CreateBucket, signed with SigV4 by curl; 409 = it already exists.
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
      --user "$user:$secret" "$CALLVAULT_TEST_S3_ENDPOINT/$b")
    case $code in 200|409) ;; *) log "MinIO: creating bucket $b answered HTTP $code"; return 1;; esac
  done
}

# _objstore_azure_create_container NAME: Create Container, signed with the account key.
_objstore_azure_create_container() {
  local name=$1 version=2021-10-04 date sts hexkey sig code
  date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
  # Path-style (emulator) URLs put the account in the path, so it appears twice here.
  sts=$(printf 'PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:%s\n/%s/%s/%s\nrestype:container' \
    "$date" "$version" "$OBJSTORE_AZURE_ACCOUNT" "$OBJSTORE_AZURE_ACCOUNT" "$name")
  hexkey=$(printf '%s' "$OBJSTORE_AZURE_KEY" | base64 -d | od -An -vtx1 | tr -d ' \n')
  sig=$(printf '%s' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Length: 0' \
    -H "x-ms-date: $date" -H "x-ms-version: $version" \
    -H "Authorization: SharedKey $OBJSTORE_AZURE_ACCOUNT:$sig" \
    "$CALLVAULT_TEST_AZURE_ENDPOINT/$name?restype=container")
  case $code in 201|409) ;; *) log "Azurite: creating container $name answered HTTP $code"; return 1;; esac
}

_objstore_start_azurite() {
  local port=${CALLVAULT_AZURE_PORT:-59010}
  export CALLVAULT_TEST_AZURE_ENDPOINT="http://127.0.0.1:$port/$OBJSTORE_AZURE_ACCOUNT"
  export CALLVAULT_TEST_AZURE_ACCOUNT=$OBJSTORE_AZURE_ACCOUNT
  export CALLVAULT_TEST_AZURE_ACCOUNT_KEY=$OBJSTORE_AZURE_KEY
  export CALLVAULT_TEST_AZURE_CONTAINER=callvault-test CALLVAULT_TEST_AZURE_ARCHIVE_CONTAINER=callvault-archive
  if ! curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/"; then
    command -v npm >/dev/null || ensure_packages nodejs npm
    local dir="$CALLVAULT_CACHE/object-stores/azurite-$OBJSTORE_AZURITE_VERSION"
    if [ ! -x "$dir/node_modules/.bin/azurite-blob" ]; then
      log "installing Azurite $OBJSTORE_AZURITE_VERSION from npm"
      mkdir -p "$dir"
      npm install --prefix "$dir" --no-audit --no-fund --silent "azurite@$OBJSTORE_AZURITE_VERSION" >&2 || return 1
    fi
    log "starting Azurite $OBJSTORE_AZURITE_VERSION on http://127.0.0.1:$port"
    mkdir -p "$CALLVAULT_RUN/azurite/data"
    # --skipApiVersionCheck: clients may speak a newer REST version than this Azurite knows.
    setsid nohup "$dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
      --location "$CALLVAULT_RUN/azurite/data" --skipApiVersionCheck --disableTelemetry \
      >"$CALLVAULT_RUN/azurite/log" 2>&1 </dev/null &
    _objstore_wait Azurite "http://127.0.0.1:$port/" "$CALLVAULT_RUN/azurite/log" || return 1
  fi
  local c
  for c in $OBJSTORE_BUCKETS; do _objstore_azure_create_container "$c" || return 1; done
}

_objstore_start_fake_gcs() {
  local port=${CALLVAULT_GCS_PORT:-59020}
  export CALLVAULT_TEST_GCS_ENDPOINT="http://127.0.0.1:$port"
  export CALLVAULT_TEST_GCS_BUCKET=callvault-test CALLVAULT_TEST_GCS_ARCHIVE_BUCKET=callvault-archive
  # The emulator checks no credentials; disable_oauth makes the client send none.
  export CALLVAULT_TEST_GCS_SERVICE_ACCOUNT_JSON='{"private_key":"unused","private_key_id":"unused","client_email":"test@callvault.invalid","disable_oauth":true}'
  if ! curl -sf -o /dev/null --max-time 2 "$CALLVAULT_TEST_GCS_ENDPOINT/storage/v1/b"; then
    local bin; bin=$(_objstore_go_install github.com/fsouza/fake-gcs-server "$OBJSTORE_FAKE_GCS_VERSION" fake-gcs-server) || return 1
    log "starting fake-gcs-server $OBJSTORE_FAKE_GCS_VERSION on $CALLVAULT_TEST_GCS_ENDPOINT"
    mkdir -p "$CALLVAULT_RUN/fake-gcs/data"
    setsid nohup "$bin" -scheme http -host 127.0.0.1 -port "$port" \
      -public-host "127.0.0.1:$port" -external-url "$CALLVAULT_TEST_GCS_ENDPOINT" \
      -backend filesystem -filesystem-root "$CALLVAULT_RUN/fake-gcs/data" -log-level warn \
      >"$CALLVAULT_RUN/fake-gcs/log" 2>&1 </dev/null &
    _objstore_wait fake-gcs-server "$CALLVAULT_TEST_GCS_ENDPOINT/storage/v1/b" "$CALLVAULT_RUN/fake-gcs/log" || return 1
  fi
  local b code
  for b in $OBJSTORE_BUCKETS; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      -d "{\"name\":\"$b\"}" "$CALLVAULT_TEST_GCS_ENDPOINT/storage/v1/b")
    case $code in 200|409) ;; *) log "fake-gcs-server: creating bucket $b answered HTTP $code"; return 1;; esac
  done
  # An object written by another client (a plain `media` upload), so the read test does not
  # only ever see objects CallVault's own uploads wrote.
  code=$(printf 'hello from gcs, ranged reads work' | curl -s -o /dev/null -w '%{http_code}' -X POST \
    --data-binary @- "$CALLVAULT_TEST_GCS_ENDPOINT/upload/storage/v1/b/callvault-test/o?uploadType=media&name=seeded/hello.txt")
  case $code in 200) ;; *) log "fake-gcs-server: seeding an object answered HTTP $code"; return 1;; esac
}

start_object_stores() {
  ensure_packages curl openssl
  _objstore_start_minio || return 1
  _objstore_start_azurite || return 1
  _objstore_start_fake_gcs || return 1
  env | grep '^CALLVAULT_TEST_\(S3\|AZURE\|GCS\)_' | sed "s/^\([^=]*\)=\(.*\)$/export \1='\2'/" \
    >"$CALLVAULT_RUN/object-stores.env"
}
