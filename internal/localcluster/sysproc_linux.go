package localcluster

import (
	"os"
	"syscall"
)

// sysProcAttr puts a child in its own process group, so that a terminal's
// Ctrl-C reaches only fedzip local, which then stops the children in
// order; and asks the kernel to kill the child when the thread that
// started it ends (the spawner's locked thread lives as long as Run, and
// the process), so that no child outlives a killed fedzip local.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// terminate asks p to stop gracefully.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
