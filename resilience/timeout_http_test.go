package resilience_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/resilience"
)

// timeoutHTTPServer serves a body larger than any transport buffer, so
// reading it needs the request's context to be live.
func timeoutHTTPServer(t *testing.T) *httptest.Server {
	t.Helper()
	body := strings.Repeat("x", 4<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// timeoutGet returns a call that GETs url and reports the context it used.
func timeoutGet(url string, used chan<- context.Context) resilience.Func[*http.Response] {
	return func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		used <- ctx
		return http.DefaultTransport.RoundTrip(req)
	}
}

func timeoutReadBody(t *testing.T, resp *http.Response, ctx context.Context) {
	t.Helper()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || n != 4<<20 {
		t.Fatalf("read %d bytes, err %v; want the whole body", n, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the request's context ended before the body was closed: %v", ctx.Err())
	}
	if err := resp.Body.Close(); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() != context.Canceled {
		t.Fatalf("the request's context err %v after Close, want context.Canceled", ctx.Err())
	}
}

func TestTimeoutKeepsHTTPBodyReadable(t *testing.T) {
	srv := timeoutHTTPServer(t)
	used := make(chan context.Context, 1)
	resp, err := resilience.MustTimeout(resilience.TimeoutConfig[*http.Response]{Timeout: time.Minute}).Execute(context.Background(), timeoutGet(srv.URL, used))
	if err != nil {
		t.Fatal(err)
	}
	timeoutReadBody(t, resp, <-used)
}

func TestHedgeKeepsHTTPBodyReadable(t *testing.T) {
	srv := timeoutHTTPServer(t)
	used := make(chan context.Context, 2)
	h := resilience.MustHedge(resilience.HedgeConfig[*http.Response]{Delay: time.Minute})
	resp, err := h.Execute(context.Background(), timeoutGet(srv.URL, used))
	if err != nil {
		t.Fatal(err)
	}
	timeoutReadBody(t, resp, <-used)
}

func TestTimeoutHoldOnlyOnSuccess(t *testing.T) {
	var held []string
	var release func()
	to := resilience.MustTimeout(resilience.TimeoutConfig[string]{
		Timeout: time.Minute,
		Hold:    func(res string, rel func()) string { held = append(held, res); release = rel; return res },
	})
	var ctxs []context.Context
	_, _ = to.Execute(context.Background(), func(ctx context.Context) (string, error) {
		ctxs = append(ctxs, ctx)
		return "failed", errRetryBackend
	})
	_, _ = to.Execute(context.Background(), func(ctx context.Context) (string, error) {
		ctxs = append(ctxs, ctx)
		return "ok", nil
	})
	if len(held) != 1 || held[0] != "ok" {
		t.Fatalf("held %v, want only the success", held)
	}
	if ctxs[0].Err() != context.Canceled || ctxs[1].Err() != nil {
		t.Fatalf("context errs %v, %v; want the failed call's ended and the held one live", ctxs[0].Err(), ctxs[1].Err())
	}
	release()
	if ctxs[1].Err() != context.Canceled {
		t.Fatalf("held context err %v after release", ctxs[1].Err())
	}
}

func TestHoldHTTPBodyWithoutBody(t *testing.T) {
	released := 0
	resp := resilience.HoldHTTPBody(&http.Response{Body: http.NoBody}, func() { released++ })
	if resp.Body != http.NoBody || released != 1 {
		t.Fatalf("body %T, released %d; want NoBody untouched and an immediate release", resp.Body, released)
	}
	if resilience.HoldHTTPBody(nil, func() { released++ }) != nil || released != 2 {
		t.Fatal("a nil response was not passed through with a release")
	}
}

type timeoutRWBody struct {
	io.Reader
	written strings.Builder
}

func (b *timeoutRWBody) Write(p []byte) (int, error) { return b.written.Write(p) }
func (b *timeoutRWBody) Close() error                { return nil }

func TestHoldHTTPBodyKeepsWriter(t *testing.T) {
	inner := &timeoutRWBody{Reader: strings.NewReader("")}
	released := 0
	resp := resilience.HoldHTTPBody(&http.Response{StatusCode: http.StatusSwitchingProtocols, Body: inner}, func() { released++ })
	w, ok := resp.Body.(io.Writer)
	if !ok {
		t.Fatal("a protocol switch body lost its Write")
	}
	_, _ = w.Write([]byte("ping"))
	_ = resp.Body.Close()
	_ = resp.Body.Close()
	if inner.written.String() != "ping" || released != 1 {
		t.Fatalf("written %q, released %d times", inner.written.String(), released)
	}
}
