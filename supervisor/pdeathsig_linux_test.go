//go:build linux

package supervisor_test

import (
	"fmt"
	"testing"

	"github.com/trellis-go/trellis/internal/waittest"
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
		waittest.Eventually(t, testTimeout, fmt.Sprintf("child %d to die", pid), func() error {
			if !gone(pid) {
				return fmt.Errorf("alive; supervisor output:\n%s", out.String())
			}
			return nil
		})
	}
}
