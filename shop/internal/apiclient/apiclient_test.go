package apiclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/internal/apiclient"
)

type item struct {
	ID  string `json:"id"`
	Key string `json:"key,omitempty"`
}

// server answers /items with the request's body and key, /refused with a
// 409 and /missing with a 404, as the shop's services do.
func server(t *testing.T) apiclient.Client {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) {
		var in item
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&in) != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		in.Key = r.Header.Get("Idempotency-Key")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(in)
	})
	mux.HandleFunc("POST /refused", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusConflict, "item %q was cancelled", "i-1"))
	})
	mux.HandleFunc("GET /missing", func(w http.ResponseWriter, r *http.Request) {
		problem.Write(w, r, problem.New(http.StatusNotFound, "no item"))
	})
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(item{ID: r.PathValue("id")})
	})
	mux.HandleFunc("GET /lists/{n}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.PathValue("n") == "0" {
			_, _ = w.Write([]byte(`{"items":null}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string][]item{"items": {{ID: "a"}, {ID: "b"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return apiclient.New(srv.Client(), "things", srv.URL+"/")
}

func TestSend(t *testing.T) {
	c := server(t)
	ctx := context.Background()
	if got, err := apiclient.Send[item](ctx, c, "", http.MethodPost, "/items", "k-1", item{ID: "i-1"}); err != nil || got != (item{ID: "i-1", Key: "k-1"}) {
		t.Fatalf("POST /items: %+v, %v", got, err)
	}

	got, err := apiclient.Send[item](ctx, c, "cancel i-1", http.MethodPost, "/refused", "k-2", nil)
	var d *problem.Details
	if !errors.Is(err, contract.ErrRefused) || !errors.As(err, &d) || d.Status != http.StatusConflict || d.Detail != `item "i-1" was cancelled` ||
		got != (item{}) {
		t.Fatalf("409: %+v, %v, want a problem matching contract.ErrRefused", got, err)
	}
	if want := `things: cancel i-1: 409 Conflict: item "i-1" was cancelled: refused`; err.Error() != want {
		t.Errorf("the error reads %q, want %q", err, want)
	}

	_, err = apiclient.Send[item](ctx, c, "", http.MethodGet, "/missing", "", nil)
	if !apiclient.IsStatus(err, http.StatusNotFound) || errors.Is(err, contract.ErrRefused) {
		t.Fatalf("404: %v", err)
	}
	if want := "things: GET /missing: 404 Not Found: no item"; err.Error() != want {
		t.Errorf("the error reads %q, want %q", err, want)
	}
}

func TestGetAndList(t *testing.T) {
	c := server(t)
	ctx := context.Background()
	if got, found, err := apiclient.Get[item](ctx, c, "", "/items/i-7"); err != nil || !found || got.ID != "i-7" {
		t.Fatalf("Get /items/i-7: %+v, %v, %v", got, found, err)
	}
	if got, found, err := apiclient.Get[item](ctx, c, "", "/missing"); err != nil || found || got != (item{}) {
		t.Fatalf("Get of a 404: %+v, %v, %v; want not found and no error", got, found, err)
	}
	if _, _, err := apiclient.Get[item](ctx, c, "", "/refused"); err == nil {
		t.Fatal("Get of a path that is not there for GET: no error")
	}
	if items, err := apiclient.List[item](ctx, c, "", "/lists/2"); err != nil || len(items) != 2 || items[1].ID != "b" {
		t.Fatalf("List: %+v, %v", items, err)
	}
	if items, err := apiclient.List[item](ctx, c, "", "/lists/0"); err != nil || items == nil || len(items) != 0 {
		t.Fatalf("List of none: %#v, %v; want an empty slice", items, err)
	}
}
