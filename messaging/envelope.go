package messaging

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of the envelope scheme. A message on the wire is its data (JSON)
// as the body and these NATS headers; the subject is the NATS subject. The
// trace context travels in the propagator's own headers (W3C "traceparent",
// "tracestate" and "baggage" by default).
const (
	HeaderID            = "Trellis-Id"             // the envelope id, a UUID
	HeaderType          = "Trellis-Type"           // the message type, e.g. "order.placed"
	HeaderSource        = "Trellis-Source"         // the service that produced it
	HeaderTime          = "Trellis-Time"           // when it happened, RFC 3339 with nanoseconds
	HeaderCorrelationID = "Trellis-Correlation-Id" // the conversation it belongs to
	HeaderCausationID   = "Trellis-Causation-Id"   // the id of the message that caused it
	HeaderContentType   = "Content-Type"           // always "application/json"

	// HeaderMsgID is JetStream's de-duplication header; it carries the
	// envelope id, so a message published twice within the stream's
	// duplicate window is stored once.
	HeaderMsgID = jetstream.MsgIDHeader

	// HeaderTimeout carries how long a requester waits for the reply (a
	// Go duration, e.g. "4.99s"), measured when the request is sent; the
	// responder handles the request under that timeout. A duration rather
	// than a deadline does not depend on the two hosts' clocks agreeing.
	HeaderTimeout = "Trellis-Timeout"
	// HeaderErrorCode and HeaderError mark a reply as an error: a
	// machine-readable code and a message. See [ReplyError].
	HeaderErrorCode = "Trellis-Error-Code"
	HeaderError     = "Trellis-Error"
)

// Headers a dead-lettered message carries besides the original ones.
const (
	HeaderDeadError      = "Trellis-Dead-Error"      // the last error of the handler
	HeaderDeadDeliveries = "Trellis-Dead-Deliveries" // how many times it was delivered
	HeaderDeadStream     = "Trellis-Dead-Stream"     // the stream it was stored in
	HeaderDeadSequence   = "Trellis-Dead-Sequence"   // its sequence in that stream
	HeaderDeadSubject    = "Trellis-Dead-Subject"    // the subject it was published on
	HeaderDeadConsumer   = "Trellis-Dead-Consumer"   // the durable consumer that gave up
	HeaderDeadTime       = "Trellis-Dead-Time"       // when it was dead-lettered, RFC 3339
)

// ContentTypeJSON is the content type of every envelope's data.
const ContentTypeJSON = "application/json"

// Envelope is a message with the metadata every service needs to route,
// de-duplicate, correlate and trace it. Data is the JSON encoding of the
// payload.
type Envelope struct {
	// ID identifies the message; it is the de-duplication key of JetStream
	// (Nats-Msg-Id) and of an inbox. NewEnvelope sets a UUID (version 7).
	ID string
	// Type names what the message means, e.g. "order.placed".
	Type string
	// Source is the service that produced the message.
	Source string
	// Time is when the event happened or the command was issued.
	Time time.Time
	// Subject is the NATS subject the message is published on.
	Subject string
	// CorrelationID groups the messages of one conversation (a saga, a
	// request and its consequences). It defaults to ID: a message without a
	// cause starts a conversation.
	CorrelationID string
	// CausationID is the ID of the message that caused this one, if any.
	CausationID string
	// TraceContext holds the propagation fields of the producer's trace
	// (W3C "traceparent", "tracestate", "baggage"), captured from the
	// producer's context when the message is published or added to an
	// outbox.
	TraceContext map[string]string
	// Data is the payload, JSON encoded.
	Data json.RawMessage
}

// Option sets a field of an envelope being built.
type Option func(*Envelope)

// WithID sets the envelope id, for a message whose identity comes from the
// domain (an event id in an event store): publishing it again is then
// recognised as a duplicate.
func WithID(id string) Option { return func(e *Envelope) { e.ID = id } }

// WithTime sets when the message happened.
func WithTime(t time.Time) Option { return func(e *Envelope) { e.Time = t } }

// WithCorrelationID sets the conversation the message belongs to.
func WithCorrelationID(id string) Option { return func(e *Envelope) { e.CorrelationID = id } }

// WithCausationID sets the id of the message that caused this one.
func WithCausationID(id string) Option { return func(e *Envelope) { e.CausationID = id } }

// CausedBy makes the message a consequence of cause: its causation id is
// cause's id and it joins cause's conversation.
func CausedBy(cause Envelope) Option {
	return func(e *Envelope) {
		e.CausationID = cause.ID
		e.CorrelationID = cause.CorrelationID
		if e.CorrelationID == "" {
			e.CorrelationID = cause.ID
		}
	}
}

// NewEnvelope builds an envelope of type msgType for subject with payload
// encoded as JSON and a fresh id. Source, Time and TraceContext are filled
// in when the envelope is published ([Client.PublishEnvelope]) or added to
// an outbox, unless set here.
func NewEnvelope(subject, msgType string, payload any, opts ...Option) (Envelope, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return Envelope{}, fmt.Errorf("messaging: encode %s payload: %w", msgType, err)
	}
	e := Envelope{ID: NewID(), Type: msgType, Subject: subject, Data: data}
	for _, o := range opts {
		o(&e)
	}
	if e.CorrelationID == "" {
		e.CorrelationID = e.ID
	}
	if err := e.validateFields(); err != nil {
		return Envelope{}, err
	}
	return e, nil
}

// Validate reports whether the envelope can be published: an id, a type, a
// source, a time (in the years 0000-9999) and a subject a message can be
// published on (no wildcards), valid JSON data, and header values without
// control characters.
func (e Envelope) Validate() error {
	if err := e.validateFields(); err != nil {
		return err
	}
	if e.Source == "" {
		return fmt.Errorf("%w: envelope %s has no source", ErrInvalidMessage, e.ID)
	}
	if e.Time.IsZero() {
		return fmt.Errorf("%w: envelope %s has no time", ErrInvalidMessage, e.ID)
	}
	return nil
}

// validateFields checks what NewEnvelope can check: everything but Source
// and Time.
func (e Envelope) validateFields() error {
	if e.ID == "" {
		return fmt.Errorf("%w: envelope without an id", ErrInvalidMessage)
	}
	if e.Type == "" {
		return fmt.Errorf("%w: envelope %s has no type", ErrInvalidMessage, e.ID)
	}
	if err := ValidateSubject(e.Subject); err != nil {
		return fmt.Errorf("%w (envelope %s)", err, e.ID)
	}
	for name, v := range map[string]string{
		"id": e.ID, "type": e.Type, "source": e.Source,
		"correlation id": e.CorrelationID, "causation id": e.CausationID,
	} {
		if !headerSafe(v) {
			return fmt.Errorf("%w: envelope %s: %s %q contains control characters", ErrInvalidMessage, e.ID, name, v)
		}
	}
	for k, v := range e.TraceContext {
		if !headerSafe(k) || !headerSafe(v) || k == "" {
			return fmt.Errorf("%w: envelope %s: trace context field %q is not a valid header", ErrInvalidMessage, e.ID, k)
		}
	}
	if len(e.Data) == 0 || !json.Valid(e.Data) {
		return fmt.Errorf("%w: envelope %s: data is not valid JSON", ErrInvalidMessage, e.ID)
	}
	// The Trellis-Time header is RFC 3339, whose years have four digits: a
	// time outside them would not read back, and every consumer would
	// dead-letter the message.
	if y := e.Time.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("%w: envelope %s: time %s is outside the years 0000-9999 of RFC 3339", ErrInvalidMessage, e.ID, e.Time)
	}
	return nil
}

// ValidateSubject reports whether a message can be published on subject:
// not empty, no whitespace, no empty token and no wildcard.
func ValidateSubject(subject string) error {
	if subject == "" {
		return fmt.Errorf("%w: empty subject", ErrInvalidMessage)
	}
	if strings.IndexFunc(subject, unicode.IsSpace) >= 0 || !headerSafe(subject) {
		return fmt.Errorf("%w: subject %q contains whitespace or control characters", ErrInvalidMessage, subject)
	}
	for tok := range strings.SplitSeq(subject, ".") {
		switch tok {
		case "":
			return fmt.Errorf("%w: subject %q has an empty token", ErrInvalidMessage, subject)
		case "*", ">":
			return fmt.Errorf("%w: subject %q has a wildcard", ErrInvalidMessage, subject)
		}
	}
	return nil
}

// headerSafe reports whether s can be a NATS header value: no control
// characters (a CR or LF would end the header).
func headerSafe(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) < 0
}

// sanitizeHeader turns s into a header value: control characters become
// spaces and it is cut to at most max bytes (on a rune boundary).
func sanitizeHeader(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= limit {
		return s
	}
	cut := limit
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// Header returns the NATS headers of the envelope: the Trellis-* headers,
// Nats-Msg-Id, Content-Type and the trace context fields.
func (e Envelope) Header() nats.Header {
	h := make(nats.Header, 8+len(e.TraceContext))
	h.Set(HeaderMsgID, e.ID)
	h.Set(HeaderID, e.ID)
	h.Set(HeaderType, e.Type)
	h.Set(HeaderSource, e.Source)
	h.Set(HeaderTime, e.Time.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderContentType, ContentTypeJSON)
	if e.CorrelationID != "" {
		h.Set(HeaderCorrelationID, e.CorrelationID)
	}
	if e.CausationID != "" {
		h.Set(HeaderCausationID, e.CausationID)
	}
	for k, v := range e.TraceContext {
		// Set writes the key as given: the W3C propagator uses lower case
		// and NATS headers are case-sensitive.
		h[k] = []string{v}
	}
	return h
}

// Msg returns the NATS message of the envelope.
func (e Envelope) Msg() *nats.Msg {
	return &nats.Msg{Subject: e.Subject, Header: e.Header(), Data: e.Data}
}

// EnvelopeFromMsg reads the envelope of a received message. traceFields
// names the headers that hold the trace context (the propagator's
// Fields()). A message published by a client that does not use this scheme
// still decodes: its id falls back to Nats-Msg-Id and missing fields stay
// empty. Only an unreadable Trellis-Time is an error.
func EnvelopeFromMsg(subject string, h nats.Header, data []byte, traceFields []string) (Envelope, error) {
	e := Envelope{
		ID:            h.Get(HeaderID),
		Type:          h.Get(HeaderType),
		Source:        h.Get(HeaderSource),
		Subject:       subject,
		CorrelationID: h.Get(HeaderCorrelationID),
		CausationID:   h.Get(HeaderCausationID),
		Data:          data,
	}
	if e.ID == "" {
		e.ID = h.Get(HeaderMsgID)
	}
	if ts := h.Get(HeaderTime); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return e, fmt.Errorf("%w: %s header %q: %w", ErrInvalidMessage, HeaderTime, ts, err)
		}
		e.Time = t
	}
	for _, f := range traceFields {
		if v := headerValue(h, f); v != "" {
			if e.TraceContext == nil {
				e.TraceContext = make(map[string]string, len(traceFields))
			}
			e.TraceContext[f] = v
		}
	}
	return e, nil
}

// headerValue returns the first value of key, matching its case exactly
// first and then ignoring case.
func headerValue(h nats.Header, key string) string {
	if v := h.Get(key); v != "" {
		return v
	}
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, key) {
			return vs[0]
		}
	}
	return ""
}

// NewID returns a new UUID, version 7 (RFC 9562): the first 48 bits are the
// Unix time in milliseconds, so ids sort roughly by creation time, and the
// rest is random.
func NewID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	b[3], b[4], b[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never returns an error
	b[6] = b[6]&0x0f | 0x70 // version 7
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:36], b[10:16])
	return string(out[:])
}
