// Package ports exposes the shipping service: its HTTP API, as the shop's
// contract gives it, and its reactions to the events of the choreographed
// place-order saga.
package ports

import (
	"errors"
	"net/http"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation/httpvalidation"
	"github.com/trellis-go/trellis/shop/shipping/app"
	"github.com/trellis-go/trellis/shop/shipping/domain"
)

// HTTP serves the shipping API.
type HTTP struct{ app *app.App }

// RegisterHTTP adds the shipping routes to h.
func RegisterHTTP(h *service.Host, a *app.App) {
	s := &HTTP{app: a}
	h.InternalRoute("POST /v1/shipments", s.schedule, contract.ServiceOrder)
	h.InternalRoute("POST /v1/shipments/{id}/cancel", s.cancel, contract.ServiceOrder)
	h.InternalRoute("POST /v1/shipments/{id}/ship", s.ship)
	h.Route("GET /v1/shipments", s.byOrder)
	h.Route("GET /v1/shipments/{id}", s.get)
}

type scheduleBody struct {
	OrderID string `json:"order_id"`
	Address string `json:"address"`
}

func (s *HTTP) schedule(w http.ResponseWriter, r *http.Request) error {
	// The key is optional: the order id already makes a schedule
	// idempotent. One given must still be well formed.
	if _, err := service.IdempotencyKey(r, false, ""); err != nil {
		return err
	}
	body, err := parseSchedule(w, r)
	if err != nil {
		return err
	}
	res, err := s.app.Schedule(r.Context(), body.OrderID, body.Address)
	switch {
	case errors.Is(err, domain.ErrCancelled):
		return problem.New(http.StatusConflict, "shipment for order %s was cancelled", body.OrderID)
	case err != nil:
		return httpvalidation.Problem(err)
	}
	w.Header().Set("Location", "/v1/shipments/"+res.Shipment.ShipmentID)
	if res.Created {
		return service.WriteJSON(w, http.StatusCreated, res.Shipment)
	}
	w.Header().Set("Idempotent-Replayed", "true")
	return service.WriteJSON(w, http.StatusOK, res.Shipment)
}

// parseSchedule reads and checks the body of POST /v1/shipments. Its
// errors are problems: 400 naming the fields at fault, or what DecodeJSON
// refuses.
func parseSchedule(w http.ResponseWriter, r *http.Request) (scheduleBody, error) {
	var body scheduleBody
	if err := service.DecodeJSON(w, r, &body); err != nil {
		return body, err
	}
	return body, httpvalidation.Problem(domain.ValidateSchedule(body.OrderID, body.Address))
}

func (s *HTTP) cancel(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	sh, err := s.app.Cancel(r.Context(), id)
	switch {
	case errors.Is(err, domain.ErrShipped):
		return problem.New(http.StatusConflict, "cannot cancel shipment %s: it was shipped", id)
	case err != nil:
		return httpvalidation.Problem(err)
	}
	return service.WriteJSON(w, http.StatusOK, sh)
}

func (s *HTTP) ship(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	sh, err := s.app.Ship(r.Context(), id)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return problem.New(http.StatusNotFound, "no shipment %q", id)
	case errors.Is(err, domain.ErrCancelled):
		return problem.New(http.StatusConflict, "cannot ship shipment %s: it was cancelled", id)
	case err != nil:
		return err
	}
	return service.WriteJSON(w, http.StatusOK, sh)
}

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	sh, err := s.app.Shipment(r.Context(), id)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return problem.New(http.StatusNotFound, "no shipment %q", id)
	case err != nil:
		return err
	}
	return service.WriteJSON(w, http.StatusOK, sh)
}

// List is the body of a list response.
type List struct {
	Items []domain.Shipment `json:"items"`
}

func (s *HTTP) byOrder(w http.ResponseWriter, r *http.Request) error {
	orderID := r.URL.Query().Get("order_id")
	if orderID == "" {
		return problem.Invalid("the order_id query parameter is required: shipments are listed per order",
			problem.FieldError{Field: "order_id", Reason: "required query parameter"})
	}
	items, err := s.app.ByOrder(r.Context(), orderID)
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, List{Items: items})
}
