package cqrs

import (
	"context"
	"log/slog"
	"time"
)

// CommandHandler handles a command C and returns its result R (often the
// id of what it created, or nothing: use struct{}).
type CommandHandler[C, R any] func(ctx context.Context, cmd C) (R, error)

// QueryHandler answers a query Q from a read model.
type QueryHandler[Q, R any] func(ctx context.Context, q Q) (R, error)

// Logged wraps a command or query handler so that each call is logged
// with its name, duration and error.
func Logged[In, Out any](log *slog.Logger, name string, h func(context.Context, In) (Out, error)) func(context.Context, In) (Out, error) {
	return func(ctx context.Context, in In) (Out, error) {
		start := time.Now()
		out, err := h(ctx, in)
		if err != nil {
			log.WarnContext(ctx, name+" failed", slog.Duration("duration", time.Since(start)), slog.Any("error", err))
		} else {
			log.DebugContext(ctx, name, slog.Duration("duration", time.Since(start)))
		}
		return out, err
	}
}
