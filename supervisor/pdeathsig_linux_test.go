//go:build linux

package supervisor_test

import (
	"fmt"
	"testing"
)

// TestChildrenDieWithKilledSupervisor kills a supervisor process with
// SIGKILL, which it cannot handle, and checks that the kernel takes its
// children down with it.
func TestChildrenDieWithKilledSupervisor(t *testing.T) {
	t.Parallel()
	cmd, adminURL, out := startSupervisorProcess(t)
	pids := waitAllReady(t, adminURL, 3)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = waitProcess(t, cmd)
	for _, pid := range pids {
		waitFor(t, fmt.Sprintf("child %d to die", pid), func() bool { return gone(pid) },
			func() string { return "supervisor output:\n" + out.String() })
	}
}
