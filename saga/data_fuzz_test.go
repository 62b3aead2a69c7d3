package saga

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// fuzzOrder is saga data of the kinds of fields sagas keep: the shop's
// place-order saga's, with a map and a pointer besides.
type fuzzOrder struct {
	OrderID string `json:"order_id"`
	Items   []struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	} `json:"items"`
	TotalCents      int64             `json:"total_cents"`
	PaymentToken    string            `json:"payment_token"`
	ShippingAddress string            `json:"shipping_address"`
	PaymentID       string            `json:"payment_id,omitempty"`
	Attempts        map[string]int    `json:"attempts,omitempty"`
	Refund          *struct{ N uint } `json:"refund,omitempty"`
}

// FuzzDecodeData: whatever a saga's log holds as its data, decodeData
// returns what encoding/json makes of it, or an error naming the saga and
// the type and wrapping JSON's; and data that decodes is a fixed point of
// the saga's save and resume: encoded, decoded and encoded again, it is
// saved the same.
func FuzzDecodeData(f *testing.F) {
	for _, seed := range []string{
		`{"order_id":"o-1","items":[{"sku":"TEA-001","qty":2}],"total_cents":1299,"payment_token":"tok","shipping_address":"1 Main St"}`,
		`{"order_id":"o-1","payment_id":"p-1","attempts":{"reserve":2},"refund":{"N":3}}`,
		`null`, `{}`, ``, `[]`, `"x"`, `{"total_cents":1e3}`, `{"total_cents":9223372036854775808}`, `{"items":[{"qty":"2"}]}`,
		`{"refund":{"N":-1}}`, `{"order_id":"\ud800"}`, `{"ORDER_ID":"case"}`, `{"order_id":"a","order_id":"b"}`, `{} {}`, "\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeData[fuzzOrder]("place-order", data)
		var want fuzzOrder
		if werr := json.Unmarshal(data, &want); werr != nil {
			var syn *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if err == nil || !strings.Contains(err.Error(), `saga "place-order"`) || !strings.Contains(err.Error(), "saga.fuzzOrder") ||
				errors.As(werr, &syn) != errors.As(err, &syn) || errors.As(werr, &typ) != errors.As(err, &typ) {
				t.Fatalf("%q: error %v, JSON's %v", data, err, werr)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(v, want) {
			t.Fatalf("%q read as %+v, %v; want %+v", data, v, err, want)
		}
		saved, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%+v does not encode: %v", v, err)
		}
		// Resumed, the saga saves the same again (nil and empty maps and
		// slices aside, it is the same value).
		resumed, err := decodeData[fuzzOrder]("place-order", saved)
		if err != nil {
			t.Fatalf("%+v saved as %s does not resume: %v", v, saved, err)
		}
		if again, err := json.Marshal(resumed); err != nil || string(again) != string(saved) {
			t.Fatalf("%+v saved as %s resumed as %+v, saved again as %s (%v)", v, saved, resumed, again, err)
		}
	})
}
