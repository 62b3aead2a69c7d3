// Package usertext is the one rule for text that users send: names,
// descriptions, addresses, reasons, search queries. A service checks every
// field of user text with a Rule before it acts on it, so what one service
// accepts, passes on or stores, every other service and every backend
// (SQLite, PostgreSQL) can store and show as it was sent.
//
// Text that follows a rule:
//
//   - is valid UTF-8. PostgreSQL refuses anything else, and text is
//     compared, searched and shown by character;
//   - holds no control character (C0, DEL, C1: U+0000–U+001F and
//     U+007F–U+009F), except tab, line feed and carriage return in a
//     field that allows several lines. PostgreSQL cannot store U+0000 in
//     text at all; the others make logs, terminals and pages show what is
//     not there;
//   - holds no explicit bidirectional formatting character (the
//     embeddings and overrides U+202A–U+202E, the isolates U+2066–U+2069),
//     which reorder how the text around them is shown, so that what a
//     reader sees differs from what is stored. The marks U+200E, U+200F
//     and U+061C stay allowed: right-to-left text needs them and they
//     reorder nothing beyond themselves;
//   - holds no line or paragraph separator (U+2028, U+2029) unless the
//     field allows several lines;
//   - holds no U+FFFD, the replacement character. It is what invalid
//     UTF-8 becomes once decoded: encoding/json puts it in place of
//     invalid bytes and lone surrogate escapes in a JSON string, so
//     refusing it is what refuses invalid UTF-8 sent in a JSON body, naming
//     the field. No name, address or reason needs it;
//   - is at most Max characters long, counted as Unicode code points (what
//     utf8.RuneCountInString counts), not bytes.
//
// Everything else is allowed: any script, emoji and their joiners
// (U+200D), other format characters, private-use and unassigned code
// points. Whether a field may be empty or blank is its own rule
// (Required).
package usertext

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// What is wrong with a text: the errors a *Error unwraps to.
var (
	// ErrInvalidUTF8: the text is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("invalid UTF-8")
	// ErrForbidden: the text holds a character the rule forbids.
	ErrForbidden = errors.New("forbidden character")
	// ErrTooLong: the text has more characters than the rule allows.
	ErrTooLong = errors.New("too long")
	// ErrRequired: a required text is empty or only white space.
	ErrRequired = errors.New("required")
)

// Rule is what one field of user text may hold. The zero Rule accepts only
// the empty text: every field has a limit.
type Rule struct {
	// Max is the most characters (Unicode code points) the field holds.
	Max int
	// Multiline lets the field hold tab, line feed, carriage return and
	// the Unicode line and paragraph separators: text of several lines,
	// such as an address or a description.
	Multiline bool
	// Required refuses an empty text, or one of white space only.
	Required bool
}

// Error says why a text breaks a rule and where. It unwraps to
// ErrInvalidUTF8, ErrForbidden, ErrTooLong or ErrRequired; its message
// reads after the field's name ("name must be at most 200 characters, not
// 201").
type Error struct {
	// Err is what is wrong: ErrInvalidUTF8, ErrForbidden, ErrTooLong or
	// ErrRequired.
	Err error
	// Offset is where: the offset in bytes of the first byte that is not
	// UTF-8 (ErrInvalidUTF8), or in characters of the forbidden one
	// (ErrForbidden); both count from 0.
	Offset int
	// Byte is the byte that is not UTF-8 (ErrInvalidUTF8).
	Byte byte
	// Rune is the forbidden character (ErrForbidden).
	Rune rune
	// Len is how many characters the text has (ErrTooLong).
	Len int
	// Rule is the rule the text breaks.
	Rule Rule
}

func (e *Error) Error() string {
	switch e.Err {
	case ErrInvalidUTF8:
		return fmt.Sprintf("must be valid UTF-8: byte %#02x at offset %d is not", e.Byte, e.Offset)
	case ErrForbidden:
		return fmt.Sprintf(forbidden(e.Rune), e.Rune, e.Offset)
	case ErrTooLong:
		return fmt.Sprintf("must be at most %d characters, not %d", e.Rule.Max, e.Len)
	case ErrRequired:
		return fmt.Sprintf("is required: 1 to %d characters, not only white space", e.Rule.Max)
	}
	return e.Err.Error()
}

// forbidden is the message format, taking the character and its offset,
// that says why c is refused.
func forbidden(c rune) string {
	switch {
	case c == '\t' || c == '\n' || c == '\r' || c == '\u2028' || c == '\u2029':
		return "must be one line, without tabs: %U at character offset %d"
	case c == utf8.RuneError:
		return "must be valid UTF-8: %U, the replacement character that invalid input becomes, at character offset %d"
	case bidiFormatting(c):
		return "must not hold bidirectional formatting characters: %U at character offset %d"
	}
	return "must not hold control characters: %U at character offset %d"
}

// Unwrap returns what is wrong, for errors.Is.
func (e *Error) Unwrap() error { return e.Err }

// Check returns nil if s follows the rule, else a *Error saying what is
// wrong and where: the first byte that is not UTF-8 or the first forbidden
// character, else the length, else a required text missing.
func (r Rule) Check(s string) error {
	n := 0
	for i, c := range s {
		if c == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return &Error{Err: ErrInvalidUTF8, Offset: i, Byte: s[i], Rule: r}
			}
		}
		if !r.Allows(c) {
			return &Error{Err: ErrForbidden, Offset: n, Rune: c, Rule: r}
		}
		n++
	}
	if n > r.Max {
		return &Error{Err: ErrTooLong, Len: n, Rule: r}
	}
	if r.Required && strings.TrimSpace(s) == "" {
		return &Error{Err: ErrRequired, Rule: r}
	}
	return nil
}

// Allows reports whether the rule lets a text hold c, wherever it stands.
func (r Rule) Allows(c rune) bool {
	switch {
	case c == '\t' || c == '\n' || c == '\r' || c == '\u2028' || c == '\u2029':
		return r.Multiline
	case unicode.IsControl(c), bidiFormatting(c), c == utf8.RuneError:
		return false
	}
	return true
}

func bidiFormatting(c rune) bool {
	return (c >= '\u202A' && c <= '\u202E') || (c >= '\u2066' && c <= '\u2069')
}
