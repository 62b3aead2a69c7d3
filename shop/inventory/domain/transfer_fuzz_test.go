package domain_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/shop/inventory/domain"
)

// FuzzDecodeStockMove: whatever a participant's payload holds,
// DecodeStockMove returns a move of a valid sku by 1 to MaxTransferQty
// units either way, which Payload encodes back to a payload of the same
// move, or an error: JSON's, or ErrInvalidStockMove for JSON of anything
// else. A move a transfer makes always decodes.
func FuzzDecodeStockMove(f *testing.F) {
	for _, seed := range []string{`{"sku":"MUG-001","delta":-3}`, `{"sku":"MUG-001","delta":3}`, `{"sku":"MUG-001","delta":1000000}`,
		`{"sku":"MUG-001","delta":-1000001}`, `{"sku":"MUG-001","delta":0}`, `{"sku":"","delta":1}`, `{"sku":"a b","delta":1}`,
		`{"sku":"MUG-001","delta":-9223372036854775808}`, `{"sku":"MUG-001","delta":1.5}`, `{}`, `null`, ``, `[]`, `{"SKU":"x","Delta":1}`,
		`{"sku":"MUG-001","delta":2,"delta":-2}`, "\xff"} {
		f.Add([]byte(seed), "", int64(0))
	}
	f.Add([]byte(nil), "TEA-001", int64(5))
	f.Add([]byte(nil), "TEA-001", int64(-domain.MaxTransferQty))
	f.Fuzz(func(t *testing.T, p []byte, sku string, qty int64) {
		if sku != "" && domain.ValidSKU(sku) && qty != 0 && qty >= -domain.MaxTransferQty && qty <= domain.MaxTransferQty {
			// A transfer's own move.
			mv := domain.StockMove{SKU: sku, Delta: qty}
			back, err := domain.DecodeStockMove(mv.Payload())
			if err != nil || back != mv {
				t.Fatalf("move %+v read back as %+v, %v", mv, back, err)
			}
		}
		m, err := domain.DecodeStockMove(p)
		var raw domain.StockMove
		jerr := json.Unmarshal(p, &raw)
		if err != nil {
			if m != (domain.StockMove{}) {
				t.Fatalf("%q refused (%v) with a move %+v", p, err, m)
			}
			if jerr == nil && !errors.Is(err, domain.ErrInvalidStockMove) {
				t.Fatalf("%q: error %v is not ErrInvalidStockMove", p, err)
			}
			if jerr != nil && (errors.Is(err, domain.ErrInvalidStockMove) || !wraps(err, jerr)) {
				t.Fatalf("%q: error %v, JSON's %v", p, err, jerr)
			}
			if jerr == nil && domain.ValidSKU(raw.SKU) && raw.Delta != 0 && raw.Delta >= -domain.MaxTransferQty && raw.Delta <= domain.MaxTransferQty {
				t.Fatalf("%q: move %+v refused: %v", p, raw, err)
			}
			return
		}
		if jerr != nil || m != raw {
			t.Fatalf("%q read as %+v; JSON makes %+v, %v", p, m, raw, jerr)
		}
		if !domain.ValidSKU(m.SKU) || m.Delta == 0 || m.Delta < -domain.MaxTransferQty || m.Delta > domain.MaxTransferQty {
			t.Fatalf("%q: move %+v accepted", p, m)
		}
		if back, err := domain.DecodeStockMove(m.Payload()); err != nil || back != m {
			t.Fatalf("%+v encoded as %s read back as %+v, %v", m, m.Payload(), back, err)
		}
	})
}

// FuzzDecodeInsufficientStock: the refusal a transfer's coordinator
// records comes back from its detail as it was, but for invalid UTF-8
// (JSON holds U+FFFD); a detail that is not JSON of it is an error quoting
// the detail and wrapping JSON's.
func FuzzDecodeInsufficientStock(f *testing.F) {
	f.Add("east", "TEA-001", int64(1), int64(5), "")
	f.Add("", "", int64(0), int64(0), `{}`)
	f.Add("\xff", "é", int64(-9223372036854775808), int64(9223372036854775807), `null`)
	for _, seed := range []string{`{"warehouse":"west","sku":"MUG-001","available":0,"asked":1}`, `{"available":"1"}`, `[]`, ``,
		`{"asked":1e3}`, `{"sku":"a"`, "\xff"} {
		f.Add("", "", int64(0), int64(0), seed)
	}
	f.Fuzz(func(t *testing.T, warehouse, sku string, available, asked int64, detail string) {
		e := &domain.InsufficientStock{Warehouse: warehouse, SKU: sku, Available: available, Asked: asked}
		code, d := e.Refusal()
		if code != domain.RefusalInsufficientStock {
			t.Fatalf("code %q", code)
		}
		back, err := domain.DecodeInsufficientStock(d)
		utf8 := func(s string) string { return string([]rune(s)) }
		want := domain.InsufficientStock{Warehouse: utf8(warehouse), SKU: utf8(sku), Available: available, Asked: asked}
		if err != nil || back == nil || *back != want || back.Error() != want.Error() {
			t.Fatalf("%+v recorded as %s read back as %+v, %v", e, d, back, err)
		}

		got, err := domain.DecodeInsufficientStock(detail)
		var raw domain.InsufficientStock
		if jerr := json.Unmarshal([]byte(detail), &raw); jerr != nil {
			if got != nil || err == nil || !wraps(err, jerr) || !strings.Contains(err.Error(), "insufficient stock refusal") {
				t.Fatalf("%q read as %+v, %v; JSON's error %v", detail, got, err, jerr)
			}
			return
		}
		if err != nil || got == nil || *got != raw {
			t.Fatalf("%q read as %+v, %v; want %+v", detail, got, err, raw)
		}
	})
}

// wraps reports whether err wraps an error of encoding/json of the same
// kind as jerr, with the same message.
func wraps(err, jerr error) bool {
	var syn, jsyn *json.SyntaxError
	var typ, jtyp *json.UnmarshalTypeError
	return errors.As(err, &syn) == errors.As(jerr, &jsyn) && errors.As(err, &typ) == errors.As(jerr, &jtyp) &&
		strings.Contains(err.Error(), jerr.Error())
}
