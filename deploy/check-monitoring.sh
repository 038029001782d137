#!/usr/bin/env bash
# Checks the Prometheus files with Prometheus's own tool: the scrape
# config and the rules it loads parse (promtool check config, which also
# checks deploy/prometheus/alerts.yml), the rules pass promtool check
# rules, and the unit tests of every alert pass (promtool test rules).
# TestMonitoringMetricsExist (go test ./deploy/) checks the metric names
# against a running worker; this script does not.
#
#   deploy/check-monitoring.sh
#
# Settings (environment):
#   PROMTOOL  the promtool binary (default: promtool from PATH); Debian's
#             (apt-get install prometheus) is what CI uses, or build one with
#             go install github.com/prometheus/prometheus/cmd/promtool@<version>
#
# Exits 0 when every check passes, 1 when one fails, 2 when promtool is
# missing.
set -euo pipefail

promtool=${PROMTOOL:-promtool}
if ! command -v "$promtool" >/dev/null 2>&1; then
	echo "check-monitoring: no promtool ($promtool); set PROMTOOL or put it on PATH" >&2
	exit 2
fi
cd "$(dirname "$0")/prometheus"

status=0
"$promtool" --version 2>&1 | sed -n 1p
"$promtool" check config prometheus.yml || status=1
"$promtool" check rules alerts.yml || status=1
"$promtool" test rules alerts_test.yml || status=1
exit "$status"
