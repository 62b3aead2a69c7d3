package resilience_test

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
	"github.com/trellis-go/trellis/resilience"
)

// throttleRand is a random source the test sets by hand.
type throttleRand struct {
	mu sync.Mutex
	x  float64
}

func (r *throttleRand) set(x float64) { r.mu.Lock(); r.x = x; r.mu.Unlock() }
func (r *throttleRand) next() float64 { r.mu.Lock(); defer r.mu.Unlock(); return r.x }

// throttleOverloaded marks the backend's overload answers.
const throttleOverloaded = "503"

func throttleNotAccepted(res string, err error) bool { return err != nil || res == throttleOverloaded }

func newThrottleTest() (*clocktest.Clock, *throttleRand, *resilience.AdaptiveThrottle[string]) {
	clock := clocktest.New(retryTestStart)
	rnd := &throttleRand{x: 0.999999}
	th := resilience.MustAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{
		Classifier: throttleNotAccepted, Clock: clock, Rand: rnd.next,
	})
	return clock, rnd, th
}

func throttleSend(th *resilience.AdaptiveThrottle[string], answer string, n int) (sent, rejected int) {
	for range n {
		_, err := th.Execute(context.Background(), func(context.Context) (string, error) {
			sent++
			return answer, nil
		})
		if errors.Is(err, resilience.ErrThrottled) {
			rejected++
		}
	}
	return sent, rejected
}

func TestAdaptiveThrottleRejectsAtExpectedProbability(t *testing.T) {
	_, rnd, th := newThrottleTest()
	if sent, rej := throttleSend(th, "200", 10); sent != 10 || rej != 0 {
		t.Fatalf("healthy backend: %d sent, %d rejected", sent, rej)
	}
	if sent, rej := throttleSend(th, throttleOverloaded, 20); sent != 20 || rej != 0 {
		t.Fatalf("overload: %d sent, %d rejected (random near 1 never rejects)", sent, rej)
	}
	// 30 requests, 10 accepts: (30 − 2·10) / 31.
	p := th.RejectProbability()
	if want := 10.0 / 31; math.Abs(p-want) > 1e-12 {
		t.Fatalf("probability %v, want %v", p, want)
	}
	rnd.set(p - 1e-9)
	sent, rej := throttleSend(th, "200", 1)
	if sent != 0 || rej != 1 {
		t.Fatalf("random just below p: %d sent, %d rejected; want a local rejection", sent, rej)
	}
	// The rejected request counts: (31 − 20) / 32.
	p = th.RejectProbability()
	if want := 11.0 / 32; math.Abs(p-want) > 1e-12 {
		t.Fatalf("probability %v after a rejection, want %v", p, want)
	}
	rnd.set(p)
	if sent, rej := throttleSend(th, "200", 1); sent != 1 || rej != 0 {
		t.Fatalf("random at p: %d sent, %d rejected; want the call sent", sent, rej)
	}
	if req, acc := th.Counts(); req != 32 || acc != 11 {
		t.Fatalf("counts %d requests, %d accepts; want 32, 11", req, acc)
	}
}

func TestAdaptiveThrottleRejectionRate(t *testing.T) {
	clock := clocktest.New(retryTestStart)
	src := rand.New(rand.NewPCG(5, 6))
	th := resilience.MustAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{
		Classifier: throttleNotAccepted, Clock: clock, Rand: src.Float64,
	})
	// The client wants 100 calls a second; the backend serves 25 a second
	// and refuses the rest as overloaded. The throttle settles where the
	// client sends K × 25 = 50 a second, rejecting about half of the calls.
	const perSecond, capacity = 100, 25
	rejected, served := 0, 0
	const calls = 60 * perSecond * 5 // five minutes
	for i := range calls {
		_, err := th.Execute(context.Background(), func(context.Context) (string, error) {
			if served < capacity {
				served++
				return "200", nil
			}
			return throttleOverloaded, nil
		})
		if errors.Is(err, resilience.ErrThrottled) && i >= calls/2 {
			rejected++
		}
		if i%perSecond == perSecond-1 {
			clock.Advance(time.Second)
			served = 0
		}
	}
	// Measured over the last half, once the window is full.
	frac := float64(rejected) / (calls / 2)
	if frac < 0.45 || frac > 0.55 {
		t.Fatalf("rejected %.3f of the calls, want about 0.5", frac)
	}
}

func TestAdaptiveThrottleRecoversAsAcceptsReturn(t *testing.T) {
	_, _, th := newThrottleTest()
	throttleSend(th, throttleOverloaded, 100)
	p := th.RejectProbability()
	if want := 100.0 / 101; math.Abs(p-want) > 1e-12 {
		t.Fatalf("probability %v after 100 refusals, want %v", p, want)
	}
	for i := 1; i <= 100; i++ {
		if sent, _ := throttleSend(th, "200", 1); sent != 1 {
			t.Fatalf("call %d was not sent", i)
		}
		next := th.RejectProbability()
		if next >= p && next > 0 {
			t.Fatalf("probability rose from %v to %v on an accept", p, next)
		}
		p = next
	}
	// 200 requests, 100 accepts: requests = K·accepts.
	if p != 0 {
		t.Fatalf("probability %v after the backend recovered, want 0", p)
	}
}

func TestAdaptiveThrottleWindowSlides(t *testing.T) {
	clock, rnd, th := newThrottleTest()
	throttleSend(th, throttleOverloaded, 100)
	clock.Advance(time.Minute)
	throttleSend(th, throttleOverloaded, 50)
	if req, _ := th.Counts(); req != 150 {
		t.Fatalf("%d requests, want 150", req)
	}
	clock.Advance(time.Minute)
	if req, _ := th.Counts(); req != 50 {
		t.Fatalf("%d requests after the first refusals left the window, want 50", req)
	}
	clock.Advance(time.Minute)
	if p := th.RejectProbability(); p != 0 {
		t.Fatalf("probability %v with an empty window, want 0", p)
	}
	rnd.set(0)
	if sent, _ := throttleSend(th, "200", 1); sent != 1 {
		t.Fatal("a call was rejected with an empty window")
	}
}

func TestAdaptiveThrottleIgnoresCallerCancellation(t *testing.T) {
	_, _, th := newThrottleTest()
	_, _ = th.Execute(context.Background(), func(context.Context) (string, error) { return "", context.Canceled })
	if req, acc := th.Counts(); req != 0 || acc != 0 {
		t.Fatalf("counts %d, %d after a caller cancellation; want none", req, acc)
	}
}

func TestAdaptiveThrottleOnReject(t *testing.T) {
	var got []float64
	clock := clocktest.New(retryTestStart)
	th := resilience.MustAdaptiveThrottle(resilience.AdaptiveThrottleConfig[string]{
		K: 1, Clock: clock, Rand: retryConst(0),
		OnReject: func(p float64) { got = append(got, p) },
	})
	_, _ = th.Execute(context.Background(), func(context.Context) (string, error) { return "", errRetryBackend })
	_, err := th.Execute(context.Background(), func(context.Context) (string, error) { return "sent", nil })
	if err != resilience.ErrThrottled || len(got) != 1 || got[0] != 0.5 {
		t.Fatalf("err %v, OnReject %v; want ErrThrottled at 0.5", err, got)
	}
}
