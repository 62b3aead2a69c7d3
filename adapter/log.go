package adapter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Record is one log line, parsed.
type Record struct {
	Time    time.Time // zero: the time it was read
	Level   slog.Level
	Msg     string
	TraceID string
	SpanID  string
	// Attrs are the line's other fields, in their order.
	Attrs []slog.Attr
}

// A Format parses one line of a program's log (without its newline).
type Format interface {
	Parse(line string) (Record, error)
}

// errNoFields reports a line with nothing a format could read.
var errNoFields = errors.New("adapter: no fields")

// Names of the fields with a meaning, in every format. Formats map their
// own names onto these.
const (
	FieldTime    = "time"
	FieldLevel   = "level"
	FieldMsg     = "msg"
	FieldTraceID = "trace_id"
	FieldSpanID  = "span_id"
)

// record builds a Record from fields in order, the known names taken
// out, the others kept as attributes.
func record(names []string, values []string) Record {
	var r Record
	for i, n := range names {
		if !r.set(n, values[i]) {
			r.Attrs = append(r.Attrs, slog.String(n, values[i]))
		}
	}
	return r
}

// set gives the field named name (one of the Field* names) the text v,
// keeping a time or level that cannot be read as an attribute; it reports
// false for a name without a meaning, which it leaves to the caller.
func (r *Record) set(name, v string) bool {
	switch name {
	case FieldTime:
		if t, ok := parseTime(v); ok {
			r.Time = t
		} else {
			r.Attrs = append(r.Attrs, slog.String("time_text", v))
		}
	case FieldLevel:
		lv, ok := parseLevel(v)
		r.Level = lv
		if !ok {
			r.Attrs = append(r.Attrs, slog.String("level_text", v))
		}
	case FieldMsg:
		r.Msg = v
	case FieldTraceID:
		r.TraceID = v
	case FieldSpanID:
		r.SpanID = v
	default:
		return false
	}
	return true
}

// parseLevel reads the level names programs use; an unknown one is INFO.
func parseLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace", "debug", "dbg", "d":
		return slog.LevelDebug, true
	case "info", "information", "notice", "inf", "i":
		return slog.LevelInfo, true
	case "warn", "warning", "wrn", "w":
		return slog.LevelWarn, true
	case "error", "err", "fatal", "crit", "critical", "panic", "alert", "emerg", "e":
		return slog.LevelError, true
	}
	return slog.LevelInfo, false
}

// timeLayouts are the layouts parseTime tries, besides Unix times. The
// slashed one is what Go's standard log package writes (with LUTC, the
// time is UTC as read).
var timeLayouts = []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999", "2006/01/02 15:04:05.999999999", "02/Jan/2006:15:04:05 -0700", time.RFC1123Z, time.RFC1123}

// parseTime reads a timestamp: one of timeLayouts (a time without a zone
// is UTC) or Unix seconds, milliseconds or nanoseconds.
func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 {
		switch {
		case f < 1e11: // seconds until the year 5138
			return time.Unix(0, int64(f*1e9)), true
		case f < 1e14:
			return time.UnixMilli(int64(f)), true
		case f < 9.2e18:
			return time.Unix(0, int64(f)), true
		}
	}
	return time.Time{}, false
}

// Plain reads a line as a message at INFO: for programs whose lines have
// no structure.
func Plain() Format { return plain{} }

type plain struct{}

func (plain) Parse(line string) (Record, error) { return Record{Msg: line}, nil }

// Logfmt reads key=value pairs (values in double quotes may hold spaces
// and escapes), with fields named as the constants Field* say (and "ts",
// "lvl", "message" as well).
func Logfmt() Format { return logfmt{} }

type logfmt struct{}

var aliases = map[string]string{"ts": FieldTime, "timestamp": FieldTime, "lvl": FieldLevel, "severity": FieldLevel,
	"message": FieldMsg, "traceid": FieldTraceID, "trace": FieldTraceID, "spanid": FieldSpanID}

func canonical(name string) string {
	if c, ok := aliases[strings.ToLower(name)]; ok {
		return c
	}
	return name
}

func (logfmt) Parse(line string) (Record, error) {
	var names, values []string
	s := strings.TrimSpace(line)
	for s != "" {
		i := strings.IndexAny(s, "= ")
		if i <= 0 || s[i] != '=' {
			return Record{}, fmt.Errorf("adapter: logfmt: a key without a value near %q", cut(s))
		}
		key := s[:i]
		s = s[i+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			end := closingQuote(s)
			if end < 0 {
				return Record{}, fmt.Errorf("adapter: logfmt: unterminated quote near %q", cut(s))
			}
			v, err := strconv.Unquote(s[:end+1])
			if err != nil {
				return Record{}, fmt.Errorf("adapter: logfmt: %w near %q", err, cut(s))
			}
			val, s = v, s[end+1:]
		} else {
			j := strings.IndexByte(s, ' ')
			if j < 0 {
				j = len(s)
			}
			val, s = s[:j], s[j:]
		}
		names, values = append(names, canonical(key)), append(values, val)
		s = strings.TrimLeft(s, " ")
	}
	if len(names) == 0 {
		return Record{}, errNoFields
	}
	return record(names, values), nil
}

// closingQuote returns the index of the quote that closes the one s
// starts with, -1 if none.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

func cut(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Regexp reads lines with a regular expression whose named groups are the
// fields: time, level, msg, trace_id, span_id and any others. A group
// that takes no part in a line's match (in an optional part the line
// lacks) gives no field; one that matches empty text gives an empty
// field. A line that does not match does not parse.
func Regexp(pattern string) (Format, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("adapter: regexp: %w", err)
	}
	named := 0
	for _, n := range re.SubexpNames() {
		if n != "" {
			named++
		}
	}
	if named == 0 {
		return nil, fmt.Errorf("adapter: regexp %q has no named group", pattern)
	}
	return regexpFormat{re}, nil
}

type regexpFormat struct{ re *regexp.Regexp }

func (f regexpFormat) Parse(line string) (Record, error) {
	m := f.re.FindStringSubmatchIndex(line)
	if m == nil {
		return Record{}, errors.New("adapter: the line does not match the expression")
	}
	var names, values []string
	for i, n := range f.re.SubexpNames() {
		// A group that took no part in the match (an optional field the
		// line does not have) is no field of the record.
		if n != "" && 2*i+1 < len(m) && m[2*i] >= 0 {
			names, values = append(names, canonical(n)), append(values, line[m[2*i]:m[2*i+1]])
		}
	}
	return record(names, values), nil
}

// JSONFields names a JSON log's fields with a meaning; an empty name
// means the schema's own (FieldTime and so on).
type JSONFields struct {
	Time, Level, Msg, TraceID, SpanID string
}

// JSON reads one JSON object per line whose fields are named as fields
// says; its other fields are kept with their names and values.
func JSON(fields JSONFields) Format {
	m := map[string]string{}
	for name, field := range map[string]string{FieldTime: fields.Time, FieldLevel: fields.Level, FieldMsg: fields.Msg,
		FieldTraceID: fields.TraceID, FieldSpanID: fields.SpanID} {
		if field == "" {
			field = name
		}
		m[field] = name
	}
	return jsonFormat{m}
}

type jsonFormat struct{ names map[string]string }

func (f jsonFormat) Parse(line string) (Record, error) {
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return Record{}, errors.New("adapter: not a JSON object")
	}
	var r Record
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return Record{}, fmt.Errorf("adapter: json: %w", err)
		}
		key, _ := t.(string)
		var v any
		if err := dec.Decode(&v); err != nil {
			return Record{}, fmt.Errorf("adapter: json: %w", err)
		}
		name, known := f.names[key]
		if !known {
			r.Attrs = append(r.Attrs, slog.Any(key, v))
			continue
		}
		text, ok := v.(string)
		if !ok {
			text = fmt.Sprint(v)
		}
		r.set(name, text)
	}
	if _, err := dec.Token(); err != nil {
		return Record{}, fmt.Errorf("adapter: json: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("adapter: more than one JSON value on the line")
	}
	return r, nil
}

// reserved are the schema's keys, which a line's other fields may not
// take.
var reserved = map[string]bool{FieldTime: true, FieldLevel: true, FieldMsg: true, FieldTraceID: true, FieldSpanID: true,
	"service": true, "unparsed": true}

// Logs turns lines of one Format into the project's JSON log lines.
type Logs struct {
	format  Format
	handler slog.Handler
	now     func() time.Time
}

// NewLogs returns the adapter of lines in format for service, writing to
// w; now tells the time of lines that have none (nil: time.Now).
func NewLogs(format Format, service string, w io.Writer, now func() time.Time) *Logs {
	if now == nil {
		now = time.Now
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}).WithAttrs([]slog.Attr{slog.String("service", service)})
	return &Logs{format: format, handler: h, now: now}
}

// Line writes one line (without its newline) in the project's schema.
// A line that does not parse is written whole as the message, with
// "unparsed": true; invalid UTF-8 is replaced; a field named like one of
// the schema's keys (a "service" of the line's own) is kept as
// "field_<name>", and a field the line repeats as "<name>_2" and so on.
func (l *Logs) Line(ctx context.Context, line string) error {
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
	}
	r, err := l.format.Parse(line)
	unparsed := err != nil
	if unparsed {
		r = Record{Msg: line}
	}
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	rec := slog.NewRecord(r.Time, r.Level, r.Msg, 0)
	if r.TraceID != "" {
		rec.AddAttrs(slog.String(FieldTraceID, r.TraceID))
	}
	if r.SpanID != "" {
		rec.AddAttrs(slog.String(FieldSpanID, r.SpanID))
	}
	seen := make(map[string]bool, len(r.Attrs))
	for _, a := range r.Attrs {
		if reserved[a.Key] {
			// A field of the line named like one of the schema's keeps
			// its value under another name, never a second key.
			a.Key = "field_" + a.Key
		}
		// So does a field the line repeats: key, key_2, key_3...
		if seen[a.Key] {
			base := a.Key
			for n := 2; seen[a.Key]; n++ {
				a.Key = base + "_" + strconv.Itoa(n)
			}
		}
		seen[a.Key] = true
		rec.AddAttrs(a)
	}
	if unparsed {
		rec.AddAttrs(slog.Bool("unparsed", true))
	}
	return l.handler.Handle(ctx, rec)
}

// MaxLine is the longest line Copy reads whole; a longer one is cut
// there, and the rest read as the next line.
const MaxLine = 1 << 20

// Copy adapts every line of r until it ends or ctx does.
func (l *Logs) Copy(ctx context.Context, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for ctx.Err() == nil {
		line, err := readLine(br)
		if len(line) > 0 || err == nil {
			if werr := l.Line(ctx, line); werr != nil {
				return fmt.Errorf("adapter: write: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("adapter: read: %w", err)
		}
	}
	return ctx.Err()
}

// readLine reads a line of at most MaxLine bytes, without its newline
// (and carriage return).
func readLine(br *bufio.Reader) (string, error) {
	var buf bytes.Buffer
	for {
		chunk, err := br.ReadSlice('\n')
		buf.Write(chunk)
		switch {
		case err == nil:
			return strings.TrimRight(buf.String(), "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			if buf.Len() >= MaxLine {
				return buf.String(), nil
			}
		default:
			return strings.TrimRight(buf.String(), "\r\n"), err
		}
	}
}
