package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// schedBatch is Linux's SCHED_BATCH policy: a thread under it does not
// preempt the running thread when it wakes.
const schedBatch = 3

// yieldToServer puts every thread of this process under SCHED_BATCH;
// threads the Go runtime starts later inherit the policy from the thread
// that starts them. A client process woken by a frame then waits for the
// server's thread to give up its CPU instead of preempting it halfway
// through a fan-out, so the server's CPU per delivery and latency measure
// the server rather than the load generator's wake-ups; both servers of a
// comparison get the same clients.
func yieldToServer() error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return fmt.Errorf("list threads: %w", err)
	}
	param := struct{ priority int32 }{0}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if _, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, uintptr(tid), schedBatch, uintptr(unsafe.Pointer(&param))); errno != 0 {
			return fmt.Errorf("sched_setscheduler(%d, SCHED_BATCH): %w", tid, errno)
		}
	}
	return nil
}
