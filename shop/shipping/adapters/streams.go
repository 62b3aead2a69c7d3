package adapters

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trellis-go/trellis/messaging"
)

// DuplicateWindow is the de-duplication window of the shop's streams.
const DuplicateWindow = 10 * time.Minute

// StreamConfig is the configuration every shop service gives a stream of
// the shop: subjects "<prefix>.>", duplicates within DuplicateWindow
// dropped.
func StreamConfig(name, prefix string) messaging.StreamConfig {
	return messaging.StreamConfig{Name: name, Subjects: []string{prefix + ".>"}, Duplicates: DuplicateWindow}
}

// EnsureOwnStream creates or updates the stream the service writes.
func EnsureOwnStream(ctx context.Context, js jetstream.JetStream, cfg messaging.StreamConfig) error {
	if _, err := messaging.EnsureStream(ctx, js, cfg); err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}

// EnsureForeignStream makes sure a stream another service owns exists, so
// that a consumer can be created on it before its owner first starts. An
// existing stream is left as its owner configured it, never updated; a
// missing one is created with cfg. If the owner creates it at the same
// moment, the server accepts the identical configuration twice, and a
// different one makes this call find the owner's stream.
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
