// Package ports exposes the catalog over HTTP, as the shop's contract gives
// it.
package ports

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop/catalog/app"
	"github.com/trellis-go/trellis/shop/catalog/domain"
	"github.com/trellis-go/trellis/shop/internal/validation/httpvalidation"
)

// HTTP serves the catalog API.
type HTTP struct{ app *app.Catalog }

// Register adds the catalog routes to h.
func Register(h *service.Host, a *app.Catalog) {
	s := &HTTP{app: a}
	h.Route("GET /v1/products", s.list)
	h.Route("GET /v1/products/{sku}", s.get)
	h.Route("POST /v1/products", s.create)
	h.Route("GET /v1/featured", s.featured)
}

type featuredList struct {
	Items []app.FeaturedProduct `json:"items"`
}

// featured lists the featured products, by rank.
func (s *HTTP) featured(w http.ResponseWriter, r *http.Request) error {
	items, err := s.app.Featured(r.Context())
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, featuredList{Items: items})
}

type productList struct {
	Items []domain.Product `json:"items"`
}

func (s *HTTP) list(w http.ResponseWriter, r *http.Request) error {
	text, limit, err := parseSearch(r.URL.Query())
	if err != nil {
		return err
	}
	items, err := s.app.Search(r.Context(), text, limit)
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, productList{Items: items})
}

// parseSearch reads and checks the query of GET /v1/products: the search
// text q and the limit (0 when not given). Its errors are 400 problems
// naming the parameter.
func parseSearch(q url.Values) (text string, limit int, err error) {
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > app.MaxLimit {
			return "", 0, problem.Invalid("limit must be an integer from 1 to "+strconv.Itoa(app.MaxLimit),
				problem.FieldError{Field: "limit", Reason: "must be an integer from 1 to " + strconv.Itoa(app.MaxLimit)})
		}
		limit = n
	}
	text = q.Get("q")
	if err := domain.QueryText.Check(text); err != nil {
		return "", 0, problem.Invalid("q "+err.Error(), problem.FieldError{Field: "q", Reason: err.Error()})
	}
	return text, limit, nil
}

func (s *HTTP) get(w http.ResponseWriter, r *http.Request) error {
	sku := r.PathValue("sku")
	p, err := s.app.Product(r.Context(), sku)
	if errors.Is(err, domain.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no product with sku %q", sku)
	}
	if errors.Is(err, domain.ErrOtherShard) {
		return misdirected(err)
	}
	if err != nil {
		return err
	}
	return service.WriteJSON(w, http.StatusOK, p)
}

func (s *HTTP) create(w http.ResponseWriter, r *http.Request) error {
	p, err := parseProduct(w, r)
	if err != nil {
		return err
	}
	created, err := s.app.Create(r.Context(), p)
	switch {
	case errors.Is(err, domain.ErrExists):
		return problem.New(http.StatusConflict, "a product with sku %q exists already", p.SKU)
	case errors.Is(err, domain.ErrOtherShard):
		return misdirected(err)
	case err != nil:
		return httpvalidation.Problem(err)
	}
	w.Header().Set("Location", "/v1/products/"+created.SKU)
	return service.WriteJSON(w, http.StatusCreated, created)
}

// misdirected is the answer of a shard asked for a sku of another: 421,
// which says the request reached a server that cannot answer it, as a
// stale shard map in the caller's ambassador would send it.
func misdirected(err error) error {
	return problem.New(http.StatusMisdirectedRequest, "%s: the caller's shard map differs from the catalog's", strings.TrimSuffix(err.Error(), ": "+domain.ErrOtherShard.Error()))
}

// parseProduct reads and checks the body of POST /v1/products. Its errors
// are problems: 400 naming the fields at fault, or what DecodeJSON refuses.
func parseProduct(w http.ResponseWriter, r *http.Request) (domain.Product, error) {
	var p domain.Product
	if err := service.DecodeJSON(w, r, &p); err != nil {
		return p, err
	}
	return p, httpvalidation.Problem(p.Validate())
}
