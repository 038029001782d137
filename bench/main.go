// Command bench drives a running notify-worker over loopback with real
// WebSocket clients and a real NATS producer, and reports what the worker
// costs and how late and how complete its deliveries are.
//
//	bench idle      -pid P -conns 19000
//	bench targeted  -pid P -conns 10000 -rate 20000 -duration 20s
//	bench broadcast -pid P -conns 10000 -count 100
//	bench natsd     -port 14300   (a NATS server in a process of its own)
//	bench floor     -conns 10000  (CPU of one bare loopback write, the floor)
//	bench replay    -pid P -missed 1000 -resumes 200      (one client's replay)
//	bench resume    -pid P -rate 1000 -stream-msgs 100000 (resumes per second)
//	bench durable   -pid P -conns 1000 -rate 5000 -publish durable|core
//	bench presence  -nats URL -ws WS1,WS2,WS3 -pids P1,P2,P3 -names 10000
//	bench compare   -centrifugo PATH [-quick] [-only targeted,broadcast]
//
// compare starts its own servers, a fresh process per run: notify-worker
// and Centrifugo side by side, the same clients and payloads for both.
//
// The durable modes (protocol v2, docs/protocol.md section 8) need the
// worker's JetStream stream: the embedded server's, or bench natsd -jetstream.
//
// The coordinator spawns "bench client" processes of itself, each holding
// at most -per-proc connections (the open-file limit is per process), and
// spreads their source addresses over 127.0.0.x so that ephemeral ports do
// not run out. Every run is bounded in time and stops by itself.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench idle|targeted|broadcast|durable|replay|resume|presence|compare|natsd|floor [flags]  (-h for flags)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "idle", "targeted", "broadcast", "durable":
		err = runCoordinator(os.Args[1], os.Args[2:])
	case "client":
		err = runClient(os.Args[2:])
	case "replay":
		err = runReplay(os.Args[2:])
	case "resume":
		err = runResume(os.Args[2:])
	case "resumer":
		err = runResumer(os.Args[2:])
	case "compare":
		err = runCompare(os.Args[2:])
	case "presence":
		err = runPresence(os.Args[2:])
	case "natsd":
		err = runNATSD(os.Args[2:])
	case "floor":
		err = runFloor(os.Args[2:])
	case "floor-reader":
		err = runFloorReader(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}
