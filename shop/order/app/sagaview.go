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
	ID     string `json:"id"`
	Flow   string `json:"flow"`
	Status string `json:"status"`
	// Saga is the orchestrator's record (orchestrated flow).
	Saga *saga.Info `json:"saga,omitempty"`
	// Events are the conversation's events, oldest first (choreography).
	Events []choreography.Step `json:"events,omitempty"`
}

// Progress is the choreography's view of conversations.
type Progress interface {
	Steps(ctx context.Context, correlationID string) ([]choreography.Step, error)
}

// SagaView returns the saga with id: an orchestrated saga's record, or the
// progress of a choreographed order (id is the order id). saga.ErrNotFound
// if neither exists.
func (a *App) SagaView(ctx context.Context, id string) (SagaView, error) {
	if !domain.ValidID(id) { // every saga id is an order id, or one with a suffix
		return SagaView{}, saga.ErrNotFound
	}
	if a.Sagas != nil {
		info, err := a.Sagas.Get(ctx, id)
		if err == nil {
			return SagaView{ID: id, Flow: domain.FlowOrchestrated, Status: string(info.Status), Saga: &info}, nil
		}
		if !errors.Is(err, saga.ErrNotFound) {
			return SagaView{}, err
		}
	}
	if a.Progress == nil {
		return SagaView{}, saga.ErrNotFound
	}
	o, version, err := a.Orders.Load(ctx, id)
	if err != nil {
		return SagaView{}, err
	}
	if version == 0 || o.Flow != domain.FlowChoreography {
		return SagaView{}, saga.ErrNotFound
	}
	steps, err := a.Progress.Steps(ctx, id)
	if err != nil {
		return SagaView{}, err
	}
	return SagaView{ID: id, Flow: domain.FlowChoreography, Status: string(o.Status), Events: steps}, nil
}
