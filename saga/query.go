package saga

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Queries of the log: Get, List and Wait.

// Filter selects sagas for List.
type Filter struct {
	Name   string // definition name; "" = any
	Status Status // "" = any
	Limit  int    // 0 = 100, at most 1000
}

// Summary describes a saga.
type Summary struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status Status `json:"status"`
	// Step is the step whose action or compensation is next, or stuck
	// (compensation_failed); "" once terminal otherwise.
	Step string `json:"step,omitempty"`
	// Reason is the error that started compensation.
	Reason string `json:"reason,omitempty"`
	// FailedStep is the step whose failure started compensation.
	FailedStep string    `json:"failed_step,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// Info is a saga with its data and history.
type Info struct {
	Summary
	Deadline *time.Time      `json:"deadline,omitempty"`
	Data     json.RawMessage `json:"data"`
	Steps    []StepRecord    `json:"steps"`
}

// StepRecord is one entry of a saga's history: an action or compensation
// that ended, with its attempts.
type StepRecord struct {
	Step      string    `json:"step"`
	Phase     string    `json:"phase"`  // "action" or "compensation"
	Status    string    `json:"status"` // "succeeded" or "failed"
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
}

const summaryColumns = "id, name, status, step_name, reason, failed_step, created_ns, updated_ns"

func scanSummary(sc interface{ Scan(...any) error }, extra ...any) (Summary, error) {
	var s Summary
	var status string
	var created, updated int64
	err := sc.Scan(append([]any{&s.ID, &s.Name, &status, &s.Step, &s.Reason, &s.FailedStep, &created, &updated}, extra...)...)
	s.Status = Status(status)
	s.CreatedAt, s.UpdatedAt = time.Unix(0, created).UTC(), time.Unix(0, updated).UTC()
	return s, err
}

const (
	sqlGet      = "SELECT " + summaryColumns + ", deadline_ns, data FROM trellis_sagas WHERE id = $1"
	sqlGetSteps = "SELECT step, phase, status, attempts, error, started_ns, ended_ns FROM trellis_saga_steps WHERE saga_id = $1 ORDER BY seq"
)

// Get returns saga id with its data and history, or ErrNotFound.
func (o *Orchestrator) Get(ctx context.Context, id string) (Info, error) {
	tx, err := o.db.Reader().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Info{}, fmt.Errorf("saga: get %q: %w", id, err)
	}
	defer func() { _ = tx.Rollback() }()
	var info Info
	var deadline int64
	var data []byte
	info.Summary, err = scanSummary(tx.QueryRowContext(ctx, sqlGet, id), &deadline, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return Info{}, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if err != nil {
		return Info{}, fmt.Errorf("saga: get %q: %w", id, err)
	}
	info.Data = data
	if deadline != 0 {
		d := time.Unix(0, deadline).UTC()
		info.Deadline = &d
	}
	rows, err := tx.QueryContext(ctx, sqlGetSteps, id)
	if err != nil {
		return Info{}, fmt.Errorf("saga: get %q history: %w", id, err)
	}
	defer func() { _ = rows.Close() }()
	info.Steps = []StepRecord{}
	for rows.Next() {
		var s StepRecord
		var started, ended int64
		if err := rows.Scan(&s.Step, &s.Phase, &s.Status, &s.Attempts, &s.Error, &started, &ended); err != nil {
			return Info{}, fmt.Errorf("saga: get %q history: %w", id, err)
		}
		s.StartedAt, s.EndedAt = time.Unix(0, started).UTC(), time.Unix(0, ended).UTC()
		info.Steps = append(info.Steps, s)
	}
	if err := rows.Err(); err != nil {
		return Info{}, fmt.Errorf("saga: get %q history: %w", id, err)
	}
	return info, nil
}

// List returns the sagas f selects, newest first.
func (o *Orchestrator) List(ctx context.Context, f Filter) ([]Summary, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var where []string
	var args []any
	if f.Name != "" {
		args = append(args, f.Name)
		where = append(where, fmt.Sprintf("name = $%d", len(args)))
	}
	if f.Status != "" {
		args = append(args, string(f.Status))
		where = append(where, fmt.Sprintf("status = $%d", len(args)))
	}
	q := "SELECT " + summaryColumns + " FROM trellis_sagas"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += fmt.Sprintf(" ORDER BY created_ns DESC, id DESC LIMIT %d", limit)
	rows, err := o.db.Reader().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	defer func() { _ = rows.Close() }()
	out := []Summary{}
	for rows.Next() {
		s, err := scanSummary(rows)
		if err != nil {
			return nil, fmt.Errorf("saga: list: %w", err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("saga: list: %w", err)
	}
	return out, nil
}

// Wait returns saga id once it is terminal (Completed, Compensated or
// CompensationFailed), or ctx's error. A saga ending in this process wakes
// it at once; one ending elsewhere is seen at the next poll interval.
func (o *Orchestrator) Wait(ctx context.Context, id string) (Info, error) {
	for {
		o.mu.Lock()
		w := o.waiters[id]
		if w == nil {
			w = &waiter{ch: make(chan struct{})}
			o.waiters[id] = w
		}
		w.n++
		// A saga executing here wakes its waiters when it ends: no need
		// to read it before.
		a := o.active[id]
		skipRead := a != nil && !a.ended
		o.mu.Unlock()
		var info Info
		var err error
		if !skipRead {
			info, err = o.Get(ctx, id)
		}
		if err == nil && !info.Status.Terminal() {
			t := time.NewTimer(o.pollInterval)
			select {
			case <-w.ch:
			case <-t.C:
			case <-ctx.Done():
				err = fmt.Errorf("saga: wait for %q: %w", id, ctx.Err())
			}
			t.Stop()
		}
		o.mu.Lock()
		if w.n--; w.n == 0 && o.waiters[id] == w {
			delete(o.waiters, id)
		}
		o.mu.Unlock()
		if err != nil || info.Status.Terminal() {
			return info, err
		}
	}
}
