package resilience

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// HTTP defaults.
const (
	// DefaultMaxReplayBody is the largest request body a Transport buffers
	// to send it again; a larger body without GetBody is sent once.
	DefaultMaxReplayBody = 1 << 20
	// maxFailedBody is how much of a failed response's body a Transport
	// keeps, so that a response dropped by a retry holds no connection.
	maxFailedBody = 64 << 10
)

// IdempotencyKeyHeader names the header that makes a non-idempotent
// request safe to send again: the server applies a key only once.
const IdempotencyKeyHeader = "Idempotency-Key"

// TransportConfig configures a Transport.
type TransportConfig struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Pipeline returns the policies for one destination, named
	// "scheme://host:port". It is called once per destination and the
	// pipeline kept, so breakers and budgets are per destination.
	Pipeline func(destination string) *Pipeline[*http.Response]
	// MaxReplayBody bounds the request bodies buffered for a retry or a
	// hedge; default DefaultMaxReplayBody.
	MaxReplayBody int64
}

// Transport is an http.RoundTripper that sends each request through the
// resilience pipeline of its destination.
//
// Only requests that are safe to repeat are retried or hedged: those with
// an idempotent method (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or an
// Idempotency-Key header. Others get every other policy of the pipeline
// (breaker, bulkhead, timeouts...) but a single attempt. Request bodies are
// replayed through GetBody, or buffered up to MaxReplayBody. A failed
// response (5xx or 429) is read into memory, up to 64 KiB, and its
// connection released, so responses dropped by a retry leak nothing.
type Transport struct {
	base          http.RoundTripper
	newPipeline   func(string) *Pipeline[*http.Response]
	maxReplayBody int64
	pipelines     sync.Map // destination -> *Pipeline[*http.Response]
}

// NewTransport returns a Transport configured by cfg.
func NewTransport(cfg TransportConfig) *Transport {
	t := &Transport{base: cfg.Base, newPipeline: cfg.Pipeline, maxReplayBody: cfg.MaxReplayBody}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	if t.maxReplayBody <= 0 {
		t.maxReplayBody = DefaultMaxReplayBody
	}
	if t.newPipeline == nil {
		t.newPipeline = func(string) *Pipeline[*http.Response] { return NewPipeline[*http.Response]() }
	}
	return t
}

// Pipeline returns the pipeline of destination ("scheme://host:port"),
// creating it on first use.
func (t *Transport) Pipeline(destination string) *Pipeline[*http.Response] {
	if p, ok := t.pipelines.Load(destination); ok {
		return p.(*Pipeline[*http.Response])
	}
	p, _ := t.pipelines.LoadOrStore(destination, t.newPipeline(destination))
	return p.(*Pipeline[*http.Response])
}

// RoundTrip sends req through its destination's pipeline.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	p := t.Pipeline(req.URL.Scheme + "://" + req.URL.Host)
	ctx := req.Context()
	repeatable := Repeatable(req)

	getBody := req.GetBody
	if req.Body == nil || req.Body == http.NoBody {
		getBody = nil
	} else if getBody == nil && repeatable {
		buffered, whole, err := bufferBody(req.Body, t.maxReplayBody)
		if err != nil {
			_ = req.Body.Close()
			return nil, fmt.Errorf("resilience: read request body: %w", err)
		}
		if whole {
			_ = req.Body.Close()
			getBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buffered)), nil }
		} else {
			// Too large to keep: send it once, as read so far plus the rest.
			req = req.Clone(ctx)
			req.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(buffered), req.Body), req.Body}
			repeatable = false
		}
	}
	if !repeatable || (req.Body != nil && req.Body != http.NoBody && getBody == nil) {
		ctx = SingleAttempt(ctx)
	}

	var sent atomic.Bool
	resp, err := p.Execute(ctx, func(ctx context.Context) (*http.Response, error) {
		// A shallow copy: the transports below must not change the
		// request either (RoundTripper's contract), so the attempts may
		// share its header map and URL.
		out := req.WithContext(ctx)
		if getBody != nil {
			body, err := getBody()
			if err != nil {
				return nil, fmt.Errorf("resilience: replay request body: %w", err)
			}
			out.Body = body
		} else if sent.Swap(true) && out.Body != nil && out.Body != http.NoBody {
			return nil, errors.New("resilience: request body cannot be sent twice")
		}
		sent.Store(true)
		resp, err := t.base.RoundTrip(out)
		if err == nil && HTTPFailure(resp, nil) {
			keepFailedBody(resp)
		}
		return resp, err
	})
	if !sent.Load() && req.Body != nil {
		// A policy refused the call before it reached the wire; the
		// RoundTripper contract still wants the body closed.
		_ = req.Body.Close()
	}
	return resp, err
}

// Repeatable reports whether req may reach the server more than once: its
// method is idempotent (RFC 9110) or it carries an Idempotency-Key.
func Repeatable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get(IdempotencyKeyHeader) != ""
}

// HTTPFailure is the Classifier for HTTP: transport errors (except the
// caller's cancellation), 5xx responses and 429 Too Many Requests fail.
func HTTPFailure(resp *http.Response, err error) bool {
	if err != nil {
		return DefaultIsFailure(err)
	}
	return resp != nil && (resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests)
}

// HTTPRetryAfter reads the Retry-After header (seconds or an HTTP date) of
// a 429 or 503 response, for RetryConfig.RetryAfter.
func HTTPRetryAfter(resp *http.Response, err error) (time.Duration, bool) {
	if err != nil || resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	return ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
}

// ParseRetryAfter parses a Retry-After value (RFC 9110, section 10.2.3):
// delay-seconds (digits only, no sign) or an HTTP-date relative to now, a
// date in the past meaning no wait. A delay too long for a time.Duration
// (about 292 years) is the longest one, never a wrapped-around value:
// callers compare it with the longest wait they accept.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if isDigits(v) {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil || s > maxRetryAfterSeconds {
			return time.Duration(math.MaxInt64), true // valid, and longer than anyone waits
		}
		return time.Duration(s) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// maxRetryAfterSeconds is the longest delay-seconds a time.Duration holds.
const maxRetryAfterSeconds = uint64(math.MaxInt64 / int64(time.Second))

// isDigits reports whether v is one or more ASCII digits.
func isDigits(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return v != ""
}

// bufferBody reads up to limit bytes of body. whole reports whether that
// was all of it.
func bufferBody(body io.Reader, limit int64) (data []byte, whole bool, err error) {
	data, err = io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, false, err
	}
	if int64(len(data)) > limit {
		return data, false, nil
	}
	return data, true, nil
}

// keepFailedBody replaces resp.Body with an in-memory copy of its first
// 64 KiB and releases the connection.
func keepFailedBody(resp *http.Response) {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxFailedBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxFailedBody))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(data))
}
