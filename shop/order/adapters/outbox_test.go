package adapters_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/order/adapters"
	"github.com/trellis-go/trellis/shop/order/domain"
)

// Every kind of event an order stream holds is either announced in the
// shop's published language or declared internal: a new kind without a
// mapping fails here (and would fail the unit of work that appends it).
func TestEveryOrderEventHasAnAnnouncement(t *testing.T) {
	reg := order.Registry()
	for _, name := range reg.Names() {
		event, err := reg.Decode(eventstore.Event{Type: name, Data: []byte(`{}`), ID: uuid.New()})
		if err != nil {
			t.Fatal(err)
		}
		subject, payload, published, err := adapters.Announcement(event)
		switch {
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case published && decoders[subject] == nil:
			t.Errorf("%s is announced on %q, which is no subject of shop/contract's order events", name, subject)
		case published && reflect.TypeOf(payload) != reflect.TypeOf(decoders[subject]()).Elem():
			t.Errorf("%s is announced as a %T, not as the %T of %s", name, payload, decoders[subject](), subject)
		}
	}
}

// decoders give, for each subject of the order service's events, a new
// value of the contract type its consumers decode.
var decoders = map[string]func() any{
	contract.SubjectOrderPlaced:    func() any { return new(contract.OrderPlaced) },
	contract.SubjectOrderConfirmed: func() any { return new(contract.OrderEnded) },
	contract.SubjectOrderRejected:  func() any { return new(contract.OrderEnded) },
	contract.SubjectOrderCancelled: func() any { return new(contract.OrderEnded) },
}

// Each published event, every field set, is announced on its subject with
// a payload that decodes, through JSON as a consumer reads it, into the
// contract type with the same values; and the message's JSON is the
// event's as the event store records it, as it has always been published.
func TestAnnouncementsRoundTripThroughTheContract(t *testing.T) {
	placedAt := time.Date(2025, 3, 4, 5, 6, 7, 8000, time.UTC)
	at := placedAt.Add(time.Minute)
	ended := domain.Ended{OrderID: "o-1", CustomerID: "c-1", TotalCents: 4000, Reason: "why", Flow: domain.FlowChoreography, At: at}
	contractEnded := contract.OrderEnded{OrderID: "o-1", CustomerID: "c-1", TotalCents: 4000, Reason: "why", Flow: contract.FlowChoreography, At: at}
	cases := []struct {
		event   any
		subject string
		want    any
	}{
		{domain.Placed{OrderID: "o-1", CustomerID: "c-1", Items: []domain.Item{{SKU: "TEA-001", Qty: 2, PriceCents: 1250},
			{SKU: "MUG-001", Qty: 1, PriceCents: 1500}}, TotalCents: 4000, PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street",
			PlacedAt: placedAt, Flow: domain.FlowChoreography},
			contract.SubjectOrderPlaced,
			contract.OrderPlaced{OrderID: "o-1", CustomerID: "c-1", Items: []contract.Item{{SKU: "TEA-001", Qty: 2, PriceCents: 1250},
				{SKU: "MUG-001", Qty: 1, PriceCents: 1500}}, TotalCents: 4000, PaymentToken: "tok_ok", ShippingAddress: "1 Tea Street",
				PlacedAt: placedAt, Flow: contract.FlowChoreography}},
		{domain.ConfirmedEvent(ended), contract.SubjectOrderConfirmed, contractEnded},
		{domain.RejectedEvent(ended), contract.SubjectOrderRejected, contractEnded},
		{domain.CancelledEvent(ended), contract.SubjectOrderCancelled, contractEnded},
	}
	reg := order.Registry()
	covered := map[string]bool{}
	for _, c := range cases {
		name, err := reg.Name(c.event)
		if err != nil {
			t.Fatal(err)
		}
		covered[name] = true
		subject, payload, published, err := adapters.Announcement(c.event)
		if err != nil || !published || subject != c.subject {
			t.Errorf("%s: announced %v on %q (%v), want on %q", name, published, subject, err, c.subject)
			continue
		}
		wire, err := json.Marshal(payload)
		if err != nil {
			t.Fatal(err)
		}
		decoded := decoders[subject]()
		if err := json.Unmarshal(wire, decoded); err != nil {
			t.Fatalf("%s: %s does not decode as %T: %v", name, wire, decoded, err)
		}
		if got := reflect.ValueOf(decoded).Elem().Interface(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s decodes as\n%+v, want\n%+v", name, got, c.want)
		}
		recorded, err := reg.Encode(c.event, nil)
		if err != nil {
			t.Fatal(err)
		}
		if string(wire) != string(recorded.Data) {
			t.Errorf("%s: the message\n%s\ndiffers from the event\n%s", name, wire, recorded.Data)
		}
	}
	// Every published kind has its case above.
	for _, name := range reg.Names() {
		event, err := reg.Decode(eventstore.Event{Type: name, Data: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, published, _ := adapters.Announcement(event); published && !covered[name] {
			t.Errorf("%s is published but has no round-trip case", name)
		}
	}
}
