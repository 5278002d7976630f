# build_control_plane: kube-apiserver, etcd, kubectl and helm built from Go modules (cached).
#
# The e2e tests (crate e2e/) start etcd and kube-apiserver themselves; this only builds the
# binaries into "$CALLVAULT_CACHE/bin" and exports CALLVAULT_KUBE_BIN_DIR. Versions are pinned by
# the wrapper modules under e2e/go/ (their go.mod/go.sum) and by CALLVAULT_HELM_VERSION; a stamp
# per binary records what it was built from, so later runs skip it. Go's module and build caches
# stay at Go's defaults (outside the clone). A cold build takes about 10 minutes on 2 cores.

CALLVAULT_HELM_VERSION=${CALLVAULT_HELM_VERSION:-v4.3.1}

# _cp_stamp_ok NAME KEY: true when NAME was built and its stamp records KEY.
_cp_stamp_ok() {
  [ -x "$CALLVAULT_KUBE_BIN_DIR/$1" ] && [ "$(cat "$CALLVAULT_KUBE_BIN_DIR/.$1.stamp" 2>/dev/null)" = "$2" ]
}

_cp_stamp() { printf '%s\n' "$2" >"$CALLVAULT_KUBE_BIN_DIR/.$1.stamp"; }

# _cp_module_key DIR: what a wrapper module pins (its go.mod and go.sum), as one hash.
_cp_module_key() { cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -d' ' -f1; }

# _cp_require DIR MODULE: the version of MODULE required by the wrapper module in DIR.
_cp_require() { sed -n "s#^require $2 \\(v[^ ]*\\).*#\\1#p" "$1/go.mod"; }

build_control_plane() {
  local root; root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  export CALLVAULT_KUBE_BIN_DIR="$CALLVAULT_CACHE/bin"
  mkdir -p "$CALLVAULT_KUBE_BIN_DIR"
  if ! command -v go >/dev/null; then
    log "Go is not installed: the e2e tests need Go >= 1.26 to build kube-apiserver and etcd"
    return 1
  fi

  local kmod="$root/e2e/go/kube-apiserver" emod="$root/e2e/go/etcd"
  local kver; kver=$(_cp_require "$kmod" k8s.io/kubernetes)
  local minor; minor=$(echo "$kver" | cut -d. -f2)
  local kkey; kkey="$kver $(_cp_module_key "$kmod")"
  # Without these, /version and `kubectl version` report v0.0.0-master and kubectl refuses to
  # parse it.
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kver \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean"

  local cmd
  for cmd in kube-apiserver kubectl; do
    _cp_stamp_ok "$cmd" "$kkey" && continue
    log "building $cmd $kver (a cold build takes several minutes)"
    (cd "$kmod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" \
      -o "$CALLVAULT_KUBE_BIN_DIR/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd") || return 1
    mv "$CALLVAULT_KUBE_BIN_DIR/$cmd.tmp" "$CALLVAULT_KUBE_BIN_DIR/$cmd"
    _cp_stamp "$cmd" "$kkey"
  done

  local ever; ever=$(_cp_require "$emod" go.etcd.io/etcd/server/v3)
  local ekey; ekey="$ever $(_cp_module_key "$emod")"
  if ! _cp_stamp_ok etcd "$ekey"; then
    log "building etcd $ever"
    (cd "$emod" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
      -o "$CALLVAULT_KUBE_BIN_DIR/etcd.tmp" go.etcd.io/etcd/server/v3) || return 1
    mv "$CALLVAULT_KUBE_BIN_DIR/etcd.tmp" "$CALLVAULT_KUBE_BIN_DIR/etcd"
    _cp_stamp etcd "$ekey"
  fi

  # Helm's module has no replace directives, so `go install pkg@version` works as is.
  if ! _cp_stamp_ok helm "$CALLVAULT_HELM_VERSION"; then
    log "building helm $CALLVAULT_HELM_VERSION"
    GOBIN="$CALLVAULT_KUBE_BIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
      "helm.sh/helm/v4/cmd/helm@$CALLVAULT_HELM_VERSION" || return 1
    _cp_stamp helm "$CALLVAULT_HELM_VERSION"
  fi
  log "control plane binaries in $CALLVAULT_KUBE_BIN_DIR (Kubernetes $kver, etcd $ever, helm $CALLVAULT_HELM_VERSION)"
}
