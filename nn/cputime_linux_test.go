package nn

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// threadCPU pins the benchmark to its OS thread and returns a function that
// reports the thread's CPU time per iteration as "cpu-ms/op": on a machine
// shared with other work, wall time per op measures the neighbours too.
func threadCPU(b *testing.B) func() {
	runtime.LockOSThread()
	start := threadTime()
	return func() {
		used := threadTime() - start
		runtime.UnlockOSThread()
		b.ReportMetric(float64(used)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	}
}

func threadTime() time.Duration { return rusage(1 /* RUSAGE_THREAD */) }

// processCPU returns a function that reports the process's CPU time per
// iteration, all threads together, as "cpu-s/op".
func processCPU(b *testing.B) func() {
	start := rusage(0 /* RUSAGE_SELF */)
	return func() {
		used := rusage(0) - start
		b.ReportMetric(used.Seconds()/float64(b.N), "cpu-s/op")
	}
}

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
