package resilience_test

import (
	"context"
	"errors"
	"testing"

	"github.com/trellis-go/trellis/resilience"
)

func TestFallbackOnlyOnFailure(t *testing.T) {
	type seen struct {
		res string
		err error
	}
	var handled []seen
	f := resilience.MustFallback(resilience.FallbackConfig[string]{Handler: func(_ context.Context, res string, err error) (string, error) {
		handled = append(handled, seen{res, err})
		return "fallback", nil
	}})
	ctx := context.Background()

	res, err := f.Execute(ctx, func(context.Context) (string, error) { return "fresh", nil })
	if res != "fresh" || err != nil || len(handled) != 0 {
		t.Fatalf("success: got %q, %v, handler calls %d", res, err, len(handled))
	}

	res, err = f.Execute(ctx, func(context.Context) (string, error) { return "partial", errRetryBackend })
	if res != "fallback" || err != nil {
		t.Fatalf("failure: got %q, %v; want the fallback", res, err)
	}
	if len(handled) != 1 || handled[0].res != "partial" || handled[0].err != errRetryBackend {
		t.Fatalf("handler saw %+v, want the failed outcome", handled)
	}

	res, err = f.Execute(ctx, func(context.Context) (string, error) { return "", context.Canceled })
	if !errors.Is(err, context.Canceled) || res != "" || len(handled) != 1 {
		t.Fatalf("caller cancel: got %q, %v, handler calls %d; want the cancellation untouched", res, err, len(handled))
	}
}

func TestFallbackClassifier(t *testing.T) {
	f := resilience.MustFallback(resilience.FallbackConfig[retryResponse]{
		Handler: func(_ context.Context, res retryResponse, _ error) (retryResponse, error) {
			return retryResponse{status: 200}, nil
		},
		Classifier: retryStatusFailure,
	})
	for _, tc := range []struct{ in, want int }{{200, 200}, {404, 404}, {503, 200}, {429, 200}} {
		res, err := f.Execute(context.Background(), func(context.Context) (retryResponse, error) {
			return retryResponse{status: tc.in}, nil
		})
		if err != nil || res.status != tc.want {
			t.Errorf("status %d: got %d, %v; want %d", tc.in, res.status, err, tc.want)
		}
	}
}

func TestFallbackCanRewriteTheError(t *testing.T) {
	errDegraded := errors.New("degraded")
	f := resilience.MustFallback(resilience.FallbackConfig[int]{Handler: func(_ context.Context, _ int, err error) (int, error) {
		return 0, errors.Join(errDegraded, err)
	}})
	_, err := f.Execute(context.Background(), func(context.Context) (int, error) { return 0, errRetryBackend })
	if !errors.Is(err, errDegraded) || !errors.Is(err, errRetryBackend) {
		t.Fatalf("err %v, want both errors", err)
	}
}

func TestFallbackSeesRejections(t *testing.T) {
	bh := resilience.MustBulkhead[string](resilience.BulkheadConfig{MaxConcurrent: 1})
	var reason error
	p := resilience.NewPipeline(
		resilience.MustFallback(resilience.FallbackConfig[string]{Handler: func(_ context.Context, _ string, err error) (string, error) {
			reason = err
			return "served from cache", nil
		}}),
		bh,
	)
	g := newBulkheadGate()
	done := make(chan struct{})
	go func() { defer close(done); _, _ = bh.Execute(context.Background(), g.call) }()
	retryRecv(t, "the slot to be taken", g.started)
	res, err := p.Execute(context.Background(), g.call)
	close(g.release)
	retryRecv(t, "the slot holder", done)
	if res != "served from cache" || err != nil || !errors.Is(reason, resilience.ErrBulkheadFull) {
		t.Fatalf("got %q, %v (fallback saw %v); want the fallback for ErrBulkheadFull", res, err, reason)
	}
}
