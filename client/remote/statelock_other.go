//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package remote

// lockStateDir does nothing where flock is not available: the state
// directory is not guarded against a second process.
func lockStateDir(string) (release func(), err error) { return func() {}, nil }
