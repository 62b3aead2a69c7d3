package ports

import (
	"errors"
	"net/http"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/validation"
	"github.com/trellis-go/trellis/shop/inventory/app"
	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// ReservationsHTTP serves the reservation API: hold stock for an order,
// then commit (sell) or release it.
type ReservationsHTTP struct{ app *app.Reservations }

// RegisterReservations adds the reservation routes to h.
func RegisterReservations(h *service.Host, a *app.Reservations) {
	s := &ReservationsHTTP{app: a}
	h.InternalRoute("POST /v1/reservations", s.reserve, contract.ServiceOrder)
	h.InternalRoute("GET /v1/reservations/{id}", s.get, contract.ServiceOrder)
	h.InternalRoute("POST /v1/reservations/{id}/commit", s.commit, contract.ServiceOrder)
	h.InternalRoute("POST /v1/reservations/{id}/release", s.release, contract.ServiceOrder)
}

type reserveRequest struct {
	ReservationID string          `json:"reservation_id"`
	Items         []contract.Item `json:"items"`
}

func (s *ReservationsHTTP) reserve(w http.ResponseWriter, r *http.Request) error {
	body, err := parseReservation(w, r)
	if err != nil {
		return err
	}
	res, created, err := s.app.Hold(r.Context(), body.ReservationID, body.Items)
	if err != nil {
		return reservationProblem(err, body.ReservationID)
	}
	w.Header().Set("Location", "/v1/reservations/"+res.ReservationID)
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
		return service.WriteJSON(w, http.StatusOK, res)
	}
	return service.WriteJSON(w, http.StatusCreated, res)
}

// parseReservation reads and checks the body of POST /v1/reservations.
// Its errors are problems: 400 naming the fields at fault, or what
// DecodeJSON refuses.
func parseReservation(w http.ResponseWriter, r *http.Request) (reserveRequest, error) {
	var body reserveRequest
	if err := service.DecodeJSON(w, r, &body); err != nil {
		return body, err
	}
	if err := domain.ValidateReservation(body.ReservationID, body.Items); err != nil {
		return body, reservationProblem(err, body.ReservationID)
	}
	return body, nil
}

func (s *ReservationsHTTP) get(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	res, err := s.app.Reservation(r.Context(), id)
	if err != nil {
		return reservationProblem(err, id)
	}
	return service.WriteJSON(w, http.StatusOK, res)
}

func (s *ReservationsHTTP) commit(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	res, err := s.app.Commit(r.Context(), id)
	if err != nil {
		return reservationProblem(err, id)
	}
	return service.WriteJSON(w, http.StatusOK, res)
}

func (s *ReservationsHTTP) release(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	res, err := s.app.Release(r.Context(), id)
	if err != nil {
		return reservationProblem(err, id)
	}
	return service.WriteJSON(w, http.StatusOK, res)
}

// reservationProblem turns the use cases' errors into problems: bad input
// 400, unknown reservation 404, refusals 409 naming the sku or the
// reservation; anything else stays an internal error.
func reservationProblem(err error, id string) error {
	var invalid *validation.Error
	var short *domain.ShortError
	switch {
	case errors.As(err, &invalid):
		return problem.InvalidFields(invalid.Error(), invalid.Fields)
	case errors.As(err, &short):
		if short.Unknown {
			return problem.New(http.StatusConflict, "cannot hold sku %q: it has no stock (available 0, asked %d)", short.SKU, short.Asked)
		}
		return problem.New(http.StatusConflict, "cannot hold sku %q: available %d, asked %d", short.SKU, short.Available, short.Asked)
	case errors.Is(err, domain.ErrReleased):
		return problem.New(http.StatusConflict, "reservation %q was released", id)
	case errors.Is(err, domain.ErrItemsDiffer):
		return problem.New(http.StatusConflict, "reservation %q already exists with other items", id)
	case errors.Is(err, domain.ErrNoReservation):
		return problem.New(http.StatusNotFound, "no reservation %q", id)
	}
	return err
}
