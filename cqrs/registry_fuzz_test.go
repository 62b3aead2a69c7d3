package cqrs_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/cqrs"
	"github.com/trellis-go/trellis/eventstore"
)

type fuzzPlaced struct {
	OrderID string `json:"order_id"`
	Items   []struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	} `json:"items"`
	TotalCents int64 `json:"total_cents"`
}

type fuzzCancelled struct {
	OrderID string `json:"order_id"`
	Reason  string `json:"reason,omitempty"`
}

// FuzzRegistryDecode: whatever a recorded event holds, Decode returns a
// value of the Go type registered for its type, exactly as encoding/json
// decodes the data, which Encode turns back into an event that decodes
// the same; or ErrUnknownEvent for a type not registered; or an error
// naming the event and wrapping JSON's.
func FuzzRegistryDecode(f *testing.F) {
	for _, seed := range []string{`{"order_id":"o-1","items":[{"sku":"TEA-001","qty":2}],"total_cents":1299}`, `{}`, `null`, ``,
		`[]`, `{"total_cents":"1"}`, `{"order_id":"o-1"`, `{"reason":1}`, "\xff", `{"order_id":"\ud800"}`} {
		f.Add("OrderPlaced", []byte(seed))
		f.Add("OrderCancelled", []byte(seed))
	}
	f.Add("OrderShipped", []byte(`{}`))
	r := cqrs.NewRegistry()
	cqrs.Register[fuzzPlaced](r, "OrderPlaced")
	cqrs.Register[fuzzCancelled](r, "OrderCancelled")
	types := map[string]reflect.Type{"OrderPlaced": reflect.TypeFor[fuzzPlaced](), "OrderCancelled": reflect.TypeFor[fuzzCancelled]()}
	id := uuid.MustParse("0190d1e2-7f00-7000-8000-000000000001")
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		e := eventstore.Event{ID: id, Stream: "order-o-1", Version: 1, Type: typ, Data: data}
		v, err := r.Decode(e)
		rt, known := types[typ]
		if !known {
			if v != nil || !errors.Is(err, cqrs.ErrUnknownEvent) {
				t.Fatalf("type %q: %v, %v", typ, v, err)
			}
			return
		}
		want := reflect.New(rt)
		if werr := json.Unmarshal(data, want.Interface()); werr != nil {
			var syn *json.SyntaxError
			var ute *json.UnmarshalTypeError
			if v != nil || err == nil || errors.Is(err, cqrs.ErrUnknownEvent) ||
				!strings.Contains(err.Error(), typ) || !strings.Contains(err.Error(), id.String()) || !strings.Contains(err.Error(), e.Stream) ||
				errors.As(werr, &syn) != errors.As(err, &syn) || errors.As(werr, &ute) != errors.As(err, &ute) {
				t.Fatalf("%s %q: %v, error %v; JSON's %v", typ, data, v, err, werr)
			}
			return
		}
		if err != nil || reflect.TypeOf(v) != rt || !reflect.DeepEqual(v, want.Elem().Interface()) {
			t.Fatalf("%s %q read as %#v, %v; want %#v", typ, data, v, err, want.Elem().Interface())
		}
		enc, err := r.Encode(v, nil)
		if err != nil || enc.Type != typ {
			t.Fatalf("%#v encoded as %+v, %v", v, enc, err)
		}
		back, err := r.Decode(eventstore.Event{ID: id, Stream: e.Stream, Type: enc.Type, Data: enc.Data})
		if err != nil || !reflect.DeepEqual(back, v) {
			t.Fatalf("%#v encoded as %s read back as %#v, %v", v, enc.Data, back, err)
		}
	})
}

func TestRegistryNames(t *testing.T) {
	r := cqrs.NewRegistry()
	cqrs.Register[fuzzPlaced](r, "OrderPlaced")
	cqrs.Register[fuzzCancelled](r, "OrderCancelled")
	if got := r.Names(); !reflect.DeepEqual(got, []string{"OrderCancelled", "OrderPlaced"}) {
		t.Fatalf("Names() = %v", got)
	}
}
