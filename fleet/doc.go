// Package fleet has no code of its own: its tests run the deployment of
// docker-compose.yml as real processes on loopback (three clustered NATS
// servers, three notify-worker processes built from this module) and
// prove that delivery survives the faults a fleet sees; the durable
// scenarios (durable_test.go) run the servers with JetStream and an R3
// stream and count every durable message each protocol v2 client gets.
// docs/operations.md reports what they measure.
package fleet
