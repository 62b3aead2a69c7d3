// Package ports exposes the order service over HTTP, as the shop's
// contract gives it.
package ports

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/internal/validation/httpvalidation"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// HTTP serves the order API.
type HTTP struct{ app *app.App }

// Register adds the order routes to h.
func Register(h *service.Host, a *app.App) {
	s := &HTTP{app: a}
	h.Route("POST /v1/orders", s.place)
	h.Route("GET /v1/orders/{id}", s.get)
	h.Route("GET /v1/customers/{id}/orders", s.byCustomer)
	h.Route("POST /v1/orders/{id}/cancel", s.cancel)
	h.InternalRoute("GET /v1/sagas", s.sagas)
	h.InternalRoute("GET /v1/sagas/{id}", s.saga)
	h.InternalRoute("POST /v1/sagas/{id}/retry", s.retrySaga)
}

func (s *HTTP) place(w http.ResponseWriter, r *http.Request) error {
	key, err := service.IdempotencyKey(r, true, "place the order only once")
	if err != nil {
		return err
	}
	cmd, err := parsePlace(w, r)
	if err != nil {
		return err
	}
	cmd.IdempotencyKey = key
	res, err := s.app.Place(r.Context(), cmd)
	switch {
	case errors.Is(err, app.ErrIdempotencyConflict):
		return problem.New(http.StatusUnprocessableEntity, "Idempotency-Key %q was already used for a different request", key)
	case errors.Is(err, app.ErrCatalogUnavailable):
		return service.Unavailable(w, err, "cannot price the order")
	case err != nil:
		return httpvalidation.Problem(err)
	}
	w.Header().Set("Location", "/v1/orders/"+res.OrderID)
	if res.Replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	return service.WriteJSON(w, http.StatusAccepted, res)
}

// parsePlace reads and checks the body of POST /v1/orders, item prices
// aside. Its errors are problems: 400 naming the fields at fault, or what
// DecodeJSON refuses.
func parsePlace(w http.ResponseWriter, r *http.Request) (app.PlaceOrder, error) {
	var cmd app.PlaceOrder
	if err := service.DecodeJSON(w, r, &cmd); err != nil {
		return cmd, err
	}
	return cmd, httpvalidation.Problem(cmd.Validate())
}

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	sum, err := s.app.Order(r.Context(), id)
	if errors.Is(err, domain.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no order %q", id)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, sum)
}

type summaryList struct {
	Items []app.Summary `json:"items"`
}

func (s *HTTP) byCustomer(w http.ResponseWriter, r *http.Request) error {
	limit := 50
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return problem.Invalid("limit must be an integer from 1 to 200", problem.FieldError{Field: "limit", Reason: "must be an integer from 1 to 200"})
		}
		limit = n
	}
	items, err := s.app.CustomerOrders(r.Context(), r.PathValue("id"), limit)
	if err != nil {
		return fmt.Errorf("list orders: %w", err)
	}
	return service.WriteJSON(w, http.StatusOK, summaryList{Items: items})
}
