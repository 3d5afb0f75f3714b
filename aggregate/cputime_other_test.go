//go:build !unix

package aggregate

import "time"

// cpuTime reports no CPU time where getrusage is missing.
func cpuTime() (time.Duration, bool) { return 0, false }
