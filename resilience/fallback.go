package resilience

import "context"

// FallbackFunc computes a replacement outcome from a failed one: a cached
// value, a default, a degraded answer, or the error rewritten.
type FallbackFunc[R any] func(ctx context.Context, result R, err error) (R, error)

// FallbackConfig configures a Fallback.
type FallbackConfig[R any] struct {
	// Handler computes the replacement outcome; it must not be nil.
	Handler FallbackFunc[R]
	// Classifier decides which outcomes need the Handler. Default
	// DefaultIsFailure, which counts rejections by the other policies
	// (an open breaker, a full bulkhead, a timeout) as failures too, and
	// the caller's own cancellation as none.
	Classifier Classifier[R]
}

// Fallback replaces failed outcomes: when the Classifier calls fn's
// outcome a failure, Execute returns what the Handler makes of it instead.
// Successes pass through untouched. As the outermost policy of a pipeline
// it also sees the other policies' rejections. A Fallback is safe for
// concurrent use if its Handler is.
type Fallback[R any] struct {
	handler  FallbackFunc[R]
	classify Classifier[R]
}

// NewFallback returns a Fallback configured by cfg, or a *ConfigError if
// cfg.Handler is nil.
func NewFallback[R any](cfg FallbackConfig[R]) (*Fallback[R], error) {
	if cfg.Handler == nil {
		return refuse[*Fallback[R]]("fallback", "Handler", "nil", "a function")
	}
	return &Fallback[R]{handler: cfg.Handler, classify: cfg.Classifier}, nil
}

// MustFallback is NewFallback for a configuration written in code: it
// panics with the *ConfigError instead of returning it.
func MustFallback[R any](cfg FallbackConfig[R]) *Fallback[R] {
	return must(NewFallback(cfg))
}

// Execute calls fn and, when its outcome is a failure, returns the
// Handler's outcome instead. The Handler gets fn's ctx, which may have
// ended (a deadline passing is a common reason to fall back).
func (f *Fallback[R]) Execute(ctx context.Context, fn Func[R]) (R, error) {
	return f.executeNext(ctx, next[R]{fn: fn})
}

func (f *Fallback[R]) executeNext(ctx context.Context, n next[R]) (R, error) {
	res, err := n.call(ctx)
	if !f.classify.IsFailure(res, err) {
		return res, err
	}
	return f.handler(ctx, res, err)
}
