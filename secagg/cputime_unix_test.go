//go:build unix

package secagg

import "syscall"

// cpuTime is the process's user+system CPU time in nanoseconds, so that
// benchmarks can report CPU per operation beside wall time on a shared,
// loaded machine.
func cpuTime() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
