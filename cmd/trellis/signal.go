package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// signalReceived is the cause of the context main cancels on a signal,
// so that a command running another program passes the same signal on.
type signalReceived struct{ os.Signal }

func (s signalReceived) Error() string { return s.Signal.String() + " signal received" }

// notifyContext is signal.NotifyContext, whose context's cause is a
// signalReceived that tells which signal arrived. Signals that arrive
// after the first stay diverted until stop.
func notifyContext(parent context.Context, sigs ...os.Signal) (ctx context.Context, stop context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		select {
		case s := <-ch:
			cancel(signalReceived{s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(context.Canceled)
	}
}

// signalOf is the signal that ended ctx, or SIGTERM when something else
// did (a test, a parent context).
func signalOf(ctx context.Context) os.Signal {
	var s signalReceived
	if errors.As(context.Cause(ctx), &s) {
		return s.Signal
	}
	return syscall.SIGTERM
}
