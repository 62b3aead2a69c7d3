package supervisor

import (
	"os/exec"
	"runtime"
)

// spawner starts child processes from one goroutine locked to its OS
// thread. On Linux a child's parent-death signal fires when the thread that
// forked it exits, not when the process does, and the Go runtime ends a
// thread when a goroutine locked to it returns. Forking from a thread that
// lives as long as the supervisor runs means no library call elsewhere in
// the program can take the children down by accident.
type spawner struct {
	reqs chan spawnRequest
	done chan struct{}
}

type spawnRequest struct {
	cmd *exec.Cmd
	err chan<- error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnRequest), done: make(chan struct{})}
	go s.loop()
	return s
}

func (s *spawner) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(s.done)
	for req := range s.reqs {
		req.err <- req.cmd.Start()
	}
}

// start starts cmd from the spawner's thread.
func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.reqs <- spawnRequest{cmd: cmd, err: errc}
	return <-errc
}

// close ends the spawner once no child started by it is alive any more.
func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}
