package shoptest

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Saga is an orchestrated saga of the order service as GET /v1/sagas/{id}
// shows it.
type Saga struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Status     string     `json:"status"`
	Reason     string     `json:"reason"`
	FailedStep string     `json:"failed_step"`
	UpdatedAt  time.Time  `json:"updated_at"`
	Steps      []SagaStep `json:"steps"`
}

// SagaStep is one record of a saga's history: an action or compensation
// that ended.
type SagaStep struct {
	Step      string    `json:"step"`
	Phase     string    `json:"phase"`
	Status    string    `json:"status"`
	Attempts  int       `json:"attempts"`
	Error     string    `json:"error"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
}

// GetSaga reads saga id from the order service; found is false for a 404.
func GetSaga(ctx context.Context, orders Replicas, id string) (s Saga, found bool, err error) {
	var view struct {
		Flow string `json:"flow"`
		Saga *Saga  `json:"saga"`
	}
	code, _, err := orders.Do(ctx, 0, http.MethodGet, "/v1/sagas/"+id, "", nil, &view, 0)
	if code == http.StatusNotFound {
		return Saga{}, false, nil
	}
	if err != nil {
		return Saga{}, false, err
	}
	if view.Saga == nil {
		return Saga{}, false, fmt.Errorf("saga %s: not orchestrated (flow %q)", id, view.Flow)
	}
	return *view.Saga, true, nil
}

// sagaShape is what a history can hold: a definition's steps in order,
// the group of Concurrent steps each belongs to, and which have a
// compensation.
type sagaShape struct {
	steps       []string
	group       []int
	compensable []bool
	// commit is the first step of the commit point's group.
	commit int
}

// The shop's orchestrated sagas (shop/order/app/saga.go).
var sagaShapes = map[string]sagaShape{
	"place-order": {steps: []string{"reserve-stock", "charge", "schedule-shipment", "commit-stock"},
		group: []int{0, 0, 1, 1}, compensable: []bool{true, true, true, false}, commit: 2},
	"cancel-order": {steps: []string{"cancel-shipment", "refund", "restock"},
		group: []int{0, 1, 1}, compensable: []bool{false, false, false}, commit: 0},
}

// HistoryProblems returns what is wrong with the history of an ended saga
// of the shop: it must hold one record per action or compensation that
// ended, in the order they ran. Actions come first, group after group in
// step order, each group starting after the one before ended; then
// compensations, one at a time in reverse step order. A completed saga
// has a successful record for every action and no compensation; a
// compensated one has a successful compensation for every compensable
// step whose action has a record, and no action after its commit point's
// group.
func HistoryProblems(s Saga) []string {
	shape, ok := sagaShapes[s.Name]
	if !ok {
		return []string{fmt.Sprintf("saga %s: unknown saga %q", s.ID, s.Name)}
	}
	var bad []string
	problem := func(format string, args ...any) {
		bad = append(bad, fmt.Sprintf("saga %s (%s, %s): ", s.ID, s.Name, s.Status)+fmt.Sprintf(format, args...))
	}
	index := map[string]int{}
	for i, name := range shape.steps {
		index[name] = i
	}
	seen := map[string]bool{}
	acted := map[int]bool{}
	compensated := map[int]bool{}
	lastAction, lastComp := -1, len(shape.steps)
	var groupEnd, prevGroupEnd time.Time // ends of the current and the previous action group
	var lastEnd time.Time
	inCompensation := false
	for n, r := range s.Steps {
		i, known := index[r.Step]
		switch {
		case !known:
			problem("record %d is of unknown step %q", n, r.Step)
			continue
		case r.Phase != "action" && r.Phase != "compensation":
			problem("record %d (%s) has phase %q", n, r.Step, r.Phase)
			continue
		case r.Status != "succeeded" && r.Status != "failed":
			problem("record %d (%s %s) has status %q", n, r.Step, r.Phase, r.Status)
		case r.Attempts < 1:
			problem("record %d (%s %s) has %d attempts", n, r.Step, r.Phase, r.Attempts)
		case r.EndedAt.Before(r.StartedAt):
			problem("record %d (%s %s) ended at %s before it started at %s", n, r.Step, r.Phase, r.EndedAt, r.StartedAt)
		}
		if seen[r.Phase+" "+r.Step] {
			problem("two %s records of step %s", r.Phase, r.Step)
		}
		seen[r.Phase+" "+r.Step] = true
		if r.Phase == "action" {
			if inCompensation {
				problem("action %s recorded after a compensation", r.Step)
			}
			if i <= lastAction {
				problem("action %s recorded after action %s", r.Step, shape.steps[lastAction])
			}
			if lastAction < 0 || shape.group[i] != shape.group[lastAction] {
				prevGroupEnd, groupEnd = groupEnd, time.Time{}
			}
			if r.StartedAt.Before(prevGroupEnd) {
				problem("action %s started at %s, before the group before it ended at %s", r.Step, r.StartedAt, prevGroupEnd)
			}
			if r.EndedAt.After(groupEnd) {
				groupEnd = r.EndedAt
			}
			if r.EndedAt.After(lastEnd) {
				lastEnd = r.EndedAt
			}
			lastAction = i
			acted[i] = true
			continue
		}
		if !shape.compensable[i] {
			problem("compensation of step %s, which has none", r.Step)
		}
		if i >= lastComp {
			problem("compensation %s recorded after compensation %s", r.Step, shape.steps[lastComp])
		}
		if r.StartedAt.Before(lastEnd) {
			problem("compensation %s started at %s, before the record before it ended at %s", r.Step, r.StartedAt, lastEnd)
		}
		if r.Status != "succeeded" && s.Status != "compensation_failed" {
			problem("compensation %s %s: %s", r.Step, r.Status, r.Error)
		}
		inCompensation, lastComp, lastEnd = true, i, r.EndedAt
		compensated[i] = true
	}
	switch s.Status {
	case "completed":
		for i, name := range shape.steps {
			if !acted[i] {
				problem("completed without a record of action %s", name)
			}
		}
		for _, r := range s.Steps {
			if r.Phase == "action" && r.Status != "succeeded" {
				problem("completed with action %s %s: %s", r.Step, r.Status, r.Error)
			}
		}
		if inCompensation {
			problem("completed with compensations")
		}
	case "compensated":
		for i, name := range shape.steps {
			if acted[i] && shape.compensable[i] && !compensated[i] {
				problem("compensated without compensating %s, whose action is recorded", name)
			}
			// The pivot's group may have run (a pivot refused, or one that
			// can be undone, stopped before its commit point was durable),
			// nothing after it.
			if acted[i] && shape.group[i] > shape.group[shape.commit] {
				problem("compensated with action %s, past the commit point's group, recorded", name)
			}
		}
	default:
		problem("not ended well: %s", s.Reason)
	}
	return bad
}
