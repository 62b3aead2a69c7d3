package ports

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/saga/choreography"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/internal/validation/httpvalidation"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

type cancelBody struct {
	Reason string `json:"reason"`
}

func (s *HTTP) cancel(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	body, err := parseCancel(w, r)
	if err != nil {
		return err
	}
	res, err := s.app.Commands.CancelOrder.Handle(r.Context(), app.CancelOrder{OrderID: id, Reason: body.Reason})
	var refused *app.CancelRefusedError
	var rejected *app.RejectedError
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return problem.New(http.StatusNotFound, "no order %q", id)
	case errors.As(err, &rejected):
		return problem.New(http.StatusConflict, "order %s cannot be cancelled: %s", id, rejected.Error())
	case errors.As(err, &refused):
		return problem.New(http.StatusConflict, "order %s cannot be cancelled: %s", id, refused.Reason)
	case err != nil:
		return err
	}
	switch res.Outcome {
	case app.CancelRequested:
		// Pending: it ends cancelled once its saga has undone what it did.
		w.Header().Set("Location", "/v1/orders/"+id)
		return service.WriteJSON(w, http.StatusAccepted, map[string]string{"order_id": id, "status": string(domain.Pending),
			"cancellation": "requested"})
	case app.CancelRunning:
		w.Header().Set("Location", "/v1/sagas/"+res.SagaID)
		return service.WriteJSON(w, http.StatusAccepted, map[string]string{"order_id": id, "status": string(domain.Confirmed),
			"cancellation": "running", "saga_id": res.SagaID})
	}
	return service.WriteJSON(w, http.StatusOK, orderOf(res.Order))
}

// parseCancel reads and checks the optional body of POST
// /v1/orders/{id}/cancel. Its errors are problems: 400 naming the field at
// fault, or what DecodeOptionalJSON refuses.
func parseCancel(w http.ResponseWriter, r *http.Request) (cancelBody, error) {
	var body cancelBody
	if _, err := service.DecodeOptionalJSON(w, r, &body); err != nil {
		return body, err
	}
	return body, httpvalidation.Problem(domain.ValidateCancel(body.Reason))
}

// SagaView is the answer to GET /v1/sagas/{id}: an orchestrated saga's
// record, or the events of a choreographed order's conversation.
type SagaView struct {
	ID     string              `json:"id"`
	Flow   string              `json:"flow"`
	Status string              `json:"status"`
	Saga   *saga.Info          `json:"saga,omitempty"`
	Events []choreography.Step `json:"events,omitempty"`
}

type sagaList struct {
	Items []saga.Summary `json:"items"`
}

func (s *HTTP) sagas(w http.ResponseWriter, r *http.Request) error {
	f, err := parseSagaFilter(r.URL.Query())
	if err != nil {
		return err
	}
	items, err := s.app.Queries.Sagas.Handle(r.Context(), f)
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, sagaList{Items: items})
}

// parseSagaFilter reads and checks the query of GET /v1/sagas. Its errors
// are 400 problems naming the parameter.
func parseSagaFilter(q url.Values) (saga.Filter, error) {
	f := saga.Filter{Name: q.Get("name"), Status: saga.Status(q.Get("status")), Limit: 100}
	if err := domain.SagaNameText.Check(f.Name); err != nil {
		return f, problem.Invalid("name "+err.Error(), problem.FieldError{Field: "name", Reason: err.Error()})
	}
	switch f.Status {
	case "", saga.Running, saga.Retrying, saga.Aborting, saga.Compensating, saga.Completed, saga.Compensated, saga.CompensationFailed:
	default:
		return f, problem.Invalid("status must be one of running, retrying, aborting, compensating, completed, compensated, compensation_failed",
			problem.FieldError{Field: "status", Reason: "unknown status"})
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return f, problem.Invalid("limit must be an integer from 1 to 1000", problem.FieldError{Field: "limit", Reason: "must be an integer from 1 to 1000"})
		}
		f.Limit = n
	}
	return f, nil
}

func (s *HTTP) saga(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	view, err := s.app.Queries.Saga.Handle(r.Context(), id)
	if errors.Is(err, saga.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no saga %q", id)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, SagaView(view))
}

func (s *HTTP) retrySaga(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	info, err := s.app.Commands.RetrySaga.Handle(r.Context(), id)
	switch {
	case errors.Is(err, saga.ErrNotFound):
		return problem.New(http.StatusNotFound, "no saga %q", id)
	case errors.Is(err, saga.ErrNotRetryable):
		return problem.New(http.StatusConflict, "saga %s is not compensation_failed: only a saga whose compensation failed can be retried", id)
	case err != nil:
		return err
	}
	return service.WriteJSON(w, http.StatusAccepted, info)
}
