package eventstore

import (
	"context"
	"fmt"
	"time"
)

// Snapshot is an aggregate's state folded up to a version of its stream, so
// that loading it reads only the events after that version. A snapshot is
// a cache: when its SchemaVersion is not the one the aggregate's code
// expects, ignore it and fold the stream from the start (upcasters do not
// apply to snapshots).
type Snapshot struct {
	Stream string
	// Version is the stream version the state includes.
	Version int64
	// SchemaVersion is the version of Data's encoding, from 1; 0 means 1.
	SchemaVersion int
	// Data is the encoded state, in any encoding.
	Data []byte
	// RecordedAt is when it was saved (set by SaveSnapshot).
	RecordedAt time.Time
}

// SaveSnapshot stores snap as the latest snapshot of its stream, unless the
// stream already has a snapshot of a later version: concurrent savers
// cannot replace a newer snapshot with an older one.
func (s *Store) SaveSnapshot(ctx context.Context, snap Snapshot) error {
	if err := checkName("stream id", snap.Stream, MaxStreamIDLen); err != nil {
		return err
	}
	if snap.Version < 1 {
		return fmt.Errorf("%w: snapshot of %q at version %d: versions start at 1", ErrInvalidEvent, snap.Stream, snap.Version)
	}
	if snap.SchemaVersion < 0 {
		return fmt.Errorf("%w: snapshot of %q: schema version %d", ErrInvalidEvent, snap.Stream, snap.SchemaVersion)
	}
	schema := max(snap.SchemaVersion, 1)
	data := snap.Data
	if data == nil {
		data = []byte{}
	}
	if _, err := s.db.Writer().ExecContext(ctx, s.q.saveSnapshot, snap.Stream, snap.Version, schema, data, s.timeArg(s.stamp())); err != nil {
		return fmt.Errorf("eventstore: save snapshot of %q: %w", snap.Stream, err)
	}
	return nil
}

// LoadSnapshot returns the latest snapshot of stream, or an error matching
// ErrNoSnapshot.
func (s *Store) LoadSnapshot(ctx context.Context, stream string) (Snapshot, error) {
	snap := Snapshot{Stream: stream}
	rec := timeScanner{dialect: s.dialect}
	err := s.db.Reader().QueryRowContext(ctx, s.q.loadSnapshot, stream).Scan(&snap.Version, &snap.SchemaVersion, &snap.Data, &rec)
	if isNoRows(err) {
		return Snapshot{}, fmt.Errorf("%w of stream %q", ErrNoSnapshot, stream)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("eventstore: load snapshot of %q: %w", stream, err)
	}
	snap.RecordedAt = rec.t
	return snap, nil
}

// DeleteSnapshot removes stream's snapshot, if any: after a change of the
// aggregate's code that makes old snapshots wrong, for instance.
func (s *Store) DeleteSnapshot(ctx context.Context, stream string) error {
	if _, err := s.db.Writer().ExecContext(ctx, s.q.deleteSnapshot, stream); err != nil {
		return fmt.Errorf("eventstore: delete snapshot of %q: %w", stream, err)
	}
	return nil
}
