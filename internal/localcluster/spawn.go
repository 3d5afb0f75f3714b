package localcluster

import (
	"os/exec"
	"runtime"
)

// spawner starts processes from one goroutine locked to its OS thread. On
// Linux a child's parent-death signal fires when the thread that started
// it ends, not the process; Go may end a thread, so every child is started
// from this one, which lives until close.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func startSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for r := range s.reqs {
			r.err <- r.cmd.Start()
		}
	}()
	return s
}

// start starts cmd on the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	err := make(chan error, 1)
	s.reqs <- spawnReq{cmd, err}
	return <-err
}

// close ends the spawner, once every child it started has exited.
func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}
