package usertext_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/fstest"
	"unicode/utf8"

	"github.com/trellis-go/trellis/internal/pgtest"
	"github.com/trellis-go/trellis/store"
	"github.com/trellis-go/trellis/usertext"
)

var (
	line     = usertext.Rule{Max: 10}
	lines    = usertext.Rule{Max: 30, Multiline: true}
	required = usertext.Rule{Max: 10, Required: true}
)

func TestCheck(t *testing.T) {
	cases := []struct {
		rule   usertext.Rule
		text   string
		want   error // nil: accepted
		offset int
		reason string
	}{
		{line, "", nil, 0, ""},
		{line, "Glass cup", nil, 0, ""},
		{line, "0123456789", nil, 0, ""},
		{line, "Ünïcødé ✓", nil, 0, ""},
		{line, "\U0001F469\u200D\U0001F469\u200D\U0001F467", nil, 0, ""}, // emoji joined by U+200D: 5 characters
		{line, "שלום\u200Fעולם", nil, 0, ""},                             // a right-to-left mark
		{line, "\uFEFF\u00AD\uE000\uFFFF", nil, 0, ""},                   // other format, private use, noncharacter
		{line, "0123456789a", usertext.ErrTooLong, 0, "must be at most 10 characters, not 11"},
		{line, "ééééééééééé", usertext.ErrTooLong, 0, "must be at most 10 characters, not 11"},
		{line, "a\x00b", usertext.ErrForbidden, 1, "must not hold control characters: U+0000 at character offset 1"},
		{line, "é\x1b[31m", usertext.ErrForbidden, 1, "must not hold control characters: U+001B at character offset 1"},
		{line, "a\x7f", usertext.ErrForbidden, 1, "must not hold control characters: U+007F at character offset 1"},
		{line, "a\u0085", usertext.ErrForbidden, 1, "must not hold control characters: U+0085 at character offset 1"},
		{line, "a\u009f", usertext.ErrForbidden, 1, "U+009F"},
		{line, "a\tb", usertext.ErrForbidden, 1, "must be one line, without tabs: U+0009 at character offset 1"},
		{line, "a\nb", usertext.ErrForbidden, 1, "must be one line, without tabs: U+000A"},
		{line, "a\r", usertext.ErrForbidden, 1, "U+000D"},
		{line, "a\u2028", usertext.ErrForbidden, 1, "must be one line"},
		{line, "abc\u202Egpj.exe", usertext.ErrForbidden, 3, "must not hold bidirectional formatting characters: U+202E at character offset 3"},
		{line, "\u202A", usertext.ErrForbidden, 0, "U+202A"},
		{line, "\u2066x\u2069", usertext.ErrForbidden, 0, "U+2066"},
		{line, "ok\u2069", usertext.ErrForbidden, 2, "U+2069"},
		{line, "a\uFFFDb", usertext.ErrForbidden, 1, "must be valid UTF-8: U+FFFD, the replacement character that invalid input becomes, at character offset 1"},
		{line, "é\xff", usertext.ErrInvalidUTF8, 2, "must be valid UTF-8: byte 0xff at offset 2 is not"},
		{line, "\xed\xa0\x80", usertext.ErrInvalidUTF8, 0, "byte 0xed at offset 0"}, // an encoded surrogate
		{line, "ab\xc3", usertext.ErrInvalidUTF8, 2, "byte 0xc3 at offset 2"},       // cut short
		{line, "\xff" + strings.Repeat("a", 20), usertext.ErrInvalidUTF8, 0, ""},    // what is wrong in it first
		{line, strings.Repeat("a", 20) + "\x00", usertext.ErrForbidden, 20, ""},
		{lines, "1 Tea Street\r\nLondon\tN1", nil, 0, ""},
		{lines, "a\u2028b\u2029", nil, 0, ""},
		{lines, "a\x00", usertext.ErrForbidden, 1, "must not hold control characters: U+0000"},
		{lines, "a\v", usertext.ErrForbidden, 1, "U+000B"},
		{lines, "a\u202E", usertext.ErrForbidden, 1, "bidirectional"},
		{required, "x", nil, 0, ""},
		{required, "", usertext.ErrRequired, 0, "is required: 1 to 10 characters, not only white space"},
		{required, " \u3000 ", usertext.ErrRequired, 0, "is required"},
		{required, "\x00", usertext.ErrForbidden, 0, ""},
		{usertext.Rule{}, "", nil, 0, ""},
		{usertext.Rule{}, "a", usertext.ErrTooLong, 0, "must be at most 0 characters, not 1"},
	}
	for _, c := range cases {
		err := c.rule.Check(c.text)
		if c.want == nil {
			if err != nil {
				t.Errorf("%+v %q: %v", c.rule, c.text, err)
			}
			continue
		}
		var e *usertext.Error
		if !errors.As(err, &e) || !errors.Is(err, c.want) {
			t.Errorf("%+v %q: %v, want %v", c.rule, c.text, err, c.want)
			continue
		}
		if e.Offset != c.offset || e.Rule != c.rule || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("%+v %q: %q at offset %d, want %q at %d", c.rule, c.text, err, e.Offset, c.reason, c.offset)
		}
	}
}

// FuzzCheck: whatever the text, Check accepts it only if it is valid UTF-8
// without NUL (so PostgreSQL can store it in a text column), without any
// character the rule forbids, within the limit and, when required, not
// blank; it refuses it with a *Error whose account of what is wrong and
// where is true.
func FuzzCheck(f *testing.F) {
	for _, seed := range []string{"", "Glass cup", "1 Tea Street\r\nLondon", "a\x00b", "\xff", "\xed\xa0\x80",
		"a\u202Eb", "\uFFFD", "\U0001F469\u200D\U0001F469\u200D\U0001F467", "\u0085", "\t", " ", strings.Repeat("é", 11)} {
		f.Add(seed, 10, false, false)
		f.Add(seed, 10, true, true)
	}
	f.Fuzz(func(t *testing.T, s string, max int, multiline, required bool) {
		rule := usertext.Rule{Max: max, Multiline: multiline, Required: required}
		err := rule.Check(s)
		chars := utf8.RuneCountInString(s)
		if err == nil {
			switch {
			case !utf8.ValidString(s):
				t.Fatalf("%q: accepted invalid UTF-8", s)
			case strings.IndexByte(s, 0) >= 0:
				t.Fatalf("%q: accepted NUL, which PostgreSQL text cannot hold", s)
			case chars > max:
				t.Fatalf("%q: accepted %d characters over a limit of %d", s, chars, max)
			case required && strings.TrimSpace(s) == "":
				t.Fatalf("%q: accepted blank text as required", s)
			}
			for _, c := range s {
				if forbidden(c, multiline) {
					t.Fatalf("%q: accepted %U (multiline %v)", s, c, multiline)
				}
			}
			return
		}
		var e *usertext.Error
		if !errors.As(err, &e) || e.Rule != rule || err.Error() == "" {
			t.Fatalf("%q: %v is not a *usertext.Error of the rule", s, err)
		}
		switch {
		case errors.Is(err, usertext.ErrInvalidUTF8):
			if c, size := utf8.DecodeRuneInString(s[e.Offset:]); !utf8.ValidString(s[:e.Offset]) || c != utf8.RuneError || size != 1 || s[e.Offset] != e.Byte {
				t.Fatalf("%q: says byte %d is the first not UTF-8", s, e.Offset)
			}
		case errors.Is(err, usertext.ErrForbidden):
			before, c := nthRune(s, e.Offset)
			if !utf8.ValidString(before) || c != e.Rune || !forbidden(c, multiline) {
				t.Fatalf("%q: says %U at character %d is forbidden", s, e.Rune, e.Offset)
			}
			for _, c := range before {
				if forbidden(c, multiline) {
					t.Fatalf("%q: %U is not the first forbidden character", s, e.Rune)
				}
			}
		case errors.Is(err, usertext.ErrTooLong):
			if e.Len != chars || chars <= max || !utf8.ValidString(s) {
				t.Fatalf("%q: says %d characters are too many for %d", s, e.Len, max)
			}
		case errors.Is(err, usertext.ErrRequired):
			if !required || strings.TrimSpace(s) != "" {
				t.Fatalf("%q: refused as missing", s)
			}
		default:
			t.Fatalf("%q: %v says nothing known", s, err)
		}
	})
}

// forbidden is the rule written out from its documentation.
func forbidden(c rune, multiline bool) bool {
	switch {
	case c == '\t' || c == '\n' || c == '\r' || c == 0x2028 || c == 0x2029:
		return !multiline
	case c <= 0x1F, c >= 0x7F && c <= 0x9F:
		return true
	case c >= 0x202A && c <= 0x202E, c >= 0x2066 && c <= 0x2069:
		return true
	}
	return c == 0xFFFD
}

// nthRune returns the text before the character at offset n and that
// character.
func nthRune(s string, n int) (string, rune) {
	i := 0
	for at, c := range s {
		if i == n {
			return s[:at], c
		}
		i++
	}
	return s, -1
}

// Text a rule accepts is stored and read back as it was on every backend,
// the most unusual included.
func TestAcceptedTextIsStored(t *testing.T) {
	texts := []string{"Glass cup", "1 Tea Street\r\nLondon\tN1", "a\u2028b\u2029", "\U0001F469\u200D\U0001F469\u200D\U0001F467", "שלום\u200Fעולם",
		"\uFEFF\u00AD\u200B", "\uE000\U000F0000", "\uFFFE\uFFFF\U0010FFFF", "\u0301", strings.Repeat("é", 500)}
	rule := usertext.Rule{Max: 500, Multiline: true}
	pgtest.Backends(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db, err := store.Open(ctx, store.Config{Service: "usertext", URL: url, DataDir: t.TempDir(),
			Migrations: fstest.MapFS{"0001_texts.sql": {Data: []byte("CREATE TABLE texts (n INTEGER PRIMARY KEY, body TEXT NOT NULL);")}}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for i, s := range texts {
			if err := rule.Check(s); err != nil {
				t.Fatalf("%q: %v", s, err)
			}
			if _, err := db.Writer().ExecContext(ctx, `INSERT INTO texts (n, body) VALUES ($1, $2)`, i, s); err != nil {
				t.Fatalf("store %q: %v", s, err)
			}
			var got string
			if err := db.Writer().QueryRowContext(ctx, `SELECT body FROM texts WHERE n = $1`, i).Scan(&got); err != nil {
				t.Fatalf("read %q: %v", s, err)
			}
			if got != s {
				t.Fatalf("stored %q, read back %q", s, got)
			}
		}
	})
}
