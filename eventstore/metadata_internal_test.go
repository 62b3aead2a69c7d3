package eventstore

import (
	"encoding/json"
	"testing"
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
