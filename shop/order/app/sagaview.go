package app

import (
	"context"
	"errors"

	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// SagaView is one place-order or cancel-order saga as operators see it:
// the orchestrator's log of an orchestrated saga, or, for a choreographed
// order, the events of its conversation.
type SagaView struct {
	ID     string
	Flow   string
	Status string
	// Saga is the orchestrator's record (orchestrated flow).
	Saga *saga.Info
	// Events are the conversation's events, oldest first (choreography).
	Events []choreography.Step
}

// SagaHandler reads one saga.
type SagaHandler struct {
	orders   Orders
	sagas    Sagas
	progress Progress
}

// Handle returns the saga with id: an orchestrated saga's record, or the
// progress of a choreographed order (id is the order id). saga.ErrNotFound
// if neither exists.
func (h SagaHandler) Handle(ctx context.Context, id string) (SagaView, error) {
	if !domain.ValidID(id) { // every saga id is an order id, or one with a suffix
		return SagaView{}, saga.ErrNotFound
	}
	info, err := h.sagas.Get(ctx, id)
	if err == nil {
		return SagaView{ID: id, Flow: domain.FlowOrchestrated, Status: string(info.Status), Saga: &info}, nil
	}
	if !errors.Is(err, saga.ErrNotFound) {
		return SagaView{}, err
	}
	if h.progress == nil {
		return SagaView{}, saga.ErrNotFound
	}
	o, version, err := h.orders.Load(ctx, id)
	if err != nil {
		return SagaView{}, err
	}
	if version == 0 || o.Flow != domain.FlowChoreography {
		return SagaView{}, saga.ErrNotFound
	}
	steps, err := h.progress.Steps(ctx, id)
	if err != nil {
		return SagaView{}, err
	}
	return SagaView{ID: id, Flow: domain.FlowChoreography, Status: string(o.Status), Events: steps}, nil
}

// SagasHandler lists sagas.
type SagasHandler struct{ sagas Sagas }

// Handle lists the sagas f selects; none is an empty slice.
func (h SagasHandler) Handle(ctx context.Context, f saga.Filter) ([]saga.Summary, error) {
	items, err := h.sagas.List(ctx, f)
	if items == nil {
		items = []saga.Summary{}
	}
	return items, err
}

// RetrySagaHandler lets an operator retry a saga whose compensation
// failed.
type RetrySagaHandler struct{ sagas Sagas }

// Handle runs the compensations of the compensation_failed saga id again
// and returns its record: saga.ErrNotFound for an unknown id,
// saga.ErrNotRetryable for a saga in another state.
func (h RetrySagaHandler) Handle(ctx context.Context, id string) (saga.Info, error) {
	if !domain.ValidID(id) { // every saga id is an order id, or one with a suffix
		return saga.Info{}, saga.ErrNotFound
	}
	if err := h.sagas.Retry(ctx, id); err != nil {
		return saga.Info{}, err
	}
	return h.sagas.Get(ctx, id)
}
