package messaging

import (
	"context"
	"errors"
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
// It is the call of the stream's owner; a service that only reads another
// service's stream calls EnsureForeignStream instead.
//
// Creating or updating is two requests: an update that finds no stream,
// then a create. If another process creates the stream in between with a
// different configuration (a consumer ensuring a stream it reads), the
// create fails with "name already in use"; the update is then tried once
// more, and applies cfg to the stream that now exists.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	jcfg, err := cfg.jetStream()
	if err != nil {
		return nil, err
	}
	s, err := js.CreateOrUpdateStream(ctx, jcfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.CreateOrUpdateStream(ctx, jcfg)
	}
	if err != nil {
		return nil, fmt.Errorf("messaging: ensure stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// EnsureForeignStream makes sure a stream another service owns exists, so
// that a consumer can be created on it before its owner first starts. A
// missing stream is created with cfg (and the defaults of EnsureStream);
// an existing one is left as its owner configured it, never updated. If
// the owner or another consumer creates it at the same moment, "name
// already in use" means they were first, which is as good.
func EnsureForeignStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	jcfg, err := cfg.jetStream()
	if err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("messaging: ensure foreign stream %s: %w", cfg.Name, err)
	}
	s, err = js.CreateStream(ctx, jcfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		s, err = js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("messaging: ensure foreign stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// jetStream returns the server's configuration of the stream cfg
// describes.
func (cfg StreamConfig) jetStream() (jetstream.StreamConfig, error) {
	if cfg.Name == "" || len(cfg.Subjects) == 0 {
		return jetstream.StreamConfig{}, fmt.Errorf("%w: a stream needs a name and subjects", ErrInvalidConfig)
	}
	return jetstream.StreamConfig{
		Name:               cfg.Name,
		Subjects:           cfg.Subjects,
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		MaxAge:             cfg.MaxAge,
		Duplicates:         cfg.Duplicates,
		Replicas:           max(cfg.Replicas, 1),
		AllowAtomicPublish: !cfg.DenyAtomicPublish,
	}, nil
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
