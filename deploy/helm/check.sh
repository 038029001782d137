#!/bin/sh
# Checks the Helm chart in notify-worker/: helm lint and helm template with
# the default and the production-like values (ci/production-values.yaml),
# then the Go tests of this module, which decode every rendered manifest
# into the Kubernetes API types.
#
# helm comes from the Go module proxy: when $TOOLS_DIR/bin/helm is missing
# or is not $HELM_VERSION, it is built with go install (a few minutes on two
# cores; keep $TOOLS_DIR in the CI cache to build it once).
#
#   deploy/helm/check.sh
#   TOOLS_DIR=/cache/tools deploy/helm/check.sh
set -eu

here=$(cd "$(dirname "$0")" && pwd)
HELM_VERSION=${HELM_VERSION:-v3.22.0}
TOOLS_DIR=${TOOLS_DIR:-$here/.tools}
# The Kubernetes version the chart is rendered for (a helm built by go
# install does not carry the one of its release).
KUBE_VERSION=${KUBE_VERSION:-1.31.0}
helm=$TOOLS_DIR/bin/helm

if [ ! -x "$helm" ] || [ "$("$helm" version --short 2>/dev/null)" != "$HELM_VERSION" ]; then
	echo "check.sh: building helm $HELM_VERSION into $TOOLS_DIR/bin" >&2
	mkdir -p "$TOOLS_DIR/bin"
	(cd "$here" && GOBIN="$TOOLS_DIR/bin" go install \
		-ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
fi

chart=$here/notify-worker
for values in "" "$chart/ci/production-values.yaml"; do
	set -- --kube-version "$KUBE_VERSION"
	[ -n "$values" ] && set -- "$@" -f "$values"
	"$helm" lint --strict "$chart" "$@"
	"$helm" template notify "$chart" --namespace notify "$@" >/dev/null
	echo "check.sh: helm lint and helm template ${values:+with $values }ok"
done

cd "$here"
go vet ./...
HELM=$helm go test -race -count=1 ./...
