package helm

import (
	"strings"
	"testing"
)

// TestRefusedValues: each configuration the fleet cannot run on fails the
// rendering with a message naming the value at fault.
func TestRefusedValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"grace period not above drain and shutdown", []string{"--set", "terminationGracePeriodSeconds=20"},
			"terminationGracePeriodSeconds 20 must be above shutdown.drainDelaySeconds + shutdown.timeoutSeconds = 20"},
		{"fractional drain delay", []string{"--set-json", "shutdown.drainDelaySeconds=2.5"}, "shutdown.drainDelaySeconds must be a whole number"},
		{"negative drain delay", []string{"--set", "shutdown.drainDelaySeconds=-1"}, "shutdown.drainDelaySeconds must be a whole number of seconds, 0 or more"},
		{"drain delay as a duration", []string{"--set", "shutdown.drainDelaySeconds=5s"}, "shutdown.drainDelaySeconds must be a number of seconds"},
		{"no shutdown timeout", []string{"--set", "shutdown.timeoutSeconds=0"}, "shutdown.timeoutSeconds must be at least 1"},
		{"no NATS", []string{"--set", "nats.urls=null"}, "nats.urls is empty"},
		{"not a NOTIFY_ name", []string{"--set", "env.GOMAXPROCS=2"}, "env.GOMAXPROCS: not a NOTIFY_* setting"},
		{"a name the chart sets", []string{"--set", "env.NOTIFY_ADDR=:1"}, "env.NOTIFY_ADDR: the chart sets it"},
		{"shutdown timeout in env", []string{"--set", "env.NOTIFY_SHUTDOWN_TIMEOUT=30s"}, "env.NOTIFY_SHUTDOWN_TIMEOUT: the chart sets it"},
		{"NATS URL in env", []string{"--set", "env.NOTIFY_NATS_URL=nats://x:4222"}, "env.NOTIFY_NATS_URL: the chart sets it"},
		{"a password in env", []string{"--set", "env.NOTIFY_NATS_PASSWORD=hunter2"}, "env.NOTIFY_NATS_PASSWORD: a secret; give it in secretEnv"},
		{"the JWT secret in env", []string{"--set", "env.NOTIFY_JWT_SECRET=x"}, "or jwt.secret / jwt.existingSecret"},
		{"a boolean", []string{"--set", "env.NOTIFY_EVENTS=true"}, `env.NOTIFY_EVENTS is the boolean true: quote it`},
		{"a map", []string{"--set", "env.NOTIFY_STREAM.name=x"}, "env.NOTIFY_STREAM must be a string, a number or a list"},
		{"a NOTIFY_ name in extraEnv", []string{"--set", "extraEnv[0].name=NOTIFY_LOG_LEVEL,extraEnv[0].value=debug"}, "extraEnv: NOTIFY_LOG_LEVEL is a NOTIFY_* setting"},
		{"a secret without key", []string{"--set", "secretEnv.NOTIFY_NATS_TOKEN.name=nats"}, "secretEnv.NOTIFY_NATS_TOKEN needs a Secret's name and key"},
		{"a secret also in env", []string{"--set", "secretEnv.NOTIFY_LOG_LEVEL.name=s,secretEnv.NOTIFY_LOG_LEVEL.key=k,env.NOTIFY_LOG_LEVEL=info"}, "secretEnv.NOTIFY_LOG_LEVEL: also set in env"},
		{"two JWT secrets", []string{"--set", "secretEnv.NOTIFY_JWT_SECRET.name=s,secretEnv.NOTIFY_JWT_SECRET.key=k"}, "give the JWT secret in jwt.secret or jwt.existingSecret only"},
		{"short JWT secret", []string{"--set", "jwt.secret=too-short"}, "jwt.secret has 9 bytes; NOTIFY_JWT_SECRET needs 32 or more"},
		{"jwt without a key", []string{"--set", "jwt.existingSecret="}, "NOTIFY_AUTH=jwt needs a key"},
		{"metrics on the WebSocket port", []string{"--set", "metrics.port=8888"}, "metrics.port must differ from containerPort"},
		{"ServiceMonitor without the metrics listener", []string{"--set", "metrics.enabled=false,metrics.serviceMonitor.enabled=true"}, "metrics.serviceMonitor.enabled needs metrics.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := template(t, tc.args...)
			if err == nil {
				t.Fatalf("rendered, want a failure containing %q; output:\n%s", tc.want, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestAcceptedAlternatives: the key sources other than a secret, and the
// /metrics on the WebSocket port, render.
func TestAcceptedAlternatives(t *testing.T) {
	for _, args := range [][]string{
		{"--set", "jwt.existingSecret=,env.NOTIFY_JWKS_URL=https://auth.example.com/jwks.json"},
		{"--set", "jwt.existingSecret=,env.NOTIFY_AUTH=none"},
		{"--set", "metrics.enabled=false"},
		{"--set", "shutdown.drainDelaySeconds=0,terminationGracePeriodSeconds=16"},
	} {
		t.Run(strings.Join(args[1:], " "), func(t *testing.T) {
			r := mustRender(t, args...)
			d, err := r.deployment()
			if err != nil {
				t.Fatal(err)
			}
			c := d.Spec.Template.Spec.Containers[0]
			checkProbes(t, c)
			checkGracePeriod(t, d.Spec.Template.Spec, c)
			checkSecurity(t, d.Spec.Template.Spec, c)
		})
	}
}
