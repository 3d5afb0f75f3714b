package coordinator

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
	"time"
)

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSS is this process's peak resident set size in bytes (VmHWM), or 0
// if unknown. It counts the pages of bolt's memory-mapped log file that
// the process touched, as well as its heap.
func peakRSS() int64 { return procStatus("VmHWM:") }

// anonRSS is the resident memory not backed by a file (RssAnon): the Go
// heap, stacks and runtime, without bolt's mapped log.
func anonRSS() int64 { return procStatus("RssAnon:") }

// procStatus reads one kB field of /proc/self/status in bytes, 0 if
// unknown.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte(field)); ok {
			f := bytes.Fields(rest)
			if len(f) == 2 && string(f[1]) == "kB" {
				kb, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
