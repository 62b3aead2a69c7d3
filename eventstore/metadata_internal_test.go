package eventstore

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// TestEncodeMetadataMatchesJSON checks that encodeMetadata returns what
// json.Marshal returns, byte for byte.
func TestEncodeMetadataMatchesJSON(t *testing.T) {
	for _, m := range []Metadata{
		{"a": "b"},
		{"correlation_id": "req-42", "causation_id": "c", "z": "", "": "empty key"},
		{"html": "<a href=\"x\">&amp;</a>", "ctl": "tab\there\nnl\x01", "bs": `back\slash`},
		{"utf8": "héllo wörld ☃", "bad": "\xff\xfe", "ls": "a\u2028b\u2029c", "del": "\x7f"},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeMetadata(m)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("encodeMetadata(%v) = %s, want %s", m, got, want)
		}
	}
}

// FuzzMetadataRoundTrip: metadata that Append accepts (no NUL) is encoded
// as json.Marshal encodes it and reads back the same, but for invalid
// UTF-8, which JSON holds as U+FFFD.
func FuzzMetadataRoundTrip(f *testing.F) {
	f.Add("correlation_id", "req-42", "causation_id", "c", "", "")
	f.Add("html", "<a href=\"x\">&amp;</a>", "ctl", "tab\there\nnl\x01", "bs", `back\slash`)
	f.Add("utf8", "héllo wörld ☃", "bad", "\xff\xfe", "ls", "a\u2028b\u2029c")
	f.Add("\xff", "a", "\xfe", "b", "\ufffd", "c")
	f.Add("nul", "\x00", "", "", "", "")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		m := Metadata{k1: v1, k2: v2, k3: v3}
		for k, v := range m {
			if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
				return // Append refuses it
			}
		}
		enc, err := encodeMetadata(m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(m)
		if err != nil || enc != string(want) {
			t.Fatalf("encodeMetadata(%q) = %s, json.Marshal %s (%v)", m, enc, want, err)
		}
		back, err := decodeMetadata(uuid.UUID{}, []byte(enc))
		if err != nil {
			t.Fatalf("%s does not decode: %v", enc, err)
		}
		// JSON turns each invalid byte into U+FFFD; of keys then equal, the
		// last in byte order wins.
		coerced := Metadata{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			coerced[string([]rune(k))] = string([]rune(m[k]))
		}
		if !maps.Equal(back, coerced) {
			t.Fatalf("%q encoded as %s read back as %q", m, enc, back)
		}
	})
}

// FuzzDecodeMetadata: whatever the metadata column holds, decodeMetadata
// returns what encoding/json makes of it, or an error naming the event and
// wrapping JSON's; and what it returns encodes to metadata that reads
// back the same.
func FuzzDecodeMetadata(f *testing.F) {
	for _, seed := range []string{``, `{}`, `null`, `{"correlation_id":"req-42"}`, `{"a":"b","a":"c"}`, `{"a":1}`,
		`[]`, `{"a":"\u0000"}`, `{"a":"\ud800"}`, `{"a":"b"`, `"x"`, "\xff", `{"a":null}`} {
		f.Add([]byte(seed))
	}
	id := uuid.MustParse("0190d1e2-7f00-7000-8000-000000000001")
	f.Fuzz(func(t *testing.T, meta []byte) {
		m, err := decodeMetadata(id, meta)
		if len(meta) == 0 {
			if m != nil || err != nil {
				t.Fatalf("no metadata read as %q, %v", m, err)
			}
			return
		}
		var want Metadata
		if werr := json.Unmarshal(meta, &want); werr != nil {
			var syn *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if err == nil || m != nil || !strings.Contains(err.Error(), id.String()) ||
				errors.As(werr, &syn) != errors.As(err, &syn) || errors.As(werr, &typ) != errors.As(err, &typ) {
				t.Fatalf("%q: error %v, JSON's %v", meta, err, werr)
			}
			return
		}
		if err != nil || !maps.Equal(m, want) {
			t.Fatalf("%q read as %q, %v; want %q", meta, m, err, want)
		}
		enc, err := encodeMetadata(m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeMetadata(id, []byte(enc))
		if err != nil || !maps.Equal(back, m) {
			t.Fatalf("%q read as %q, encoded as %s, read back as %q, %v", meta, m, enc, back, err)
		}
	})
}
