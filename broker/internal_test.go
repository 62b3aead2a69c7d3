package broker

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestReconnectDelayStaysWithinBounds(t *testing.T) {
	base, maxWait := 100*time.Millisecond, 5*time.Second
	bound := func(attempt int) time.Duration {
		// min(max, base·2^(attempt-1)), computed the slow way.
		d := base
		for i := 1; i < attempt && d < maxWait; i++ {
			d *= 2
		}
		return min(d, maxWait)
	}

	// The extremes of the random source reach exactly 0 and the bound.
	var asked int64
	highest := newBackoff(base, maxWait)
	highest.randN = func(n int64) int64 { asked = n; return n - 1 }
	lowest := newBackoff(base, maxWait)
	lowest.randN = func(int64) int64 { return 0 }
	wantCeilings := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i, want := range wantCeilings {
		attempt := i + 1
		if got := highest.delay(attempt); got != want*time.Millisecond {
			t.Errorf("attempt %d: highest delay %v, want %v", attempt, got, want*time.Millisecond)
		}
		if asked != int64(want*time.Millisecond)+1 {
			t.Errorf("attempt %d: asked the source for [0, %d), want [0, %d]", attempt, asked, want*time.Millisecond)
		}
		if got := lowest.delay(attempt); got != 0 {
			t.Errorf("attempt %d: lowest delay %v, want 0", attempt, got)
		}
	}

	// A real (seeded) source, over many attempts including absurd ones.
	src := rand.New(rand.NewPCG(1, 2))
	bo := newBackoff(base, maxWait)
	bo.randN = src.Int64N
	attempts := []int{0, 1, 2, 3, 10, 62, 63, 64, 1000, math.MaxInt}
	for a := 1; a <= 200; a++ {
		attempts = append(attempts, a)
	}
	var spread [2]bool // saw a delay in the lower and in the upper half
	for _, a := range attempts {
		for range 50 {
			d := bo.delay(a)
			ceiling := bound(max(a, 1))
			if a > 200 {
				ceiling = maxWait
			}
			if d < 0 || d > ceiling {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", a, d, ceiling)
			}
			if a == 20 {
				spread[min(1, int(2*d/maxWait))] = true
			}
		}
	}
	if !spread[0] || !spread[1] {
		t.Errorf("delays are not spread over [0, max]: %v", spread)
	}
}

func TestNewBackoffDefaults(t *testing.T) {
	bo := newBackoff(0, 0)
	if bo.base != DefaultReconnectWait || bo.max != DefaultMaxReconnectWait {
		t.Errorf("defaults %v..%v", bo.base, bo.max)
	}
	bo = newBackoff(time.Second, time.Millisecond)
	if bo.max != time.Second {
		t.Errorf("max below base: max %v, want %v", bo.max, time.Second)
	}
	if c := bo.ceiling(math.MaxInt); c != time.Second {
		t.Errorf("ceiling %v", c)
	}
}

func TestOpenConfiguresReconnection(t *testing.T) {
	srv, err := StartServer(t.Context(), ServerConfig{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	b, err := Open(t.Context(), Config{URL: srv.ClientURL(), Name: "svc"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	o := b.Conn().Opts
	if o.MaxReconnect != -1 || !o.RetryOnFailedConnect || o.CustomReconnectDelayCB == nil || o.Name != "svc" {
		t.Errorf("options: MaxReconnect %d, RetryOnFailedConnect %v, custom delay %v, name %q",
			o.MaxReconnect, o.RetryOnFailedConnect, o.CustomReconnectDelayCB != nil, o.Name)
	}
	for a := 1; a < 20; a++ {
		if d := o.CustomReconnectDelayCB(a); d < 0 || d > DefaultMaxReconnectWait {
			t.Errorf("attempt %d: delay %v", a, d)
		}
	}
}

func TestEmbeddedServerSyncsEveryWrite(t *testing.T) {
	dir := t.TempDir()
	srv, err := StartServer(t.Context(), ServerConfig{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	jc := srv.ns.JetStreamConfig()
	if jc == nil {
		t.Fatal("JetStream is not enabled")
	}
	if !jc.SyncAlways {
		t.Error("JetStream SyncAlways is off")
	}
	if jc.StoreDir == "" || !strings.HasPrefix(jc.StoreDir, dir) {
		t.Errorf("JetStream store dir %q, want under %q", jc.StoreDir, dir)
	}
}
