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

// EnsureOwnStream creates or updates the stream the service writes. If a
// consumer created it with another configuration between the update
// that found no stream and the create, the create fails with "name
// already in use"; the update is then tried again.
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
// existing stream is left as its owner configured it, never updated: the
// stream is only ever created, with cfg and the defaults of
// messaging.EnsureStream, and "name already in use" means the owner (or
// another consumer) was first, which is as good.
func EnsureForeignStream(ctx context.Context, js jetstream.JetStream, cfg messaging.StreamConfig) error {
	if _, err := js.Stream(ctx, cfg.Name); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	replicas := max(cfg.Replicas, 1)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:               cfg.Name,
		Subjects:           cfg.Subjects,
		Storage:            jetstream.FileStorage,
		Retention:          jetstream.LimitsPolicy,
		MaxAge:             cfg.MaxAge,
		Duplicates:         cfg.Duplicates,
		Replicas:           replicas,
		AllowAtomicPublish: !cfg.DenyAtomicPublish,
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}
