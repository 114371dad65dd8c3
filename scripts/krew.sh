#!/usr/bin/env bash
# krew.sh: the kubectl plugin's release for krew. Builds kubectl-pathtrace (the
# pathtrace binary under the name kubectl runs plugins by) for each architecture, packs
# each with the LICENSE-less README into a tar.gz, and writes the krew manifest
# (deploy/krew/pathtrace.yaml.in filled in) with each archive's URL and sha256.
#
#   scripts/krew.sh [OUT]     OUT default bin/krew
#   VERSION=v0.3.0 URL_BASE=https://github.com/pathtrace/pathtrace/releases/download/v0.3.0 ARCHES="amd64 arm64"
#
# Install from the result without an index: kubectl krew install --manifest=OUT/pathtrace.yaml
# --archive=OUT/kubectl-pathtrace_linux_amd64.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bin/krew}
version=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}
[[ $version == v* ]] || version=v0.0.0-$version
url_base=${URL_BASE:-https://github.com/pathtrace/pathtrace/releases/download/$version}
arches=${ARCHES:-amd64 arm64}
mkdir -p "$out"
platforms=""
for arch in $arches; do
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$stage/kubectl-pathtrace" ./cmd/pathtrace
	cp README.md "$stage/README.md"
	archive=kubectl-pathtrace_linux_$arch.tar.gz
	tar -C "$stage" --owner=0 --group=0 --mtime=@0 -czf "$out/$archive" kubectl-pathtrace README.md
	sum=$(sha256sum "$out/$archive" | cut -d' ' -f1)
	platforms+="  - selector:
      matchLabels:
        os: linux
        arch: $arch
    uri: $url_base/$archive
    sha256: $sum
    bin: kubectl-pathtrace
    files:
      - from: kubectl-pathtrace
        to: .
      - from: README.md
        to: .
"
	rm -rf "$stage"
	trap - EXIT
done
sed -e "s|@VERSION@|$version|" deploy/krew/pathtrace.yaml.in >"$out/pathtrace.yaml"
printf '%s' "$platforms" >>"$out/pathtrace.yaml"
echo "krew.sh: $out/pathtrace.yaml ($version; $arches)"
