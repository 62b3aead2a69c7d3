package domain_test

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/notification/domain"
)

func TestFormatMoney(t *testing.T) {
	for cents, want := range map[int64]string{
		0: "$0.00", 5: "$0.05", 100: "$1.00", 1250: "$12.50", 99999: "$999.99", 100000: "$1,000.00",
		123456789: "$1,234,567.89", -5: "-$0.05", -123456: "-$1,234.56",
		math.MinInt64: "-$92,233,720,368,547,758.08", math.MaxInt64: "$92,233,720,368,547,758.07",
	} {
		if got := domain.FormatMoney(cents); got != want {
			t.Errorf("FormatMoney(%d) = %q, want %q", cents, got, want)
		}
	}
}

func TestCompose(t *testing.T) {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600))
	e := contract.OrderEnded{OrderID: "o-1", CustomerID: "c-1", TotalCents: 2599, Reason: "payment declined"}
	for _, tc := range []struct{ kind, want string }{
		{domain.KindOrderConfirmed, "Your order o-1 is confirmed. Total: $25.99."},
		{domain.KindOrderRejected, "Your order o-1 (total $25.99) could not be completed: payment declined. You have not been charged."},
		{domain.KindOrderCancelled, "Your order o-1 (total $25.99) was cancelled: payment declined. Any payment is refunded."},
	} {
		n := domain.Compose("m-1", tc.kind, e, at)
		if n.Message != tc.want || n.NotificationID != "m-1" || n.CustomerID != "c-1" || n.OrderID != "o-1" || n.Kind != tc.kind || !n.CreatedAt.Equal(at) || n.CreatedAt.Location() != time.UTC {
			t.Errorf("%s: %+v", tc.kind, n)
		}
	}
	e.Reason = ""
	if m := domain.Message(domain.KindOrderRejected, e); strings.Contains(m, ": ") {
		t.Errorf("no reason: %q", m)
	}
	for subject, want := range map[string]string{
		contract.SubjectOrderConfirmed: domain.KindOrderConfirmed, contract.SubjectOrderRejected: domain.KindOrderRejected,
		contract.SubjectOrderCancelled: domain.KindOrderCancelled, contract.SubjectOrderPlaced: "",
	} {
		if got, ok := domain.KindOf(subject); got != want || ok != (want != "") {
			t.Errorf("KindOf(%s) = %q %v", subject, got, ok)
		}
	}
}
