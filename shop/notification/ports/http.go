// Package ports exposes the notification service: its HTTP API and its
// consumer of order events.
package ports

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/notification/app"
	"github.com/trellis-go/trellis/shop/notification/domain"
)

// HTTP serves the notification API.
type HTTP struct{ app *app.App }

// Register adds the notification routes to h.
func Register(h *service.Host, a *app.App) {
	s := &HTTP{app: a}
	h.Route("GET /v1/notifications", s.list)
}

type list struct {
	Items []domain.Notification `json:"items"`
}

func (s *HTTP) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	customer := q.Get("customer_id")
	if customer == "" {
		return problem.Invalid("the customer_id query parameter is required",
			problem.FieldError{Field: "customer_id", Reason: "required"})
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > app.MaxLimit {
			return problem.Invalid("limit must be an integer from 1 to 500",
				problem.FieldError{Field: "limit", Reason: "must be an integer from 1 to 500"})
		}
		limit = n
	}
	items, err := s.app.ByCustomer(r.Context(), customer, limit)
	if errors.Is(err, app.ErrInvalidCustomer) {
		return problem.Invalid("customer_id "+strconv.Quote(customer)+" must be 1 to 128 letters, digits or _ . : -",
			problem.FieldError{Field: "customer_id", Reason: "must be 1 to 128 letters, digits or _ . : -"})
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, list{Items: items})
}
