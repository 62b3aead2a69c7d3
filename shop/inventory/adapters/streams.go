package adapters

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/messaging"
)

// EnsureOwnStream creates or updates the stream the service writes. If
// another service created it between the update that found no stream and
// the create, the create fails with "name already in use"; the update is
// then tried again.
func EnsureOwnStream(ctx context.Context, js jetstream.JetStream, cfg messaging.StreamConfig) error {
	_, err := messaging.EnsureStream(ctx, js, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		_, err = messaging.EnsureStream(ctx, js, cfg)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}

// EnsureForeignStream makes sure a stream another service owns exists, so
// that a consumer can be created on it before its owner first starts. An
// existing stream is left as its owner configured it, never updated; a
// missing one is created with cfg. If the owner creates it at the same
// moment, the server accepts an identical configuration twice, and with a
// different one this call finds the owner's stream.
func EnsureForeignStream(ctx context.Context, js jetstream.JetStream, cfg messaging.StreamConfig) error {
	_, err := js.Stream(ctx, cfg.Name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	if _, err := messaging.EnsureStream(ctx, js, cfg); err != nil {
		if _, again := js.Stream(ctx, cfg.Name); again == nil {
			return nil
		}
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}
