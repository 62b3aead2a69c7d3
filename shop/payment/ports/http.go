// Package ports exposes the payment service: its HTTP API, as the shop's
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
	"github.com/trellis-go/trellis/shop/payment/app"
	"github.com/trellis-go/trellis/shop/payment/domain"
)

// HTTP serves the payment API.
type HTTP struct{ app *app.App }

// RegisterHTTP adds the payment routes to h.
func RegisterHTTP(h *service.Host, a *app.App) {
	s := &HTTP{app: a}
	h.InternalRoute("POST /v1/payments", s.charge, contract.ServiceOrder)
	h.InternalRoute("POST /v1/payments/{id}/refund", s.refund, contract.ServiceOrder)
	h.Route("GET /v1/payments", s.byOrder)
	h.Route("GET /v1/payments/{id}", s.get)
}

type chargeBody struct {
	OrderID      string `json:"order_id"`
	AmountCents  int64  `json:"amount_cents"`
	PaymentToken string `json:"payment_token"`
}

func (s *HTTP) charge(w http.ResponseWriter, r *http.Request) error {
	key, err := service.IdempotencyKey(r, true, "charge only once")
	if err != nil {
		return err
	}
	req, err := parseCharge(w, r, key)
	if err != nil {
		return err
	}
	res, err := s.app.Charge(r.Context(), req)
	switch {
	case errors.Is(err, domain.ErrIdempotencyConflict):
		return problem.New(http.StatusUnprocessableEntity,
			"Idempotency-Key %q was already used for a different charge (payment %s)", key, res.Payment.PaymentID)
	case err != nil:
		return httpvalidation.Problem(err)
	}
	w.Header().Set("Location", "/v1/payments/"+res.Payment.PaymentID)
	switch res.Outcome {
	case app.Created:
		return service.WriteJSON(w, http.StatusCreated, res.Payment)
	case app.Replayed:
		w.Header().Set("Idempotent-Replayed", "true")
	}
	return service.WriteJSON(w, http.StatusOK, res.Payment)
}

// parseCharge reads the body of POST /v1/payments and checks it with the
// request's idempotency key. Its errors are problems: 400 naming the
// fields at fault, or what DecodeJSON refuses.
func parseCharge(w http.ResponseWriter, r *http.Request, key string) (domain.ChargeRequest, error) {
	var body chargeBody
	if err := service.DecodeJSON(w, r, &body); err != nil {
		return domain.ChargeRequest{}, err
	}
	req := domain.ChargeRequest{IdempotencyKey: key, OrderID: body.OrderID, AmountCents: body.AmountCents, PaymentToken: body.PaymentToken}
	return req, httpvalidation.Problem(req.Validate())
}

func (s *HTTP) refund(w http.ResponseWriter, r *http.Request) error {
	p, err := s.app.Refund(r.Context(), r.PathValue("id"))
	if err != nil {
		return httpvalidation.Problem(err)
	}
	return service.WriteJSON(w, http.StatusOK, p)
}

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	p, err := s.app.Payment(r.Context(), id)
	switch {
	case errors.Is(err, domain.ErrNotFound):
		return problem.New(http.StatusNotFound, "no payment %q", id)
	case err != nil:
		return err
	}
	return service.WriteJSON(w, http.StatusOK, p)
}

// List is the body of a list response.
type List struct {
	Items []domain.Payment `json:"items"`
}

func (s *HTTP) byOrder(w http.ResponseWriter, r *http.Request) error {
	orderID := r.URL.Query().Get("order_id")
	if orderID == "" {
		return problem.Invalid("the order_id query parameter is required: payments are listed per order",
			problem.FieldError{Field: "order_id", Reason: "required query parameter"})
	}
	items, err := s.app.ByOrder(r.Context(), orderID)
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, List{Items: items})
}
