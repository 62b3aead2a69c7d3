package messaging

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Dead-letter defaults.
const (
	// DefaultDeadLetterStream is the stream EnsureDeadLetterStream creates.
	DefaultDeadLetterStream = "DEADLETTER"
	// DefaultDeadLetterPrefix starts the subject of a dead letter:
	// "deadletter.<stream>.<consumer>".
	DefaultDeadLetterPrefix = "deadletter"
)

// StreamConfig describes a stream for EnsureStream.
type StreamConfig struct {
	// Name of the stream, e.g. "ORDERS". Required.
	Name string
	// Subjects the stream stores, e.g. "order.>". Required.
	Subjects []string
	// MaxAge discards messages older than this; 0 keeps them.
	MaxAge time.Duration
	// Duplicates is the de-duplication window: a message whose id was seen
	// within it is acknowledged and not stored again. 0 means the server's
	// default, two minutes. It must cover the longest time an outbox relay
	// can be down between publishing and recording that it did.
	Duplicates time.Duration
	// Replicas is the number of copies in a cluster; 0 means 1.
	Replicas int
	// DenyAtomicPublish turns off atomic batch publishing, which the outbox
	// relay uses to store a batch with one disk sync and all or nothing.
	DenyAtomicPublish bool
}

// EnsureStream creates the stream, or updates it to cfg if it exists, and
// returns it. Streams use file storage, keep messages until MaxAge (limits
// retention) and, unless DenyAtomicPublish, allow atomic batch publishing.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" || len(cfg.Subjects) == 0 {
		return nil, fmt.Errorf("%w: a stream needs a name and subjects", ErrInvalidConfig)
	}
	replicas := cfg.Replicas
	if replicas <= 0 {
		replicas = 1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:               cfg.Name,
		Subjects:           cfg.Subjects,
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		MaxAge:             cfg.MaxAge,
		Duplicates:         cfg.Duplicates,
		Replicas:           replicas,
		AllowAtomicPublish: !cfg.DenyAtomicPublish,
	})
	if err != nil {
		return nil, fmt.Errorf("messaging: ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// EnsureDeadLetterStream creates (or updates) the stream DEADLETTER on
// "deadletter.>", where consumers with the default DeadLetterSubject put
// the messages they give up on. Dead letters are kept until an operator
// removes them.
func EnsureDeadLetterStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	return EnsureStream(ctx, js, StreamConfig{
		Name:     DefaultDeadLetterStream,
		Subjects: []string{DefaultDeadLetterPrefix + ".>"},
	})
}
