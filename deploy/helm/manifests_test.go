package helm

import (
	"fmt"
	"regexp"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// release is one rendering of the chart, every manifest decoded into its
// API type.
type release struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	secrets         []*corev1.Secret
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	serviceMonitors []*monitoringv1.ServiceMonitor
}

// documentSeparator splits helm template's output into its documents.
var documentSeparator = regexp.MustCompile(`(?m)^---\s*$`)

// decodeRelease decodes every document of a rendering strictly: a field the
// API type does not have, a value of the wrong type, a duplicated key, or a
// kind the chart is not expected to render is an error.
func decodeRelease(out string) (*release, error) {
	r := &release{}
	for i, doc := range documentSeparator.Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return nil, fmt.Errorf("document %d: %w\n%s", i, err, doc)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			r.deployments, obj = append(r.deployments, o), o
		case "v1 Service":
			o := &corev1.Service{}
			r.services, obj = append(r.services, o), o
		case "v1 Secret":
			o := &corev1.Secret{}
			r.secrets, obj = append(r.secrets, o), o
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			r.pdbs, obj = append(r.pdbs, o), o
		case "autoscaling/v2 HorizontalPodAutoscaler":
			o := &autoscalingv2.HorizontalPodAutoscaler{}
			r.hpas, obj = append(r.hpas, o), o
		case "monitoring.coreos.com/v1 ServiceMonitor":
			o := &monitoringv1.ServiceMonitor{}
			r.serviceMonitors, obj = append(r.serviceMonitors, o), o
		default:
			return nil, fmt.Errorf("document %d: unexpected %s %s\n%s", i, tm.APIVersion, tm.Kind, doc)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("document %d (%s): %w\n%s", i, tm.Kind, err, doc)
		}
	}
	return r, nil
}

// stripComments drops the "# Source:" lines and other comment lines.
func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// deployment returns the one Deployment, or fails.
func (r *release) deployment() (*appsv1.Deployment, error) {
	if len(r.deployments) != 1 {
		return nil, fmt.Errorf("%d Deployments rendered, want 1", len(r.deployments))
	}
	return r.deployments[0], nil
}

// service returns the Service named name, or nil.
func (r *release) service(name string) *corev1.Service {
	for _, s := range r.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}
