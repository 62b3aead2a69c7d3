package adapter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/adapter"
)

var readAt = time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)

func convert(t testing.TB, f adapter.Format, line string) map[string]any {
	t.Helper()
	var out bytes.Buffer
	l := adapter.NewLogs(f, "carrier", &out, func() time.Time { return readAt })
	if err := l.Line(context.Background(), line); err != nil {
		t.Fatal(err)
	}
	if strings.Count(out.String(), "\n") != 1 || !strings.HasSuffix(out.String(), "\n") {
		t.Fatalf("%q: not one line: %q", line, out.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("%q: %v: %s", line, err, out.String())
	}
	// Every key once: a reader must not have to choose between two.
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(out.Bytes(), &raw)
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	keys := 0
	for depth := 0; ; {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		default:
			if depth == 1 {
				keys++
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if keys != len(raw) {
		t.Fatalf("%q: %d keys, %d distinct: %s", line, keys, len(raw), out.String())
	}
	return m
}

func mustRegexp(t *testing.T, pattern string) adapter.Format {
	t.Helper()
	f, err := adapter.Regexp(pattern)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// Each input format becomes the schema every service writes: time, level,
// msg, service, trace_id and span_id when the line has them, and the
// line's other fields.
func TestEachFormatBecomesTheSchema(t *testing.T) {
	access := mustRegexp(t, `^(?P<time>\S+ \S+) \[(?P<level>\w+)\] (?P<msg>.*?)(?: trace=(?P<trace_id>[0-9a-f]{32}))?$`)
	for _, c := range []struct {
		name   string
		format adapter.Format
		line   string
		want   map[string]any
	}{
		{"plain", adapter.Plain(), "parcel 42 handed over",
			map[string]any{"time": "2026-12-08T01:00:00Z", "level": "INFO", "msg": "parcel 42 handed over", "service": "carrier"}},
		{"logfmt", adapter.Logfmt(), `ts=2026-12-07T23:59:58.5Z lvl=warn msg="truck \"B\" late" trace_id=4bf92f3577b34da6a3ce929d0e0e4736 parcel=42`,
			map[string]any{"time": "2026-12-07T23:59:58.5Z", "level": "WARN", "msg": `truck "B" late`, "service": "carrier",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "parcel": "42"}},
		{"regexp", access, "2026-12-07 23:59:58 [ERROR] no truck trace=4bf92f3577b34da6a3ce929d0e0e4736",
			map[string]any{"time": "2026-12-07T23:59:58Z", "level": "ERROR", "msg": "no truck", "service": "carrier",
				"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}},
		{"go log", mustRegexp(t, `^(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<msg>.*)$`), "2026/12/07 23:59:58.25 parcel accepted",
			map[string]any{"time": "2026-12-07T23:59:58.25Z", "level": "INFO", "msg": "parcel accepted", "service": "carrier"}},
		{"optional groups", mustRegexp(t, `^(?P<msg>[^=]*?)(?: id=(?P<parcel>\S+))?(?: note=(?P<note>\S*))?(?: at=(?P<time>\S+))?$`), "parcel accepted note=",
			map[string]any{"time": "2026-12-08T01:00:00Z", "level": "INFO", "msg": "parcel accepted", "service": "carrier", "note": ""}},
		{"json", adapter.JSON(adapter.JSONFields{Time: "@timestamp", Level: "severity", Msg: "message", TraceID: "traceId"}),
			`{"@timestamp":1765151998,"severity":"debug","message":"route planned","traceId":"abc","stops":3,"zone":{"id":"E"}}`,
			map[string]any{"time": "2025-12-07T23:59:58Z", "level": "DEBUG", "msg": "route planned", "service": "carrier",
				"trace_id": "abc", "stops": 3.0, "zone": map[string]any{"id": "E"}}},
		{"unknown level", adapter.Logfmt(), "lvl=chatty msg=hello",
			map[string]any{"time": "2026-12-08T01:00:00Z", "level": "INFO", "msg": "hello", "service": "carrier", "level_text": "chatty"}},
		{"a field named like the schema's", adapter.JSON(adapter.JSONFields{Msg: "message"}), `{"message":"hi","msg":0,"service":"x"}`,
			map[string]any{"time": "2026-12-08T01:00:00Z", "level": "INFO", "msg": "hi", "service": "carrier", "field_msg": 0.0, "field_service": "x"}},
		{"a repeated field", adapter.Logfmt(), "msg=hi stop=A stop=B stop=C",
			map[string]any{"time": "2026-12-08T01:00:00Z", "level": "INFO", "msg": "hi", "service": "carrier", "stop": "A", "stop_2": "B", "stop_3": "C"}},
		{"bad time", adapter.Logfmt(), "time=yesterday msg=hello",
			map[string]any{"time": "2026-12-08T01:00:00Z", "level": "INFO", "msg": "hello", "service": "carrier", "time_text": "yesterday"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := convert(t, c.format, c.line)
			if !equalJSON(got, c.want) {
				t.Fatalf("%s\ngot  %v\nwant %v", c.line, got, c.want)
			}
		})
	}
}

func equalJSON(a, b map[string]any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// A line that does not parse is kept whole as the message, marked.
func TestUnparsedLinesAreKept(t *testing.T) {
	for _, c := range []struct {
		format adapter.Format
		line   string
	}{
		{adapter.Logfmt(), `msg="unterminated`},
		{adapter.Logfmt(), "just words here"},
		{mustRegexp(t, `^(?P<level>\w+): (?P<msg>.*)$`), "no colon"},
		{adapter.JSON(adapter.JSONFields{}), `{"msg": "cut`},
		{adapter.JSON(adapter.JSONFields{}), `{"msg":"a"} {"msg":"b"}`},
		{adapter.JSON(adapter.JSONFields{}), `["not", "an object"]`},
	} {
		got := convert(t, c.format, c.line)
		if got["msg"] != c.line || got["unparsed"] != true || got["level"] != "INFO" {
			t.Errorf("%q: %v", c.line, got)
		}
	}
	if _, err := adapter.Regexp(`(unnamed)`); err == nil {
		t.Error("an expression without named groups was accepted")
	}
	if _, err := adapter.Regexp(`(?P<msg>`); err == nil {
		t.Error("a bad expression was accepted")
	}
}

// Copy adapts a stream line by line: carriage returns dropped, a last line
// without a newline kept, invalid UTF-8 replaced, a line longer than
// MaxLine cut into pieces rather than held.
func TestCopy(t *testing.T) {
	long := strings.Repeat("x", adapter.MaxLine+10)
	in := "msg=first\r\nnot logfmt\n\xff bad\n" + long + "\nmsg=last"
	var out bytes.Buffer
	l := adapter.NewLogs(adapter.Logfmt(), "carrier", &out, func() time.Time { return readAt })
	if err := l.Copy(context.Background(), strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, line := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%v: %.80s", err, line)
		}
		msg, _ := m["msg"].(string)
		msgs = append(msgs, msg[:min(len(msg), 12)])
	}
	want := []string{"first", "not logfmt", "\uFFFD bad", "xxxxxxxxxxxx", "xxxxxxxxxx", "last"}
	if strings.Join(msgs, "|") != strings.Join(want, "|") {
		t.Fatalf("messages %q, want %q", msgs, want)
	}
}

// FuzzLogs: whatever a program writes, each line becomes exactly one JSON
// line of the schema, with a message, a level, a time and the service.
func FuzzLogs(f *testing.F) {
	for _, s := range []string{"plain words", `ts=1 lvl=warn msg="a \"b\"" k=v`, `{"msg":"m","level":"error","n":1}`,
		`msg="\x00\xff"`, "=", `"`, "{", `{"time":"2026-12-07T23:59:58Z"}`, "2026-12-07 23:59:58 [WARN] late"} {
		f.Add(s)
	}
	re, err := adapter.Regexp(`^(?P<time>\S+ \S+) \[(?P<level>\w+)\] (?P<msg>.*)$`)
	if err != nil {
		f.Fatal(err)
	}
	formats := []adapter.Format{adapter.Plain(), adapter.Logfmt(), re, adapter.JSON(adapter.JSONFields{Msg: "message"})}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n") {
			return // Line takes one line; Copy splits streams
		}
		for _, format := range formats {
			m := convert(t, format, line)
			if _, ok := m["msg"].(string); !ok || m["service"] != "carrier" || m["level"] == nil || m["time"] == nil {
				t.Fatalf("%q: %v", line, m)
			}
		}
	})
}
