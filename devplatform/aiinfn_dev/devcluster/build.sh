#!/usr/bin/env bash
# Build the dev cluster's binaries from the Go module proxy into a cache outside the repository.
#
#   build.sh CACHE_DIR K8S_VERSION ETCD_VERSION KWOK_VERSION KUEUE_VERSION
#
# Each component is built into CACHE_DIR/<component>-<version>/bin and marked complete with a
# `.done` file only after its binaries run; a half-built directory is rebuilt from scratch.
set -euo pipefail

CACHE=$1 K8S=$2 ETCD=$3 KWOK=$4 KUEUE=$5
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
JOBS=${AIINFN_BUILD_JOBS:-$(nproc)}

log() { printf '[devcluster build] %s\n' "$*" >&2; }

# fresh_dir DIR: start DIR from scratch unless it carries a completed build.
fresh_dir() {
  if [ -f "$1/.done" ]; then return 1; fi
  rm -rf "$1"; mkdir -p "$1/bin"; return 0
}

build_kubernetes() {
  local dir="$CACHE/kubernetes-$K8S" minor stg gomod pkgs ldf v c
  fresh_dir "$dir" || { log "kubernetes $K8S: cached"; return; }
  log "kubernetes $K8S: resolving modules"
  cd "$dir"
  minor=$(echo "$K8S" | cut -d. -f2)
  stg="v0.${K8S#1.}"
  go mod init local/k8sbuild >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod"); do
    go mod edit "-replace=$m=$m@$stg"
  done
  pkgs="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl"
  go get $(for p in $pkgs; do echo "$p@v$K8S"; done)
  v=k8s.io/component-base/version; c=k8s.io/client-go/pkg/version
  ldf="-s -w -X $v.gitVersion=v$K8S -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean"
  ldf="$ldf -X $c.gitVersion=v$K8S -X $c.gitMajor=1 -X $c.gitMinor=$minor"
  log "kubernetes $K8S: compiling (the longest step)"
  go build -p "$JOBS" -trimpath -ldflags "$ldf" -o bin/ $pkgs
  bin/kube-apiserver --version >/dev/null
  touch .done
}

build_etcd() {
  local dir="$CACHE/etcd-$ETCD"
  fresh_dir "$dir" || { log "etcd $ETCD: cached"; return; }
  log "etcd $ETCD: building"
  cd "$dir"
  go mod init local/etcdbuild >/dev/null 2>&1
  go get "go.etcd.io/etcd/server/v3@v$ETCD"
  go build -p "$JOBS" -trimpath -ldflags "-s -w" -o bin/etcd go.etcd.io/etcd/server/v3
  bin/etcd --version >/dev/null
  touch .done
}

build_kwok() {
  local dir="$CACHE/kwok-$KWOK"
  fresh_dir "$dir" || { log "kwok $KWOK: cached"; return; }
  log "kwok $KWOK: building"
  GOBIN="$dir/bin" go install -p "$JOBS" -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK" "sigs.k8s.io/kwok/cmd/kwokctl@v$KWOK"
  "$dir/bin/kwok" --version >/dev/null
  # kwok's own lifecycle stages ship in its module; the harness picks and tunes them at start.
  cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kwok@v$KWOK/kustomize/stage" "$dir/stages"
  chmod -R u+w "$dir/stages"
  touch "$dir/.done"
}

build_kueue() {
  local dir="$CACHE/kueue-$KUEUE" src
  fresh_dir "$dir" || { log "kueue $KUEUE: cached"; return; }
  log "kueue $KUEUE: building"
  cd "$dir"
  # A wrapper module, as for etcd: `go install pkg@version` asks the proxy for the module's
  # version list (its deprecation check), which some proxies refuse.
  go mod init local/kueuebuild >/dev/null 2>&1
  src=$(go mod download -json "sigs.k8s.io/kueue@v$KUEUE" | python3 -c 'import json,sys;print(json.load(sys.stdin)["Dir"])')
  # Kueue's own go.sum (verified with its module) pins every dependency: some, such as its
  # pre-release scheduler-library, are missing from the public checksum database.
  install -m 644 "$src/go.sum" go.sum
  go get "sigs.k8s.io/kueue/cmd/kueue@v$KUEUE"
  go build -p "$JOBS" -trimpath -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE" \
    -o bin/kueue sigs.k8s.io/kueue/cmd/kueue
  bin/kueue --help >/dev/null 2>&1
  # The CRDs and webhook definitions of that same release; the harness adapts them at start.
  mkdir -p config
  cp -r "$src/config/components/crd/bases" config/crd
  cp "$src/config/components/webhook/manifests.yaml" config/webhook.yaml
  chmod -R u+w config
  touch .done
}

mkdir -p "$CACHE"
build_etcd
build_kwok
build_kubernetes
build_kueue
log "all components built in $CACHE"
