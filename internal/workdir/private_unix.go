//go:build unix

package workdir

import (
	"io/fs"
	"os"
	"syscall"
)

const unixPerms = true

// owner returns the owner of fi and whether it is this process's user.
func owner(fi fs.FileInfo) (uid int, mine bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, true
	}
	return int(st.Uid), int(st.Uid) == os.Geteuid()
}
