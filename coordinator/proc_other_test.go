//go:build !linux

package coordinator

import "time"

func processCPU() time.Duration { return 0 }

func peakRSS() int64 { return 0 }

func anonRSS() int64 { return 0 }
