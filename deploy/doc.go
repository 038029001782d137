// Package deploy has no code of its own: its tests keep the deployment
// files honest without a Docker engine. They load docker-compose.yml with
// the Compose project's own loader, run the worker binary's `check` on the
// worker service's environment, run the real haproxy on a loopback variant
// of haproxy.cfg, run nats-server on nats.conf, and run rolling-restart.sh
// against a fake docker command. It is a module of its own so that its
// test-only dependencies stay out of the service module that producers
// import.
package deploy
