// Package ports exposes the order service: its HTTP API, as the shop's
// contract gives it, and its part in the choreographed place-order saga
// (the other services' answers, and the orders' deadlines). Each handler
// maps what comes in to a command or a query of the application and its
// answer back; the bodies of the API are this package's types.
package ports

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/internal/validation/httpvalidation"
	"github.com/trellis-go/trellis/shop/order/app"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// HTTP serves the order API.
type HTTP struct{ app *app.Application }

// RegisterHTTP adds the order routes to h.
func RegisterHTTP(h *service.Host, a *app.Application) {
	s := &HTTP{app: a}
	h.Route("POST /v1/orders", s.place)
	h.Route("GET /v1/orders/{id}", s.get)
	h.Route("GET /v1/customers/{id}/orders", s.byCustomer)
	h.Route("POST /v1/orders/{id}/cancel", s.cancel)
	h.InternalRoute("GET /v1/sagas", s.sagas)
	h.InternalRoute("GET /v1/sagas/{id}", s.saga)
	h.InternalRoute("POST /v1/sagas/{id}/retry", s.retrySaga)
}

// placeBody is the body of POST /v1/orders.
type placeBody struct {
	CustomerID      string     `json:"customer_id"`
	Items           []itemBody `json:"items"`
	PaymentToken    string     `json:"payment_token"`
	ShippingAddress string     `json:"shipping_address"`
}

type itemBody struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

// command is the PlaceOrder of the body, sent with key.
func (b placeBody) command(key string) app.PlaceOrder {
	cmd := app.PlaceOrder{IdempotencyKey: key, CustomerID: b.CustomerID, PaymentToken: b.PaymentToken,
		ShippingAddress: b.ShippingAddress}
	if b.Items != nil {
		cmd.Items = make([]app.PlaceItem, len(b.Items))
		for i, it := range b.Items {
			cmd.Items[i] = app.PlaceItem(it)
		}
	}
	return cmd
}

// placedBody is the answer to POST /v1/orders.
type placedBody struct {
	OrderID string        `json:"order_id"`
	Status  domain.Status `json:"status"`
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
	res, err := s.app.Commands.PlaceOrder.Handle(r.Context(), cmd)
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
	return service.WriteJSON(w, http.StatusAccepted, placedBody{OrderID: res.OrderID, Status: res.Status})
}

// parsePlace reads the body of POST /v1/orders into the command and
// checks it, item prices aside. Its errors are problems: 400 naming the
// fields at fault, or what DecodeJSON refuses.
func parsePlace(w http.ResponseWriter, r *http.Request) (app.PlaceOrder, error) {
	var body placeBody
	if err := service.DecodeJSON(w, r, &body); err != nil {
		return app.PlaceOrder{}, err
	}
	cmd := body.command("")
	return cmd, httpvalidation.Problem(cmd.Validate())
}

// orderBody is an order as GET /v1/orders/{id} and the customer's list
// show it.
type orderBody struct {
	OrderID    string        `json:"order_id"`
	CustomerID string        `json:"customer_id"`
	Status     domain.Status `json:"status"`
	Items      []domain.Item `json:"items"`
	TotalCents int64         `json:"total_cents"`
	Reason     string        `json:"reason"`
	PlacedAt   time.Time     `json:"placed_at"`
	UpdatedAt  time.Time     `json:"updated_at"`
}

func orderOf(s app.Summary) orderBody { return orderBody(s) }

// MaxWait caps the wait a client may ask for with Prefer: wait=N on
// GET /v1/orders/{id}, well inside the server's write timeout.
const MaxWait = 20 * time.Second

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	var sum app.Summary
	var err error
	if wait, ok := service.PreferWait(r, MaxWait); ok {
		// Held until the order is no longer pending, or the wait is over:
		// the client learns the outcome without polling.
		service.AppliedWait(w, wait)
		sum, err = s.app.Queries.Order.Wait(r.Context(), id, wait)
	} else {
		sum, err = s.app.Queries.Order.Handle(r.Context(), id)
	}
	if errors.Is(err, domain.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no order %q", id)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, orderOf(sum))
}

type orderList struct {
	Items []orderBody `json:"items"`
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
	items, err := s.app.Queries.CustomerOrders.Handle(r.Context(), app.CustomerOrders{CustomerID: r.PathValue("id"), Limit: limit})
	if err != nil {
		return fmt.Errorf("list orders: %w", err)
	}
	list := orderList{Items: make([]orderBody, len(items))}
	for i, it := range items {
		list.Items[i] = orderOf(it)
	}
	return service.WriteJSON(w, http.StatusOK, list)
}
