package eventstore_test

import (
	"errors"
	"math/big"
	"strconv"
	"strings"
	"testing"

	"github.com/trellis-go/trellis/eventstore"
)

// FuzzParseCheckpoint: ParseCheckpoint accepts exactly "key:position" and
// "position" of non-negative decimal integers that fit in 64 bits, and
// what it accepts prints back to text that parses to the same checkpoint;
// anything else is an error wrapping ErrInvalidOptions that quotes the
// text.
func FuzzParseCheckpoint(f *testing.F) {
	for _, seed := range []string{"0:0", "0:42", "42", "7331:12", "", ":", "a:1", "1:-1", "-0:0", "+1:+2", "1:2:3",
		"9223372036854775807:9223372036854775807", "9223372036854775808", "0x10:1", "1_000", " 1", "1:1\n", "٣"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cp, err := eventstore.ParseCheckpoint(s)
		var uc eventstore.Checkpoint
		uerr := uc.UnmarshalText([]byte(s))
		if (err == nil) != (uerr == nil) || uc != cp {
			t.Fatalf("%q: ParseCheckpoint %v, %v; UnmarshalText %v, %v", s, cp, err, uc, uerr)
		}

		keys, poss, two := strings.Cut(s, ":")
		if !two {
			keys, poss = "0", s
		}
		key, kok := nonNegative(keys)
		pos, pok := nonNegative(poss)
		if err != nil {
			if kok && pok {
				t.Fatalf("%q refused: %v", s, err)
			}
			if !errors.Is(err, eventstore.ErrInvalidOptions) || !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidOptions quoting the text", s, err)
			}
			if cp != (eventstore.Checkpoint{}) {
				t.Fatalf("%q refused with %v", s, cp)
			}
			return
		}
		if !kok || !pok || cp.OrderKey != key || cp.Position != pos {
			t.Fatalf("%q read as %+v", s, cp)
		}
		text, err := cp.MarshalText()
		if err != nil || string(text) != cp.String() {
			t.Fatalf("%+v: MarshalText %q, %v; String %q", cp, text, err, cp.String())
		}
		again, err := eventstore.ParseCheckpoint(string(text))
		if err != nil || again != cp {
			t.Fatalf("%q read as %+v, printed as %q, read back as %+v, %v", s, cp, text, again, err)
		}
		if cp.IsZero() != (cp.Compare(eventstore.Checkpoint{}) == 0) {
			t.Fatalf("%+v: IsZero %v, Compare with zero %d", cp, cp.IsZero(), cp.Compare(eventstore.Checkpoint{}))
		}
	})
}

// nonNegative parses s as ParseCheckpoint should: digits, an optional
// sign, at most math.MaxInt64.
func nonNegative(s string) (int64, bool) {
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "+"), "-")
	if digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	n, _ := new(big.Int).SetString(s, 10)
	if n.Sign() < 0 || !n.IsInt64() {
		return 0, false
	}
	return n.Int64(), true
}

// FuzzCheckpointOrder: Compare orders checkpoints by order key, then
// position; and a checkpoint's text, when it has one, reads back as the
// same checkpoint.
func FuzzCheckpointOrder(f *testing.F) {
	f.Add(int64(1), int64(9), int64(2), int64(3))
	f.Add(int64(0), int64(0), int64(0), int64(0))
	f.Add(int64(7), int64(-1), int64(7), int64(1))
	f.Add(int64(-9223372036854775808), int64(0), int64(9223372036854775807), int64(0))
	f.Fuzz(func(t *testing.T, k1, p1, k2, p2 int64) {
		a, b := eventstore.Checkpoint{OrderKey: k1, Position: p1}, eventstore.Checkpoint{OrderKey: k2, Position: p2}
		want := 0
		switch {
		case k1 < k2 || (k1 == k2 && p1 < p2):
			want = -1
		case k1 > k2 || (k1 == k2 && p1 > p2):
			want = 1
		}
		if a.Compare(b) != want || b.Compare(a) != -want || a.Compare(a) != 0 || (want == 0) != (a == b) {
			t.Fatalf("%v.Compare(%v) = %d, reversed %d, want %d", a, b, a.Compare(b), b.Compare(a), want)
		}
		for _, c := range []eventstore.Checkpoint{a, b} {
			text, err := c.MarshalText()
			if c.OrderKey < 0 || c.Position < 0 {
				if err == nil {
					t.Fatalf("%+v has text %q, which does not read back", c, text)
				}
				continue
			}
			var back eventstore.Checkpoint
			if err != nil || back.UnmarshalText(text) != nil || back != c {
				t.Fatalf("%+v: text %q (%v) read back as %+v", c, text, err, back)
			}
		}
	})
}
