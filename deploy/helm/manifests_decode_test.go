package helm

import (
	"strings"
	"testing"
)

// TestDecodeIsStrict: a field the API type lacks, a value of the wrong
// type, a duplicated key and an unexpected kind each fail the decoding, so
// that the chart's tests cannot pass on a manifest Kubernetes would refuse
// or silently trim.
func TestDecodeIsStrict(t *testing.T) {
	const deployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: w
spec:
  selector:
    matchLabels: {app: w}
  template:
    metadata:
      labels: {app: w}
    spec:
      %s
      containers:
        - name: w
          image: w
`
	if _, err := decodeRelease(strings.Replace(deployment, "%s", "terminationGracePeriodSeconds: 25", 1)); err != nil {
		t.Fatalf("a valid Deployment: %v", err)
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", strings.Replace(deployment, "%s", "terminationGracePeriod: 25", 1), "unknown field"},
		{"wrong type", strings.Replace(deployment, "%s", `terminationGracePeriodSeconds: "25"`, 1), "terminationGracePeriodSeconds"},
		{"duplicate key", strings.Replace(deployment, "%s", "terminationGracePeriodSeconds: 25\n      terminationGracePeriodSeconds: 30", 1), "already set"},
		{"unexpected kind", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n", "unexpected v1 ConfigMap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRelease("---\n# Source: x\n" + tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
