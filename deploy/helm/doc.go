// Package helm has no code of its own: its tests keep the Helm chart in
// notify-worker/ honest. They render the chart with the real helm binary,
// decode every manifest strictly into the Kubernetes API types (and the
// Prometheus Operator's, for the ServiceMonitor), and check the probes, the
// grace period, the security context, the wiring between the Deployment,
// its Services, the PodDisruptionBudget, the HorizontalPodAutoscaler and the
// ServiceMonitor, and that every NOTIFY_* variable the pods get is a field
// of the worker's Config (read from ../../config.go). They also run the
// worker's own `check` on the environment the chart gives the container.
// It is a module of its own so that the Kubernetes types stay out of the
// service module and of the compose checks in deploy/.
package helm
