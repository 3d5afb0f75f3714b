package workdir

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrNotPrivate is a folder fedzip will not keep keys, secrets or state
// in: it belongs to another user, or other users can read or write what it
// holds. Whatever is in it may have been read, or planted.
var ErrNotPrivate = errors.New("workdir: folder not private")

// Private checks that dir, an existing folder, is this user's alone, as a
// folder that holds private keys, secrets and state must be. It refuses
// (ErrNotPrivate) a folder another user owns, and one with permissions for
// the group or others that holds anything: chmod 700 it, or remove it. An
// empty folder of this user's is made mode 0700, as if fedzip had made
// it: nothing in it can have been read or planted. On systems without
// Unix permissions it checks only that dir is a folder.
func Private(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("workdir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a folder", ErrNotPrivate, dir)
	}
	if uid, mine := owner(fi); !mine {
		return fmt.Errorf("%w: %s belongs to another user (uid %d): use a folder of your own", ErrNotPrivate, dir, uid)
	}
	perm := fi.Mode().Perm()
	if !unixPerms || perm&0o077 == 0 {
		return nil
	}
	// Empty before and after the chmod: nothing was planted meanwhile.
	if empty(dir) {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("workdir: %w", err)
		}
		if empty(dir) {
			return nil
		}
	}
	what := "read"
	if perm&0o022 != 0 {
		what = "write into"
	}
	return fmt.Errorf("%w: %s has mode %#o: other users can %s it, and it holds files that must be private; chmod 700 it if they are yours, or remove it", ErrNotPrivate, dir, perm, what)
}

// empty reports whether dir holds nothing (false if it cannot be read).
func empty(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF)
}
