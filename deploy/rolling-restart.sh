#!/usr/bin/env bash
# Restarts the worker replicas of the compose project one at a time, so
# that the others keep serving: `docker compose restart worker` stops
# them all at once.
#
#   deploy/rolling-restart.sh
#
# For each worker container in turn: `docker restart` (SIGTERM, and the
# container's stop_grace_period before a kill; the worker drains for
# NOTIFY_DRAIN_DELAY first, so HAProxy moves new clients away), then wait
# until Docker reports it healthy, then until HAProxy (the lb service)
# has as many workers UP as there are worker containers, so that it sends
# clients to the restarted one again before the next goes. Stops at the
# first replica that does not come back within HEALTH_TIMEOUT, and exits
# non-zero, leaving the rest untouched.
#
# Settings (environment):
#   COMPOSE_PROJECT_NAME  compose project (default: notify)
#   WORKER_SERVICE        service to restart (default: worker)
#   LB_SERVICE            HAProxy service (default: lb); if none runs, only
#                         Docker's health is awaited
#   HEALTH_TIMEOUT        seconds each replica may take to come back (default: 120)
#   POLL_INTERVAL         seconds between polls (default: 1)
set -euo pipefail

project=${COMPOSE_PROJECT_NAME:-notify}
service=${WORKER_SERVICE:-worker}
lb_service=${LB_SERVICE:-lb}
timeout=${HEALTH_TIMEOUT:-120}
interval=${POLL_INTERVAL:-1}

say() { echo "rolling-restart: $*"; }
die() { echo "rolling-restart: $*" >&2; exit 1; }

containers_of() {
  docker ps -q \
    --filter "label=com.docker.compose.project=$project" \
    --filter "label=com.docker.compose.service=$1"
}

# lb_workers_up prints how many servers of HAProxy's workers backend are UP.
lb_workers_up() {
  docker exec "$1" wget -q -O - 'http://127.0.0.1:8404/stats;csv' |
    awk -F, '$1 == "workers" && $2 != "BACKEND" && $18 == "UP" { n++ } END { print n + 0 }'
}

mapfile -t workers < <(containers_of "$service" | awk NF)
[ "${#workers[@]}" -gt 0 ] || die "no running $service container in project $project"
lb=$(containers_of "$lb_service" | head -n 1)
if [ -z "$lb" ]; then
  say "no running $lb_service container: waiting for Docker's health only"
fi

say "restarting ${#workers[@]} $service container(s) of $project one at a time"
for id in "${workers[@]}"; do
  start=$(date +%s)
  deadline=$((start + timeout))
  say "$id: restarting"
  docker restart "$id" >/dev/null

  status=""
  while :; do
    status=$(docker inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id")
    case $status in
      healthy) break ;;
      no-healthcheck) die "$id has no health check; cannot tell when it is back" ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] ||
      die "$id not healthy ${timeout}s after restart (health: $status); stopping here, later containers not restarted"
    sleep "$interval"
  done
  say "$id: healthy after $(($(date +%s) - start))s"

  if [ -n "$lb" ]; then
    while :; do
      up=$(lb_workers_up "$lb") || die "cannot read HAProxy's stats in $lb (docker exec $lb wget ...)"
      [ "$up" -ge "${#workers[@]}" ] && break
      [ "$(date +%s)" -lt "$deadline" ] ||
        die "$id healthy, but HAProxy has $up of ${#workers[@]} workers UP ${timeout}s after restart; stopping here, later containers not restarted"
      sleep "$interval"
    done
    say "$id: back in HAProxy after $(($(date +%s) - start))s"
  fi
done
say "done: ${#workers[@]} container(s) restarted"
