package supervisor

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/trellis-go/trellis/internal/backoff"
)

// TestBackoffFullJitter checks that every delay lies in [0, ceiling) and
// that the random number is applied linearly, using an injected source.
func TestBackoffFullJitter(t *testing.T) {
	spec := &Spec{
		Restart:   RestartDefaults{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second},
		Processes: []ProcessSpec{{Name: "svc", Command: []string{"svc"}, Health: HealthNone}},
	}
	var next float64
	calls := 0
	s, err := New(spec, Options{
		Rand:   func() float64 { calls++; return next },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 12 {
		ceil := backoff.Ceiling(100*time.Millisecond, 2*time.Second, n)
		for _, r := range []float64{0, 0.25, 0.5, 0.999999, rng.Float64(), rng.Float64()} {
			next = r
			got := s.backoff(n)
			if got < 0 || got >= ceil {
				t.Fatalf("n=%d r=%v: delay %s outside [0, %s)", n, r, got, ceil)
			}
			if want := time.Duration(r * float64(ceil)); got != want {
				t.Errorf("n=%d r=%v: delay %s, want %s", n, r, got, want)
			}
		}
	}
	if calls != 12*6 {
		t.Errorf("Rand called %d times, want %d", calls, 12*6)
	}
	if got := s.backoff(20); got != time.Duration(next*float64(2*time.Second)) {
		t.Errorf("delay not capped at max_backoff: %s", got)
	}
}
