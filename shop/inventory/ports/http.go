// Package ports exposes inventory over HTTP, as the shop's contract gives
// it.
package ports

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// HTTP serves the inventory API.
type HTTP struct{ app *app.Inventory }

// Register adds the inventory routes to h.
func Register(h *service.Host, a *app.Inventory) {
	s := &HTTP{app: a}
	h.Route("GET /v1/stock/{sku}", s.get)
	h.Route("PUT /v1/stock/{sku}", s.put)
}

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	sku := r.PathValue("sku")
	st, err := s.app.Stock(r.Context(), sku)
	if errors.Is(err, domain.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no stock record for sku %q", sku)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, st)
}

type putStock struct {
	OnHand *int64 `json:"on_hand"`
}

func (s *HTTP) put(w http.ResponseWriter, r *http.Request) error {
	sku := r.PathValue("sku")
	if !domain.ValidSKU(sku) {
		return problem.Invalid("sku in the path must be 1 to 64 letters, digits, '-' or '_'",
			problem.FieldError{Field: "sku", Reason: "invalid sku"})
	}
	onHand, err := parseStockCount(w, r)
	if err != nil {
		return err
	}
	st, err := s.app.SetOnHand(r.Context(), sku, onHand)
	switch {
	case errors.Is(err, domain.ErrBelowReserved):
		return problem.New(http.StatusConflict, "on_hand %d is below the %d units reserved for sku %q", onHand, st.Reserved, sku)
	case errors.Is(err, domain.ErrUnknownProduct):
		return problem.Invalid(fmt.Sprintf("sku %q is not in the catalog", sku), problem.FieldError{Field: "sku", Reason: "not in the catalog"})
	case errors.Is(err, app.ErrCatalogUnavailable):
		return service.Unavailable(w, err, "cannot check sku %q against the catalog", sku)
	case err != nil:
		return err
	}
	return service.WriteJSON(w, http.StatusOK, st)
}

// parseStockCount reads and checks the body of a stock count, PUT
// /v1/stock/{sku} or /v1/warehouses/{warehouse}/stock/{sku}: the units on
// hand. Its errors are problems: 400 naming the field, or what DecodeJSON
// refuses.
func parseStockCount(w http.ResponseWriter, r *http.Request) (int64, error) {
	var body putStock
	if err := service.DecodeJSON(w, r, &body); err != nil {
		return 0, err
	}
	switch {
	case body.OnHand == nil:
		return 0, problem.Invalid("on_hand is required", problem.FieldError{Field: "on_hand", Reason: "required"})
	case *body.OnHand < 0 || *body.OnHand > domain.MaxOnHand:
		return 0, problem.Invalid("on_hand must be between 0 and 1000000000",
			problem.FieldError{Field: "on_hand", Reason: "must be between 0 and 1000000000"})
	}
	return *body.OnHand, nil
}
