//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package remote

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockStateDir takes an exclusive lock on dir (flock on dir/lock) until
// release, or until the process ends, however it ends. If another process
// (or another open of the file) holds it, it returns an error wrapping
// ErrStateDirInUse at once.
func lockStateDir(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s: give each client its own state directory", ErrStateDirInUse, dir)
		}
		return nil, fmt.Errorf("client: locking the state directory %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
