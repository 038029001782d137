package helm

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestLint runs helm lint --strict with the default and the production
// values.
func TestLint(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", productionValues}} {
		if out, err := runHelm(t, append([]string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}, args...)...); err != nil {
			t.Errorf("%v\n%s", err, out)
		}
	}
}

// TestDefaultValues renders the defaults: a Deployment, its Service and
// metrics Service, a PodDisruptionBudget, and neither autoscaler nor
// ServiceMonitor; the pods read the JWT secret from the Secret
// notify-worker-jwt, which the chart does not create.
func TestDefaultValues(t *testing.T) {
	r := mustRender(t)
	checkRelease(t, r)
	if len(r.hpas) != 0 || len(r.serviceMonitors) != 0 || len(r.secrets) != 0 {
		t.Errorf("defaults render %d autoscalers, %d ServiceMonitors, %d Secrets; want none", len(r.hpas), len(r.serviceMonitors), len(r.secrets))
	}
	d, _ := r.deployment()
	c := d.Spec.Template.Spec.Containers[0]
	if ref := envVar(c, "NOTIFY_JWT_SECRET").ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "notify-worker-jwt" || ref.SecretKeyRef.Key != "jwt-secret" {
		t.Errorf("NOTIFY_JWT_SECRET = %+v, want the key jwt-secret of Secret notify-worker-jwt", envVar(c, "NOTIFY_JWT_SECRET"))
	}
	if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != 25 {
		t.Errorf("terminationGracePeriodSeconds = %d, want 5 + 15 + 5 = 25", got)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3", d.Spec.Replicas)
	}
}

// TestProductionValues renders ci/production-values.yaml: everything the
// defaults render plus the autoscaler and the ServiceMonitor, and settings
// rendered as the strings the worker parses.
func TestProductionValues(t *testing.T) {
	r := mustRender(t, "-f", productionValues)
	checkRelease(t, r)
	if len(r.hpas) != 1 || len(r.serviceMonitors) != 1 {
		t.Fatalf("production values render %d autoscalers and %d ServiceMonitors, want 1 each", len(r.hpas), len(r.serviceMonitors))
	}
	d, _ := r.deployment()
	if d.Spec.Replicas != nil {
		t.Errorf("replicas = %d with the autoscaler on, want none (the autoscaler owns it)", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for name, want := range map[string]string{
		"NOTIFY_STREAM_MAX_BYTES": "8589934592",
		"NOTIFY_API_RATE":         "250.5",
		"NOTIFY_ALLOWED_ORIGINS":  "https://app.example.com,https://*.example.com",
		"NOTIFY_EVENTS":           "on",
		"NOTIFY_NATS_URL":         "nats://nats-0.nats-headless.nats.svc:4222,nats://nats-1.nats-headless.nats.svc:4222,nats://nats-2.nats-headless.nats.svc:4222",
		"NOTIFY_DRAIN_DELAY":      "10s",
		"NOTIFY_SHUTDOWN_TIMEOUT": "20s",
	} {
		if got := envVar(c, name).Value; got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	for _, name := range []string{"NOTIFY_NATS_PASSWORD", "NOTIFY_API_KEY", "NOTIFY_API_NATS_PASSWORD"} {
		if v := envVar(c, name); v.ValueFrom == nil || v.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s = %+v, want it from a Secret", name, v)
		}
	}
	if got := *d.Spec.Template.Spec.TerminationGracePeriodSeconds; got != 40 {
		t.Errorf("terminationGracePeriodSeconds = %d, want the 40 set", got)
	}
	if svc := r.service(fullname); svc.Spec.Type != corev1.ServiceTypeLoadBalancer || len(svc.Spec.Ports) != 1 {
		t.Errorf("the public Service is %s with ports %+v, want a LoadBalancer with the WebSocket port only", svc.Spec.Type, svc.Spec.Ports)
	}
	if sm := r.serviceMonitors[0]; sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels = %v, want the release label of the values", sm.Labels)
	}
}

// TestChartCreatesJWTSecret: with jwt.secret the chart creates the Secret
// and the pods read it from there; a change of it rolls the pods.
func TestChartCreatesJWTSecret(t *testing.T) {
	const secret = "a-jwt-secret-of-forty-eight-bytes-0123456789abcd"
	r := mustRender(t, "--set", "jwt.secret="+secret)
	checkRelease(t, r)
	if len(r.secrets) != 1 || r.secrets[0].Name != fullname || string(r.secrets[0].Data["jwt-secret"]) != secret {
		t.Fatalf("Secrets = %+v, want %s holding jwt-secret", r.secrets, fullname)
	}
	d, _ := r.deployment()
	ref := envVar(d.Spec.Template.Spec.Containers[0], "NOTIFY_JWT_SECRET").ValueFrom
	if ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != fullname || ref.SecretKeyRef.Key != "jwt-secret" {
		t.Errorf("NOTIFY_JWT_SECRET from %+v, want key jwt-secret of %s", ref, fullname)
	}
	if d.Spec.Template.Annotations["checksum/secret"] == "" {
		t.Error("no checksum/secret annotation: a new secret would not roll the pods")
	}
}

// TestTLSProbes: a worker serving TLS itself is probed over HTTPS.
func TestTLSProbes(t *testing.T) {
	r := mustRender(t, "--set", "env.NOTIFY_TLS_CERT=/tls/tls.crt,env.NOTIFY_TLS_KEY=/tls/tls.key")
	checkRelease(t, r)
	d, _ := r.deployment()
	c := d.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS || c.LivenessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("probe schemes %s, %s; want HTTPS", c.ReadinessProbe.HTTPGet.Scheme, c.LivenessProbe.HTTPGet.Scheme)
	}
}

// TestMisspeltSettingIsCaught: the chart passes on any NOTIFY_* name, and
// the check against config.go is what refuses a misspelt one.
func TestMisspeltSettingIsCaught(t *testing.T) {
	r := mustRender(t, "--set", "env.NOTIFY_STREAM_REPLICA=3")
	d, _ := r.deployment()
	known, err := configVariables(configGo)
	if err != nil {
		t.Fatal(err)
	}
	if got := unknownVariables(envNames(d.Spec.Template.Spec.Containers[0]), known); !slices.Equal(got, []string{"NOTIFY_STREAM_REPLICA"}) {
		t.Errorf("unknown variables = %v, want [NOTIFY_STREAM_REPLICA]", got)
	}
}

// TestEverySettingIsAValue: each Config field's variable is either named in
// values.yaml (set or commented with its default) or set by the chart.
func TestEverySettingIsAValue(t *testing.T) {
	known, err := configVariables(configGo)
	if err != nil {
		t.Fatal(err)
	}
	values, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	r := mustRender(t)
	d, _ := r.deployment()
	rendered := envNames(d.Spec.Template.Spec.Containers[0])
	for name := range known {
		mentioned := regexp.MustCompile(`\b` + name + `\b`).Match(values)
		if !mentioned && !slices.Contains(rendered, name) {
			t.Errorf("%s is a Config field that values.yaml does not mention and the chart does not set", name)
		}
	}
}

// checkRelease checks what every rendering must hold.
func checkRelease(t *testing.T, r *release) {
	t.Helper()
	d, err := r.deployment()
	if err != nil {
		t.Fatal(err)
	}
	pod := d.Spec.Template
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]

	checkEnv(t, c)
	checkProbes(t, c)
	checkGracePeriod(t, pod.Spec, c)
	checkSecurity(t, pod.Spec, c)
	checkResources(t, c)
	checkWiring(t, r, d, c)
}

// checkEnv: every NOTIFY_* variable is a Config field, none is given twice,
// and no secret is a plain value.
func checkEnv(t *testing.T, c corev1.Container) {
	t.Helper()
	known, err := configVariables(configGo)
	if err != nil {
		t.Fatal(err)
	}
	names := envNames(c)
	if unknown := unknownVariables(names, known); len(unknown) > 0 {
		t.Errorf("variables that are no Config field in %s: %v", configGo, unknown)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] {
			t.Errorf("%s given twice", n)
		}
		seen[n] = true
	}
	for _, e := range c.Env {
		if regexp.MustCompile(`SECRET|PASSWORD|TOKEN|API_KEY$`).MatchString(e.Name) && e.ValueFrom == nil {
			t.Errorf("%s is a plain value, want it from a Secret", e.Name)
		}
	}
	if got := envVar(c, "NOTIFY_STREAM_REPLICAS").Value; got != "3" {
		t.Errorf("NOTIFY_STREAM_REPLICAS = %q, want 3 (a 3-node JetStream cluster)", got)
	}
	if ref := envVar(c, "NOTIFY_WORKER_ID").ValueFrom; ref == nil || ref.FieldRef == nil || ref.FieldRef.FieldPath != "metadata.name" {
		t.Errorf("NOTIFY_WORKER_ID from %+v, want the pod's name", ref)
	}
	if envVar(c, "NOTIFY_NATS_URL").Value == "" {
		t.Error("NOTIFY_NATS_URL is empty: each pod would start its own embedded NATS server")
	}
}

// checkProbes: readiness on /readyz and liveness on /healthz, both on the
// port of NOTIFY_ADDR.
func checkProbes(t *testing.T, c corev1.Container) {
	t.Helper()
	addrPort := portOf(t, envVar(c, "NOTIFY_ADDR").Value)
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.kind)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe path %q, want %s", p.kind, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, c, p.probe.HTTPGet.Port); got != addrPort {
			t.Errorf("%s probe on port %d, want NOTIFY_ADDR's %d", p.kind, got, addrPort)
		}
	}
}

// checkGracePeriod: Kubernetes waits longer than the drain delay and the
// shutdown timeout together before it kills the worker.
func checkGracePeriod(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	drain, err := time.ParseDuration(envVar(c, "NOTIFY_DRAIN_DELAY").Value)
	if err != nil {
		t.Fatalf("NOTIFY_DRAIN_DELAY: %v", err)
	}
	shutdown, err := time.ParseDuration(envVar(c, "NOTIFY_SHUTDOWN_TIMEOUT").Value)
	if err != nil {
		t.Fatalf("NOTIFY_SHUTDOWN_TIMEOUT: %v", err)
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	if grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; grace <= drain+shutdown {
		t.Errorf("terminationGracePeriodSeconds %s, want above NOTIFY_DRAIN_DELAY %s + NOTIFY_SHUTDOWN_TIMEOUT %s", grace, drain, shutdown)
	}
}

// checkSecurity: non-root, read-only root filesystem, no privilege
// escalation, no capabilities, the runtime's seccomp profile, no service
// account token.
func checkSecurity(t *testing.T, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no container securityContext")
	}
	isTrue := func(b *bool) bool { return b != nil && *b }
	if !isTrue(sc.RunAsNonRoot) && (spec.SecurityContext == nil || !isTrue(spec.SecurityContext.RunAsNonRoot)) {
		t.Error("runAsNonRoot is not set")
	}
	if spec.SecurityContext != nil && spec.SecurityContext.RunAsUser != nil && *spec.SecurityContext.RunAsUser == 0 {
		t.Error("runAsUser is 0")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if isTrue(sc.Privileged) {
		t.Error("privileged")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("capabilities %+v, want drop [ALL] and no add", sc.Capabilities)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil && spec.SecurityContext != nil {
		seccomp = spec.SecurityContext.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccomp profile %+v, want RuntimeDefault", seccomp)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("the service account token is mounted")
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		t.Error("service links are on: a Service named notify would add NOTIFY_* variables")
	}
}

// checkResources: requests of CPU and memory and a memory limit, so that
// the scheduler places the connections' memory and the kernel bounds it.
func checkResources(t *testing.T, c corev1.Container) {
	t.Helper()
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		t.Errorf("resources %+v, want CPU and memory requests and a memory limit", c.Resources)
	}
	if lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("memory limit %s below the request %s", lim.Memory(), req.Memory())
	}
	if max := envVar(c, "NOTIFY_MAX_CONNECTIONS").Value; max == "" || max == "0" {
		t.Errorf("NOTIFY_MAX_CONNECTIONS = %q: the open-file limit of the runtime would be the cap, not the memory", max)
	}
}

// checkWiring: the Services, the PodDisruptionBudget, the autoscaler and
// the ServiceMonitor reach the Deployment's pods and the ports they name.
func checkWiring(t *testing.T, r *release, d *appsv1.Deployment, c corev1.Container) {
	t.Helper()
	podLabels := labels.Set(d.Spec.Template.Labels)
	sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
	if !sel.Matches(podLabels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", sel, podLabels)
	}

	svc := r.service(fullname)
	if svc == nil {
		t.Fatalf("no Service %s", fullname)
	}
	for _, s := range r.services {
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			t.Errorf("Service %s selects %v, not the pods %v", s.Name, s.Spec.Selector, podLabels)
		}
	}
	if len(svc.Spec.Ports) != 1 || containerPort(t, c, svc.Spec.Ports[0].TargetPort) != portOf(t, envVar(c, "NOTIFY_ADDR").Value) {
		t.Errorf("Service %s ports %+v, want one to NOTIFY_ADDR's port", svc.Name, svc.Spec.Ports)
	}

	metricsAddr := envVar(c, "NOTIFY_METRICS_ADDR").Value
	if metricsAddr != ":9090" {
		t.Errorf("NOTIFY_METRICS_ADDR = %q, want :9090", metricsAddr)
	}
	metrics := r.service(fullname + "-metrics")
	if metrics == nil || metrics.Spec.Type != corev1.ServiceTypeClusterIP || len(metrics.Spec.Ports) != 1 ||
		metrics.Spec.Ports[0].Name != "metrics" || containerPort(t, c, metrics.Spec.Ports[0].TargetPort) != 9090 {
		t.Errorf("metrics Service %+v, want a ClusterIP Service with port metrics to container port 9090", metrics)
	}
	for _, sm := range r.serviceMonitors {
		smSel := labels.SelectorFromSet(sm.Spec.Selector.MatchLabels)
		var selected []string
		for _, s := range r.services {
			if smSel.Matches(labels.Set(s.Labels)) {
				selected = append(selected, s.Name)
			}
		}
		if metrics == nil || !slices.Equal(selected, []string{metrics.Name}) {
			t.Errorf("ServiceMonitor selects Services %v, want only the metrics Service", selected)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v, want port metrics, path /metrics", sm.Spec.Endpoints)
		}
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{namespace}) {
			t.Errorf("ServiceMonitor namespaces %v, want [%s]", sm.Spec.NamespaceSelector.MatchNames, namespace)
		}
	}

	if len(r.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(r.pdbs))
	}
	pdb := r.pdbs[0]
	if s, err := metav1LabelSelector(pdb.Spec.Selector); err != nil || !s.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget selects %v, not the pods", pdb.Spec.Selector)
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget without maxUnavailable or minAvailable")
	}
	for _, h := range r.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != d.Name {
			t.Errorf("autoscaler scales %+v, want Deployment %s", ref, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			t.Errorf("autoscaler replicas %v-%d, want at least 2 and max >= min", h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
	}
}

func envVar(c corev1.Container, name string) corev1.EnvVar {
	for _, e := range c.Env {
		if e.Name == name {
			return e
		}
	}
	return corev1.EnvVar{}
}

func envNames(c corev1.Container) []string {
	names := make([]string, len(c.Env))
	for i, e := range c.Env {
		names[i] = e.Name
	}
	return names
}

// containerPort resolves a port by name or number to the container's port
// number, 0 if the container has no such port.
func containerPort(t *testing.T, c corev1.Container, p intstr.IntOrString) int {
	t.Helper()
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return int(cp.ContainerPort)
		}
	}
	t.Errorf("container has no port %s", p.String())
	return 0
}

// portOf returns the port of a listen address such as ":8888".
func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("address %q: %v", addr, err)
		return 0
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Errorf("address %q: %v", addr, err)
	}
	return n
}

// metav1LabelSelector turns an API label selector into one that matches.
func metav1LabelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil {
		return nil, fmt.Errorf("no selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}
