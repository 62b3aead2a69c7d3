package ports

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// TransfersHTTP serves the warehouse stock and transfer API.
type TransfersHTTP struct{ app *app.Transfers }

// RegisterTransfers adds the warehouse and transfer routes to h.
func RegisterTransfers(h *service.Host, a *app.Transfers) {
	s := &TransfersHTTP{app: a}
	h.Route("GET /v1/warehouses/{warehouse}/stock/{sku}", s.getStock)
	h.Route("PUT /v1/warehouses/{warehouse}/stock/{sku}", s.putStock)
	h.Route("POST /v1/transfers", s.transfer)
	h.Route("GET /v1/transfers/{id}", s.get)
}

// unavailable turns a warehouse whose database cannot be reached into a
// 503 problem naming it; it returns nil for any other error.
func unavailable(err error) error {
	var u *domain.WarehouseUnavailable
	if !errors.As(err, &u) {
		return nil
	}
	if len(u.Warehouses) == 1 {
		return problem.New(http.StatusServiceUnavailable, "warehouse %s is unavailable: its database cannot be reached (since %s); its stock and transfers are back once it is, the rest of inventory is served",
			u.Warehouses[0], u.Since.UTC().Format(time.RFC3339))
	}
	return problem.New(http.StatusServiceUnavailable, "warehouses %s are unavailable: their databases cannot be reached (since %s); their stock and transfers are back once they are, the rest of inventory is served",
		strings.Join(u.Warehouses, " and "), u.Since.UTC().Format(time.RFC3339))
}

func badWarehouse(field, value string) error {
	return problem.Invalid(fmt.Sprintf("%s %q is not a warehouse: want %q or %q", field, value, domain.East, domain.West),
		problem.FieldError{Field: field, Reason: "must be east or west"})
}

func (s *TransfersHTTP) getStock(w http.ResponseWriter, r *http.Request) error {
	wh, sku := r.PathValue("warehouse"), r.PathValue("sku")
	if !domain.ValidWarehouse(wh) {
		return badWarehouse("warehouse", wh)
	}
	st, err := s.app.Stock(r.Context(), wh, sku)
	if errors.Is(err, domain.ErrNotFound) {
		return problem.New(http.StatusNotFound, "warehouse %s has no stock record for sku %q", wh, sku)
	}
	if p := unavailable(err); p != nil {
		return p
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, st)
}

func (s *TransfersHTTP) putStock(w http.ResponseWriter, r *http.Request) error {
	wh, sku := r.PathValue("warehouse"), r.PathValue("sku")
	if !domain.ValidWarehouse(wh) {
		return badWarehouse("warehouse", wh)
	}
	if !domain.ValidSKU(sku) {
		return problem.Invalid("sku in the path must be 1 to 64 letters, digits, '-' or '_'",
			problem.FieldError{Field: "sku", Reason: "invalid sku"})
	}
	onHand, err := parseStockCount(w, r)
	if err != nil {
		return err
	}
	st, err := s.app.SetStock(r.Context(), wh, sku, onHand)
	switch {
	case errors.Is(err, domain.ErrBelowHeld):
		return problem.New(http.StatusConflict, "on_hand %d is below the %d units of sku %q held by transfers in progress in warehouse %s", onHand, st.Held, sku, wh)
	case unavailable(err) != nil:
		return unavailable(err)
	case errors.Is(err, domain.ErrUnknownProduct):
		return problem.Invalid(fmt.Sprintf("sku %q is not in the catalog", sku), problem.FieldError{Field: "sku", Reason: "not in the catalog"})
	case errors.Is(err, app.ErrCatalogUnavailable):
		return service.Unavailable(w, err, "cannot check sku %q against the catalog", sku)
	case err != nil:
		return err
	}
	return service.WriteJSON(w, http.StatusOK, st)
}

type transferRequest struct {
	SKU  string `json:"sku"`
	Qty  *int64 `json:"qty"`
	From string `json:"from"`
	To   string `json:"to"`
}

func (s *TransfersHTTP) transfer(w http.ResponseWriter, r *http.Request) error {
	key, err := service.IdempotencyKey(r, true, "move the stock only once")
	if err != nil {
		return err
	}
	req, err := parseTransfer(w, r)
	if err != nil {
		return err
	}
	tr, replayed, err := s.app.Start(r.Context(), key, req)
	var short *domain.InsufficientStock
	switch {
	case errors.As(err, &short):
		return problem.New(http.StatusConflict, "cannot move %d of sku %q from %s: %d available", short.Asked, short.SKU, short.Warehouse, short.Available)
	case errors.Is(err, domain.ErrTransferKeyReused):
		return problem.New(http.StatusUnprocessableEntity, "Idempotency-Key %q was already used for a different transfer", key)
	case errors.Is(err, domain.ErrTransferInProgress):
		return problem.New(http.StatusConflict, "the transfer of Idempotency-Key %q is in progress: retry to get its result", key)
	case unavailable(err) != nil:
		return unavailable(err)
	case err != nil:
		return err
	}
	w.Header().Set("Location", "/v1/transfers/"+tr.TransferID)
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	return service.WriteJSON(w, http.StatusCreated, tr)
}

// parseTransfer reads and checks the body of POST /v1/transfers. Its
// errors are problems: 400 naming the field at fault, or what DecodeJSON
// refuses.
func parseTransfer(w http.ResponseWriter, r *http.Request) (domain.Transfer, error) {
	var body transferRequest
	if err := service.DecodeJSON(w, r, &body); err != nil {
		return domain.Transfer{}, err
	}
	switch {
	case !domain.ValidSKU(body.SKU):
		return domain.Transfer{}, problem.Invalid(fmt.Sprintf("sku %q must be 1 to 64 letters, digits, '-' or '_'", body.SKU), problem.FieldError{Field: "sku", Reason: "invalid sku"})
	case body.Qty == nil:
		return domain.Transfer{}, problem.Invalid("qty is required", problem.FieldError{Field: "qty", Reason: "required"})
	case *body.Qty < 1 || *body.Qty > domain.MaxTransferQty:
		return domain.Transfer{}, problem.Invalid(fmt.Sprintf("qty %d must be between 1 and %d", *body.Qty, domain.MaxTransferQty),
			problem.FieldError{Field: "qty", Reason: fmt.Sprintf("must be between 1 and %d", domain.MaxTransferQty)})
	case !domain.ValidWarehouse(body.From):
		return domain.Transfer{}, badWarehouse("from", body.From)
	case !domain.ValidWarehouse(body.To):
		return domain.Transfer{}, badWarehouse("to", body.To)
	case body.From == body.To:
		return domain.Transfer{}, problem.Invalid(fmt.Sprintf("to %q is the same warehouse as from", body.To), problem.FieldError{Field: "to", Reason: "must differ from from"})
	}
	return domain.Transfer{SKU: body.SKU, Qty: *body.Qty, From: body.From, To: body.To}, nil
}

func (s *TransfersHTTP) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	tr, err := s.app.Transfer(r.Context(), id)
	if errors.Is(err, domain.ErrNoTransfer) {
		return problem.New(http.StatusNotFound, "no transfer %q", id)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, tr)
}
