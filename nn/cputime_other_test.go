//go:build !linux

package nn

import "testing"

// threadCPU reports nothing where the thread's CPU time is not at hand.
func threadCPU(*testing.B) func() { return func() {} }

// processCPU reports nothing where the process's CPU time is not at hand.
func processCPU(*testing.B) func() { return func() {} }
