package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// traceFields are the W3C propagator's fields, as a client passes them.
var traceFields = []string{"traceparent", "tracestate", "baggage"}

// FuzzEnvelopeFromMsg: whatever headers and data a received message
// carries, EnvelopeFromMsg takes each envelope field from its header (the
// id from Nats-Msg-Id when Trellis-Id is missing, trace fields whatever
// their case), and fails only on a Trellis-Time that is not RFC 3339, with
// an error wrapping ErrInvalidMessage.
func FuzzEnvelopeFromMsg(f *testing.F) {
	f.Add("orders.placed", "0190d1e2-7f00-7000-8000-000000000001", "", "order.placed", "order",
		"2026-11-22T12:00:00.123456789Z", "c-1", "", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", false)
	f.Add("x.y", "", "abc", "", "", "", "", "", "", "", true)
	f.Add("", "id", "", "t", "s", "yesterday", "", "", "", "", false)
	f.Add("a.b", "id", "other", "t", "s", "2026-11-22T12:00:00+01:00", "c", "d", "tp", "", true)
	f.Add("a.b", "\r\n", "", "\x00", "é", "0000-01-01T00:00:00Z", "", "", "", "\xff", false)
	f.Add("a.b", "id", "", "t", "s", "10000-01-01T00:00:00Z", "", "", "", "", false)
	f.Fuzz(func(t *testing.T, subject, id, msgID, typ, source, ts, corr, caus, traceparent, tracestate string, upper bool) {
		h := nats.Header{}
		for k, v := range map[string]string{
			HeaderID: id, HeaderMsgID: msgID, HeaderType: typ, HeaderSource: source, HeaderTime: ts,
			HeaderCorrelationID: corr, HeaderCausationID: caus,
		} {
			if v != "" {
				h.Set(k, v)
			}
		}
		trace := map[string]string{}
		for k, v := range map[string]string{"traceparent": traceparent, "tracestate": tracestate} {
			if v == "" {
				continue
			}
			trace[k] = v
			if upper {
				k = strings.ToUpper(k[:1]) + k[1:]
			}
			h[k] = []string{v}
		}
		data := []byte(id + typ)
		e, err := EnvelopeFromMsg(subject, h, data, traceFields)

		want := Envelope{ID: id, Type: typ, Source: source, Subject: subject, CorrelationID: corr, CausationID: caus, Data: data}
		if want.ID == "" {
			want.ID = msgID
		}
		if len(trace) > 0 {
			want.TraceContext = trace
		}
		if ts != "" {
			tm, perr := time.Parse(time.RFC3339Nano, ts)
			if (perr != nil) != (err != nil) {
				t.Fatalf("time %q: parse error %v, EnvelopeFromMsg error %v", ts, perr, err)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalidMessage) || !strings.Contains(err.Error(), HeaderTime) {
					t.Fatalf("time %q: error %v does not wrap ErrInvalidMessage naming the header", ts, err)
				}
				return
			}
			if !e.Time.Equal(tm) {
				t.Fatalf("time %q read as %v", ts, e.Time)
			}
		} else if err != nil || !e.Time.IsZero() {
			t.Fatalf("no time: %v, %v", e.Time, err)
		}
		e.Time = time.Time{}
		if !reflect.DeepEqual(e, want) {
			t.Fatalf("read %+v, want %+v", e, want)
		}
	})
}

// FuzzEnvelopeRoundTrip: an envelope that Validate accepts comes back
// whole from its NATS message.
func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add("0190d1e2-7f00-7000-8000-000000000001", "order.placed", "order", "orders.placed", "c-1", "",
		int64(1795348800), int64(123456789), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v", []byte(`{"order_id":"o-1"}`))
	f.Add("id", "t", "s", "a", "", "", int64(-62135596800), int64(0), "", "", []byte(`null`))
	f.Add("id", "t", "s", "a.b.c", "id", "cause", int64(253402300799), int64(999999999), "", "", []byte(`"é"`))
	f.Add("id", "t", "s", "a.*", "", "", int64(0), int64(0), "", "", []byte(`1`))
	f.Add("id", "t", "s", "a", "", "", int64(1), int64(0), "tp", "", []byte(`{`))
	f.Add("\xff", "t", "s", "a", "", "", int64(1), int64(0), "", "\u2028", []byte(`[]`))
	f.Fuzz(func(t *testing.T, id, typ, source, subject, corr, caus string, sec, nsec int64, traceparent, tracestate string, data []byte) {
		e := Envelope{
			ID: id, Type: typ, Source: source, Subject: subject, CorrelationID: corr, CausationID: caus,
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
		if err := e.Validate(); err != nil {
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("Validate: %v does not wrap ErrInvalidMessage", err)
			}
			return
		}
		m := e.Msg()
		if m.Subject != e.Subject || m.Header.Get(HeaderMsgID) != e.ID || m.Header.Get(HeaderContentType) != ContentTypeJSON {
			t.Fatalf("message %+v of %+v", m, e)
		}
		back, err := EnvelopeFromMsg(m.Subject, m.Header, m.Data, traceFields)
		if err != nil {
			t.Fatalf("envelope %+v: its message does not read back: %v", e, err)
		}
		if !back.Time.Equal(e.Time) {
			t.Fatalf("time %v read back as %v", e.Time, back.Time)
		}
		back.Time, e.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(back, e) {
			t.Fatalf("envelope %+v read back as %+v", e, back)
		}
	})
}

// fuzzPayload is a payload of the kinds of fields messages carry.
type fuzzPayload struct {
	OrderID string `json:"order_id"`
	Items   []struct {
		SKU string `json:"sku"`
		Qty int    `json:"qty"`
	} `json:"items"`
	TotalCents int64             `json:"total_cents"`
	At         time.Time         `json:"at"`
	Labels     map[string]string `json:"labels"`
	Note       *string           `json:"note"`
	Express    bool              `json:"express"`
}

// FuzzTyped: a handler made by Typed gets the payload exactly as
// encoding/json decodes the data, or is not called and the delivery fails
// permanently with an error wrapping ErrInvalidMessage and the decoding
// error.
func FuzzTyped(f *testing.F) {
	for _, seed := range []string{
		`{"order_id":"o-1","items":[{"sku":"TEA-001","qty":2}],"total_cents":1299,"at":"2026-11-22T12:00:00Z","labels":{"a":"b"},"note":null,"express":true}`,
		`{}`, `null`, ``, `[]`, `{"qty":1e400}`, `{"total_cents":9223372036854775808}`, `{"at":"yesterday"}`,
		`{"items":[{"qty":"2"}]}`, `{"order_id":"\ud800"}`, `{"order_id":1} trailing`, "\xff", `{"Order_ID":"case"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d := &Delivery{Envelope: Envelope{ID: "id-1", Type: "order.placed", Subject: "orders.placed", Data: data}, NumDelivered: 1}
		var want fuzzPayload
		werr := json.Unmarshal(data, &want)
		called := false
		err := Typed(func(_ context.Context, msg Message[fuzzPayload]) error {
			called = true
			if !reflect.DeepEqual(msg.Envelope, d.Envelope) || msg.Delivery != d {
				t.Fatalf("message %+v of delivery %+v", msg, d)
			}
			if !reflect.DeepEqual(msg.Payload, want) {
				t.Fatalf("payload %+v, want %+v", msg.Payload, want)
			}
			return nil
		})(context.Background(), d)
		if werr == nil {
			if err != nil || !called {
				t.Fatalf("data %q decodes, yet handler called %v, error %v", data, called, err)
			}
			return
		}
		if called {
			t.Fatalf("data %q does not decode (%v), yet the handler was called", data, werr)
		}
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		if !errors.Is(err, ErrInvalidMessage) || !d.GivesUp(err) || !strings.Contains(err.Error(), d.ID) ||
			(errors.As(werr, &syn) != errors.As(err, &syn)) || (errors.As(werr, &typ) != errors.As(err, &typ)) {
			t.Fatalf("data %q: error %v (decoding: %v) is not a permanent ErrInvalidMessage wrapping the decoding error", data, err, werr)
		}
	})
}
