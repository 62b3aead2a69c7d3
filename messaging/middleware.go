package messaging

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Recovery turns a panic of the handler into a *PanicError: on a consumer
// with a delivery limit a failure like any other, redelivered and then
// dead-lettered; on a consumer without one (see [Unlimited]) a poison
// message, dead-lettered at once. Place it inside logging and metrics so
// that they count the panic. Consumers and responders also recover outside
// all middleware, so a panic never stops the process.
func Recovery() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) (err error) {
			defer func() {
				if v := recover(); v != nil {
					err = &PanicError{Value: v, Stack: debug.Stack()}
				}
			}()
			return next(ctx, d)
		}
	}
}

// Logging logs every delivery's outcome, as a service logs every request:
// success at Info, a failure that will be retried at Warn, a failure that
// dead-letters the message (see [Delivery.GivesUp]) at Error. Each record
// names the consumer, message id, type, subject, attempt and duration;
// with a tracing slog handler it also carries the trace id of ctx.
func Logging(log *slog.Logger) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) error {
			start := time.Now()
			err := next(ctx, d)
			attrs := []slog.Attr{
				slog.String("consumer", d.Consumer),
				slog.String("id", d.ID),
				slog.String("type", d.Type),
				slog.String("subject", d.Subject),
				slog.Uint64("attempt", d.NumDelivered),
				slog.Duration("duration", time.Since(start)),
			}
			switch {
			case err == nil:
				log.LogAttrs(ctx, slog.LevelInfo, "messaging: handled", attrs...)
			case d.GivesUp(err):
				log.LogAttrs(ctx, slog.LevelError, "messaging: handler failed, giving up", append(attrs, slog.Any("err", err))...)
			default:
				log.LogAttrs(ctx, slog.LevelWarn, "messaging: handler failed, will retry", append(attrs, slog.Any("err", err))...)
			}
			return err
		}
	}
}

// Tracing starts a consumer span for each delivery, a child of the
// producer's trace context (which the consumer has already put into ctx),
// and records the handler's error on it.
func Tracing(tp trace.TracerProvider) Middleware {
	tracer := tp.Tracer("github.com/trellis-go/trellis/messaging")
	return func(next Handler) Handler {
		return func(ctx context.Context, d *Delivery) error {
			attrs := []attribute.KeyValue{
				attribute.String("messaging.system", "nats"),
				attribute.String("messaging.operation.type", "process"),
				attribute.String("messaging.destination.name", d.Subject),
				attribute.String("messaging.message.id", d.ID),
				attribute.String("messaging.consumer.group.name", d.Consumer),
				attribute.String("trellis.message.type", d.Type),
			}
			if d.CorrelationID != "" {
				attrs = append(attrs, attribute.String("messaging.message.conversation_id", d.CorrelationID))
			}
			if d.Stream != "" {
				attrs = append(attrs,
					attribute.String("trellis.stream", d.Stream),
					attribute.String("trellis.stream.sequence", strconv.FormatUint(d.StreamSequence, 10)),
					attribute.Int64("messaging.message.delivery_count", int64(d.NumDelivered)))
			}
			ctx, span := tracer.Start(ctx, "process "+d.Subject,
				trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
			defer span.End()
			err := next(ctx, d)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			return err
		}
	}
}

func isPermanent(err error) bool { return err != nil && errors.Is(err, ErrPermanent) }
