package saga_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/store"
)

// Environment of the resume benchmark's child process.
const (
	envResumeChild = "TRELLIS_SAGA_RESUME_CHILD"
	envResumeURL   = "TRELLIS_SAGA_RESUME_URL"
	envResumeOwner = "TRELLIS_SAGA_RESUME_OWNER"
	envResumeStart = "TRELLIS_SAGA_RESUME_START" // sagas to start; 0 resumes only
)

// resumeSagas is how many sagas are in flight when the process dies.
const resumeSagas = 500

// TestResumeChild is the process BenchmarkResume kills and restarts: an
// orchestrator whose sagas' first step blocks until the process dies. It
// prints "step" at the first action it runs and "all" once resumeSagas
// actions are in flight. It does nothing in a normal test run.
func TestResumeChild(t *testing.T) {
	if os.Getenv(envResumeChild) != "1" {
		t.Skip("the child process of BenchmarkResume")
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{URL: os.Getenv(envResumeURL)})
	if err != nil {
		t.Fatal(err)
	}
	o, err := saga.New(db, saga.Options{Owner: os.Getenv(envResumeOwner), Concurrency: 2 * resumeSagas})
	if err != nil {
		t.Fatal(err)
	}
	var entered atomic.Int64
	block := func(ctx context.Context, _ saga.StepContext, _ *order) error {
		switch entered.Add(1) {
		case 1:
			fmt.Println("step")
		case resumeSagas:
			fmt.Println("all")
		}
		<-ctx.Done()
		return ctx.Err()
	}
	nop := func(context.Context, saga.StepContext, *order) error { return nil }
	def := saga.Definition[order]{Name: "resume", Timeout: time.Hour, Steps: []saga.Step[order]{
		{Name: "wait", Action: block, Compensate: nop, Timeout: time.Hour},
		{Name: "done", Action: nop},
	}}
	s, err := saga.Register(o, def)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	go func() { _ = o.Run(ctx) }()
	n, _ := strconv.Atoi(os.Getenv(envResumeStart))
	for i := range n {
		if err := s.StartNow(ctx, fmt.Sprintf("r%d", i), order{}); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Println("ready")
	select {} // until killed
}

// child is a running TestResumeChild.
type child struct {
	cmd   *exec.Cmd
	lines chan string
}

func startChild(b *testing.B, url, owner string, start int) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envResumeChild+"=1", envResumeURL+"="+url, envResumeOwner+"="+owner,
		envResumeStart+"="+strconv.Itoa(start))
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l := sc.Text(); l == "step" || l == "all" || l == "ready" {
				c.lines <- l
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	b.Cleanup(c.kill)
	return c
}

// await returns when the child printed line.
func (c *child) await(b *testing.B, line string) {
	b.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				b.Fatalf("the child exited before %q", line)
			}
			if l == line {
				return
			}
		case <-timeout:
			b.Fatalf("no %q from the child within a minute", line)
		}
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	_ = c.cmd.Wait()
}

// BenchmarkResume measures how soon the sagas of a SIGKILLed process run
// again, with resumeSagas sagas in flight (each blocked in its first step,
// as real ones would be in a call to a service): from the start of the
// restarted process to its first resumed step, and to all of them.
//
//   - restart-same-identity: the process comes back with its identity (as
//     `trellis up` and a StatefulSet give it) and reclaims its sagas at once;
//   - restart-new-identity, the baseline: the process comes back as a
//     stranger (a random identity, as before identities existed) and waits
//     for the dead one's leases to expire;
//   - takeover-by-survivor: the process does not come back; another
//     replica, already running, resumes its sagas once their leases have
//     expired, at its next poll (measured from the kill).
func BenchmarkResume(b *testing.B) {
	for _, kind := range []string{"sqlite", "postgres"} {
		for _, mode := range []string{"restart-same-identity", "restart-new-identity", "takeover-by-survivor"} {
			b.Run(kind+"/"+mode, func(b *testing.B) {
				url := "sqlite:" + filepath.Join(b.TempDir(), "resume.db")
				if kind == "postgres" {
					url = pgtest.URL(b)
				}
				b.StopTimer()
				var first, all time.Duration
				for i := range b.N {
					// A process with resumeSagas sagas in flight.
					owner := "order-0"
					if mode != "restart-same-identity" {
						owner = fmt.Sprintf("stranger-%d", i)
					}
					victim := startChild(b, url, owner, resumeSagas)
					victim.await(b, "all")
					var survivor *child
					if mode == "takeover-by-survivor" {
						survivor = startChild(b, url, fmt.Sprintf("survivor-%d", i), 0)
						survivor.await(b, "ready")
					}
					b.StartTimer()
					victim.kill()
					t0 := time.Now()
					next := survivor
					if next == nil {
						as := owner
						if mode == "restart-new-identity" {
							as = fmt.Sprintf("stranger-new-%d", i)
						}
						next = startChild(b, url, as, 0)
					}
					next.await(b, "step")
					first += time.Since(t0)
					next.await(b, "all")
					all += time.Since(t0)
					b.StopTimer()
					next.kill()
					// The next round starts from an empty log.
					cleanLog(b, url)
				}
				b.ReportMetric(float64(first.Milliseconds())/float64(b.N), "ms-to-first-step")
				b.ReportMetric(float64(all.Milliseconds())/float64(b.N), fmt.Sprintf("ms-to-all-%d", resumeSagas))
			})
		}
	}
}

func cleanLog(b *testing.B, url string) {
	b.Helper()
	db, err := store.Open(context.Background(), store.Config{URL: url})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	for _, table := range []string{"trellis_saga_steps", "trellis_sagas"} {
		if _, err := db.Writer().ExecContext(context.Background(), "DELETE FROM "+table); err != nil && !strings.Contains(err.Error(), "no such table") {
			b.Fatal(err)
		}
	}
}
