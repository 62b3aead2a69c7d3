package outbox

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/trellis-go/trellis/messaging"
)

// FuzzRowRoundTrip: an envelope that Add accepts comes back whole from
// the columns of its outbox row, the trace context's invalid UTF-8 (which
// JSON cannot hold) aside.
func FuzzRowRoundTrip(f *testing.F) {
	f.Add("0190d1e2-7f00-7000-8000-000000000001", "orders.placed", int64(1795348800), int64(123456789),
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", []byte(`{"order_id":"o-1"}`))
	f.Add("id", "a", int64(-9223372036), int64(-854775808), "", "", []byte(`null`))
	f.Add("id", "a", int64(9223372036), int64(854775807), "", "", []byte(`1`))
	f.Add("id", "a", int64(0), int64(0), "é \"<&>\"", "\u2028", []byte(`[]`))
	f.Add("id", "a", int64(1), int64(0), "\xff", "", []byte(`{}`))
	f.Fuzz(func(t *testing.T, id, subject string, sec, nsec int64, traceparent, tracestate string, data []byte) {
		e := messaging.Envelope{
			ID: id, Type: "order.placed", Source: "order", Subject: subject, CorrelationID: id,
			Time: time.Unix(sec, nsec).UTC(), Data: data,
		}
		for k, v := range map[string]string{"traceparent": traceparent, "tracestate": tracestate} {
			if v != "" {
				if e.TraceContext == nil {
					e.TraceContext = map[string]string{}
				}
				e.TraceContext[k] = v
			}
		}
		if e.Validate() != nil {
			return
		}
		if err := storable(e); err != nil {
			if !errors.Is(err, messaging.ErrInvalidMessage) || !strings.Contains(err.Error(), id) {
				t.Fatalf("time %v refused with %v", e.Time, err)
			}
			if y := e.Time.Year(); y > 1677 && y < 2262 {
				t.Fatalf("time %v refused: %v", e.Time, err)
			}
			return
		}
		args, err := rowArgs(e)
		if err != nil {
			t.Fatalf("rowArgs(%+v): %v", e, err)
		}
		back := messaging.Envelope{
			ID: args[0].(string), Subject: args[1].(string), Type: args[2].(string), Source: args[3].(string),
			CorrelationID: args[5].(string), CausationID: args[6].(string),
		}
		if err := completeEnvelope(&back, args[4].(int64), args[7].(string), args[8].([]byte)); err != nil {
			t.Fatalf("row of %+v does not read back: %v", e, err)
		}
		if !back.Time.Equal(e.Time) {
			t.Fatalf("time %v stored as %v", e.Time, back.Time)
		}
		back.Time, e.Time = time.Time{}, time.Time{}
		for k, v := range e.TraceContext {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				for k, v := range back.TraceContext {
					if !utf8.ValidString(k) || !utf8.ValidString(v) {
						t.Fatalf("trace context %q read back as %q", e.TraceContext, back.TraceContext)
					}
				}
				back.TraceContext, e.TraceContext = nil, nil
				break
			}
		}
		if !reflect.DeepEqual(back, e) {
			t.Fatalf("envelope %+v read back as %+v", e, back)
		}
	})
}

// FuzzCompleteEnvelope: whatever a row's trace_context column holds, the
// envelope gets the trace context it encodes, or an error naming the
// message and wrapping JSON's.
func FuzzCompleteEnvelope(f *testing.F) {
	for _, seed := range []string{``, `{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`, `null`, `{}`,
		`{"a":1}`, `[]`, `{"a":"b"`, `{"a":"b","a":"c"}`, `"x"`, "\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, trace string) {
		env := messaging.Envelope{ID: "msg-1"}
		err := completeEnvelope(&env, 42, trace, []byte(`1`))
		if env.Time != time.Unix(0, 42).UTC() || string(env.Data) != "1" {
			t.Fatalf("time %v, data %q", env.Time, env.Data)
		}
		var want map[string]string
		if trace == "" {
			if err != nil || env.TraceContext != nil {
				t.Fatalf("no trace context: %v, %v", env.TraceContext, err)
			}
			return
		}
		werr := json.Unmarshal([]byte(trace), &want)
		if werr != nil {
			var syn *json.SyntaxError
			var typ *json.UnmarshalTypeError
			if err == nil || !strings.Contains(err.Error(), "msg-1") ||
				errors.As(werr, &syn) != errors.As(err, &syn) || errors.As(werr, &typ) != errors.As(err, &typ) {
				t.Fatalf("trace context %q: error %v, JSON's %v", trace, err, werr)
			}
			return
		}
		if err != nil || !reflect.DeepEqual(env.TraceContext, want) {
			t.Fatalf("trace context %q read as %v, %v", trace, env.TraceContext, err)
		}
	})
}
