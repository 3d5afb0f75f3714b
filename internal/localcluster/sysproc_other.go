//go:build !linux

package localcluster

import (
	"os"
	"syscall"
)

// sysProcAttr is nil outside Linux: there is no parent-death signal, and
// children are killed on every return path of Run instead.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// terminate asks p to stop gracefully, or kills it where signals other
// than kill are not supported.
func terminate(p *os.Process) error {
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return p.Kill()
	}
	return nil
}
