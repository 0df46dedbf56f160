#!/usr/bin/env bash
# Build the local control plane and its companions from the Go module proxy.
#
#   kube-apiserver  k8s.io/kubernetes   (tools/k8s-bins)
#   etcd            go.etcd.io/etcd     (tools/etcd-bin)
#   helm            helm.sh/helm/v3     (tools/helm-bin)
#   grpcurl, ghz                        (tools/grpcurl-bin, tools/ghz-bin)
#   vegeta (HTTP load)                  (tools/vegeta-bin)
#
# into ~/.cache/nexus-operator/bin/<versions>/ (override with NEXUS_CACHE_DIR).
# Idempotent: a component whose binary exists is skipped, and a fully built
# directory (marked by .complete) returns at once; a binary of the same version in an
# older cache directory (one built before a tool was added) is hard-linked, not rebuilt. Prints the output directory
# on its last line, so callers can do: BIN=$(tools/build.sh | tail -1).
set -euo pipefail

K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.14
HELM_VERSION=v3.21.4
HELM_K8S_MINOR=36   # helm v3.21 is built against client-go v0.36
GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.120.0
VEGETA_VERSION=v12.13.0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${NEXUS_CACHE_DIR:-$HOME/.cache/nexus-operator}"
out="$cache/bin/k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_grpcurl-${GRPCURL_VERSION}_ghz-${GHZ_VERSION}_vegeta-${VEGETA_VERSION}"

if [[ -f "$out/.complete" ]]; then
  echo "control plane binaries: up to date" >&2
  echo "$out"
  exit 0
fi

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH; install Go >= 1.26" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -trimpath -buildvcs=false"
mkdir -p "$out"
total_start=$SECONDS

reuse() { # name version-token: link a binary of the same version from another cache dir
  local name=$1 token=$2 dir
  for dir in "$cache"/bin/*"$token"*; do
    if [[ "$dir" != "$out" && -x "$dir/$name" ]]; then
      ln -f "$dir/$name" "$out/$name" 2>/dev/null || cp -p "$dir/$name" "$out/$name"
      echo "  $name: reused from $dir" >&2
      return 0
    fi
  done
  return 1
}

build() { # name module-dir ldflags package version-token
  local name=$1 dir=$2 ldflags=$3 pkg=$4 token=$5 start=$SECONDS
  if [[ -x "$out/$name" ]]; then
    echo "  $name: cached" >&2
    return
  fi
  if reuse "$name" "$token"; then
    return
  fi
  echo "  $name: building $pkg ..." >&2
  (cd "$here/$dir" && go build -mod=mod -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "  $name: built in $((SECONDS - start))s" >&2
}

k8s_ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1"
  k8s_ldflags+=" -X $p.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X $p.gitTreeState=clean"
  k8s_ldflags+=" -X $p.buildDate=1970-01-01T00:00:00Z"
done
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$HELM_K8S_MINOR"
done

echo "building control plane binaries into $out" >&2
build etcd etcd-bin "-s -w" go.etcd.io/etcd/server/v3 "etcd-$ETCD_VERSION"
build helm helm-bin "$helm_ldflags" helm.sh/helm/v3/cmd/helm "helm-$HELM_VERSION"
build grpcurl grpcurl-bin "-s -w -X main.version=$GRPCURL_VERSION" \
  github.com/fullstorydev/grpcurl/cmd/grpcurl "grpcurl-$GRPCURL_VERSION"
build ghz ghz-bin "-s -w -X main.version=$GHZ_VERSION" github.com/bojand/ghz/cmd/ghz "ghz-$GHZ_VERSION"
build vegeta vegeta-bin "-s -w -X main.Version=$VEGETA_VERSION" github.com/tsenart/vegeta/v12 \
  "vegeta-$VEGETA_VERSION"
build kube-apiserver k8s-bins "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver "k8s-$K8S_VERSION"

"$out/kube-apiserver" --version >&2
"$out/etcd" --version | head -1 >&2
"$out/helm" version --short >&2
"$out/vegeta" -version | head -1 >&2
touch "$out/.complete"
echo "control plane binaries built in $((SECONDS - total_start))s" >&2
echo "$out"
