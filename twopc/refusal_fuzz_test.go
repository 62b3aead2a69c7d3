package twopc

import (
	"database/sql"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzRefusalRoundTrip: a refusal comes back from the log's refusal
// column as it was recorded, but for invalid UTF-8, which JSON holds as
// U+FFFD; no refusal is NULL and comes back as none.
func FuzzRefusalRoundTrip(f *testing.F) {
	f.Add("east", "insufficient_stock", `{"warehouse":"east","sku":"TEA-001","available":1,"asked":5}`, true)
	f.Add("", "", "", true)
	f.Add("p", "c", "", false)
	f.Add("\xff", "é\u2028", "\x00<&>\"\\", true)
	f.Fuzz(func(t *testing.T, participant, code, detail string, refused bool) {
		var r *Refusal
		if refused {
			r = &Refusal{Participant: participant, Code: code, Detail: detail}
		}
		col, err := encodeRefusal(r)
		if err != nil {
			t.Fatalf("encodeRefusal(%+v): %v", r, err)
		}
		if col.Valid != refused {
			t.Fatalf("refusal %+v recorded as %+v", r, col)
		}
		back, err := decodeRefusal(col)
		if err != nil {
			t.Fatalf("refusal %+v recorded as %q does not decode: %v", r, col.String, err)
		}
		var want *Refusal
		if refused {
			utf8 := func(s string) string { return string([]rune(s)) }
			want = &Refusal{Participant: utf8(participant), Code: utf8(code), Detail: utf8(detail)}
		}
		if !reflect.DeepEqual(back, want) {
			t.Fatalf("refusal %+v recorded as %q read back as %+v", r, col.String, back)
		}
	})
}

// FuzzDecodeRefusal: whatever the refusal column holds, decodeRefusal
// returns what encoding/json makes of it, or an error quoting it and
// wrapping JSON's.
func FuzzDecodeRefusal(f *testing.F) {
	for _, seed := range []string{`{"participant":"east","code":"insufficient_stock","detail":"{}"}`, `{}`, `null`, ``,
		`[]`, `{"code":1}`, `{"code":"a"`, "\xff", `{"participant":"a","participant":"b"}`, `{"Code":"case","extra":true}`} {
		f.Add(seed, true)
	}
	f.Add("", false)
	f.Fuzz(func(t *testing.T, s string, valid bool) {
		r, err := decodeRefusal(sql.NullString{String: s, Valid: valid})
		if !valid {
			if r != nil || err != nil {
				t.Fatalf("NULL read as %+v, %v", r, err)
			}
			return
		}
		var want Refusal
		if werr := json.Unmarshal([]byte(s), &want); werr != nil {
			var syn *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if err == nil || r != nil || !strings.HasPrefix(err.Error(), "twopc: decode refusal "+strconv.Quote(s)) ||
				errors.As(werr, &syn) != errors.As(err, &syn) || errors.As(werr, &typ) != errors.As(err, &typ) {
				t.Fatalf("%q: %+v, error %v, JSON's %v", s, r, err, werr)
			}
			return
		}
		if err != nil || r == nil || *r != want {
			t.Fatalf("%q read as %+v, %v; want %+v", s, r, err, want)
		}
	})
}
