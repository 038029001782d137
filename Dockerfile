# notify-worker: a static binary in a small non-root image.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#                --build-arg COMMIT=$(git rev-parse HEAD) -t notify-worker .
#
# VERSION and COMMIT are stamped into the binary; the worker logs them at
# startup and exports them as notify_build_info{version,commit} in /metrics.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
    -ldflags="-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
    -o /out/notify-worker .

# distroless/static: no shell, no package manager, runs as uid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notify-worker /notify-worker
USER nonroot:nonroot
ENV NOTIFY_ADDR=":8888"
EXPOSE 8888
# The image has no curl: the binary probes its own /readyz (on the port of
# NOTIFY_ADDR) and exits non-zero unless it answers 200.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/notify-worker", "healthcheck"]
# SIGTERM: /readyz answers 503 for NOTIFY_DRAIN_DELAY (5s by default) while
# the worker still serves, then it closes every WebSocket with 1001 and
# drains NATS within NOTIFY_SHUTDOWN_TIMEOUT (15s by default); give the
# runtime longer than both (docker-compose.yml: stop_grace_period 25s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/notify-worker"]
