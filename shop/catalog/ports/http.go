// Package ports exposes the catalog over HTTP, as the shop's contract gives
// it.
package ports

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog/app"
	"github.com/trellis-go/trellis/shop/catalog/domain"
)

// HTTP serves the catalog API.
type HTTP struct{ app *app.Catalog }

// Register adds the catalog routes to h.
func Register(h *service.Host, a *app.Catalog) {
	s := &HTTP{app: a}
	h.Route("GET /v1/products", s.list)
	h.Route("GET /v1/products/{sku}", s.get)
	h.Route("POST /v1/products", s.create)
}

type productList struct {
	Items []domain.Product `json:"items"`
}

func (s *HTTP) list(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > app.MaxLimit {
			return problem.Invalid("limit must be an integer from 1 to "+strconv.Itoa(app.MaxLimit),
				problem.FieldError{Field: "limit", Reason: "must be an integer from 1 to " + strconv.Itoa(app.MaxLimit)})
		}
		limit = n
	}
	text := q.Get("q")
	if n := utf8.RuneCountInString(text); n > app.MaxQuery {
		reason := fmt.Sprintf("must be at most %d characters, not %d", app.MaxQuery, n)
		return problem.Invalid("q "+reason, problem.FieldError{Field: "q", Reason: reason})
	}
	items, err := s.app.Search(r.Context(), text, limit)
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, productList{Items: items})
}

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	sku := r.PathValue("sku")
	p, err := s.app.Product(r.Context(), sku)
	if errors.Is(err, domain.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no product with sku %q", sku)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, p)
}

func (s *HTTP) create(w http.ResponseWriter, r *http.Request) error {
	var p domain.Product
	if err := service.DecodeJSON(w, r, &p); err != nil {
		return err
	}
	created, err := s.app.Create(r.Context(), p)
	var invalid *domain.ValidationError
	switch {
	case errors.As(err, &invalid):
		fields := make([]problem.FieldError, len(invalid.Fields))
		for i, f := range invalid.Fields {
			fields[i] = problem.FieldError{Field: f.Field, Reason: f.Reason}
		}
		return problem.Invalid(invalid.Error(), fields...)
	case errors.Is(err, domain.ErrExists):
		return problem.New(http.StatusConflict, "a product with sku %q exists already", p.SKU)
	case err != nil:
		return err
	}
	w.Header().Set("Location", "/v1/products/"+created.SKU)
	return service.WriteJSON(w, http.StatusCreated, created)
}
