{{/* The chart's name, and the release's full name (at most 63 characters). */}}
{{- define "notify-worker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "notify-worker.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "notify-worker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notify-worker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "notify-worker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "notify-worker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The grace period Kubernetes gives a pod between SIGTERM and SIGKILL: the
drain delay plus the shutdown timeout plus a margin, or the value set, which
must exceed the first two.
*/}}
{{- define "notify-worker.gracePeriod" -}}
{{- $s := .Values.shutdown }}
{{- range $k := list "drainDelaySeconds" "timeoutSeconds" "graceMarginSeconds" }}
{{- $v := index $s $k }}
{{- if not (or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v)) }}
{{- fail (printf "shutdown.%s must be a number of seconds, got %v" $k $v) }}
{{- end }}
{{- if or (lt (float64 $v) 0.0) (ne (float64 (int64 $v)) (float64 $v)) }}
{{- fail (printf "shutdown.%s must be a whole number of seconds, 0 or more, got %v" $k $v) }}
{{- end }}
{{- end }}
{{- if lt (int64 $s.timeoutSeconds) 1 }}
{{- fail "shutdown.timeoutSeconds must be at least 1 (NOTIFY_SHUTDOWN_TIMEOUT must be positive)" }}
{{- end }}
{{- $needed := add (int64 $s.drainDelaySeconds) (int64 $s.timeoutSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $needed (int64 $s.graceMarginSeconds) }}
{{- else }}
{{- $g := int64 .Values.terminationGracePeriodSeconds }}
{{- if le $g $needed }}
{{- fail (printf "terminationGracePeriodSeconds %d must be above shutdown.drainDelaySeconds + shutdown.timeoutSeconds = %d, or Kubernetes kills the worker before it drains" $g $needed) }}
{{- end }}
{{- $g }}
{{- end }}
{{- end }}

{{/* The name of the Secret holding the JWT secret, "" when there is none. */}}
{{- define "notify-worker.jwtSecretName" -}}
{{- if .Values.jwt.secret }}
{{- include "notify-worker.fullname" . }}
{{- else if .Values.jwt.existingSecret }}
{{- .Values.jwt.existingSecret }}
{{- end }}
{{- end }}

{{- define "notify-worker.jwtSecretKey" -}}
{{- if .Values.jwt.secret }}jwt-secret{{ else }}{{ .Values.jwt.existingSecretKey }}{{ end }}
{{- end }}

{{/* A setting's value as the string the worker reads. */}}
{{- define "notify-worker.envValue" -}}
{{- $name := .name }}
{{- $v := .value }}
{{- if kindIs "bool" $v }}
{{- fail (printf "env.%s is the boolean %v: quote it (\"on\", \"off\"), YAML reads an unquoted on/off/yes/no as a boolean" $name $v) }}
{{- else if kindIs "slice" $v }}
{{- join "," $v }}
{{- else if kindIs "float64" $v }}
{{- if eq (float64 (int64 $v)) $v }}{{ int64 $v }}{{ else }}{{ $v }}{{ end }}
{{- else if or (kindIs "map" $v) (kindIs "invalid" $v) }}
{{- fail (printf "env.%s must be a string, a number or a list, got %v" $name $v) }}
{{- else }}
{{- $v }}
{{- end }}
{{- end }}

{{/*
Refuses a configuration the fleet cannot run on: no NATS, a NOTIFY_* name
the chart sets itself or a secret in plain values, NOTIFY_AUTH=jwt without
a key.
*/}}
{{- define "notify-worker.validate" -}}
{{- if not .Values.nats.urls }}
{{- fail "nats.urls is empty: give the NATS servers (the worker would otherwise start an embedded NATS server in each pod)" }}
{{- end }}
{{- $chartSet := list "NOTIFY_ADDR" "NOTIFY_METRICS_ADDR" "NOTIFY_WORKER_ID" "NOTIFY_DRAIN_DELAY" "NOTIFY_SHUTDOWN_TIMEOUT" "NOTIFY_NATS_URL" }}
{{- $secret := list "NOTIFY_JWT_SECRET" "NOTIFY_NATS_PASSWORD" "NOTIFY_NATS_TOKEN" "NOTIFY_API_KEY" "NOTIFY_API_NATS_PASSWORD" }}
{{- range $name, $v := .Values.env }}
{{- if not (regexMatch "^NOTIFY_[A-Z0-9_]+$" $name) }}
{{- fail (printf "env.%s: not a NOTIFY_* setting; other variables go in extraEnv" $name) }}
{{- end }}
{{- if has $name $chartSet }}
{{- fail (printf "env.%s: the chart sets it (see values.yaml: containerPort, metrics, nats.urls, shutdown)" $name) }}
{{- end }}
{{- if has $name $secret }}
{{- fail (printf "env.%s: a secret; give it in secretEnv (a Secret's name and key)%s" $name (ternary ", or jwt.secret / jwt.existingSecret" "" (eq $name "NOTIFY_JWT_SECRET"))) }}
{{- end }}
{{- end }}
{{- range $name, $ref := .Values.secretEnv }}
{{- if not (regexMatch "^NOTIFY_[A-Z0-9_]+$" $name) }}
{{- fail (printf "secretEnv.%s: not a NOTIFY_* setting" $name) }}
{{- end }}
{{- if or (hasKey $.Values.env $name) (has $name $chartSet) }}
{{- fail (printf "secretEnv.%s: also set in env or by the chart" $name) }}
{{- end }}
{{- if and (eq $name "NOTIFY_JWT_SECRET") (include "notify-worker.jwtSecretName" $) }}
{{- fail "secretEnv.NOTIFY_JWT_SECRET: give the JWT secret in jwt.secret or jwt.existingSecret only" }}
{{- end }}
{{- if not (and (kindIs "map" $ref) $ref.name $ref.key) }}
{{- fail (printf "secretEnv.%s needs a Secret's name and key: {name: ..., key: ...}" $name) }}
{{- end }}
{{- end }}
{{- range .Values.extraEnv }}
{{- if hasPrefix "NOTIFY_" (toString .name) }}
{{- fail (printf "extraEnv: %s is a NOTIFY_* setting; give it in env or secretEnv" .name) }}
{{- end }}
{{- end }}
{{- if and .Values.jwt.secret (lt (len .Values.jwt.secret) 32) }}
{{- fail (printf "jwt.secret has %d bytes; NOTIFY_JWT_SECRET needs 32 or more" (len .Values.jwt.secret)) }}
{{- end }}
{{- $auth := toString (default "none" (index .Values.env "NOTIFY_AUTH")) }}
{{- if eq $auth "jwt" }}
{{- if not (or (include "notify-worker.jwtSecretName" .) (hasKey .Values.secretEnv "NOTIFY_JWT_SECRET") (index .Values.env "NOTIFY_JWT_PUBLIC_KEY_FILE") (index .Values.env "NOTIFY_JWKS_URL")) }}
{{- fail "NOTIFY_AUTH=jwt needs a key: jwt.secret, jwt.existingSecret, env.NOTIFY_JWT_PUBLIC_KEY_FILE or env.NOTIFY_JWKS_URL" }}
{{- end }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- if or (eq (int .Values.metrics.port) (int .Values.containerPort)) }}
{{- fail "metrics.port must differ from containerPort" }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled: the ServiceMonitor scrapes the metrics Service" }}
{{- end }}
{{- end }}
