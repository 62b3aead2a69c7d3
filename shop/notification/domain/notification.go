// Package domain holds the notification service's model: what a customer
// is told when an order ends, free of any infrastructure.
package domain

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-go/trellis/shop/contract"
)

// Kinds of notification, one per way an order ends.
const (
	KindOrderConfirmed = contract.NotificationOrderConfirmed
	KindOrderRejected  = contract.NotificationOrderRejected
	KindOrderCancelled = contract.NotificationOrderCancelled
)

// Notification is what a customer is told about one order event. Its id is
// the event's message id: one event, one notification. The service's API
// returns it as it is: the model is the published contract.Notification.
type Notification = contract.Notification

// KindOf returns the kind of notification an order event's subject calls
// for; ok is false for an event that notifies no one.
func KindOf(subject string) (kind string, ok bool) {
	switch subject {
	case contract.SubjectOrderConfirmed:
		return KindOrderConfirmed, true
	case contract.SubjectOrderRejected:
		return KindOrderRejected, true
	case contract.SubjectOrderCancelled:
		return KindOrderCancelled, true
	}
	return "", false
}

// Compose writes the notification of kind for the ended order e.
func Compose(id, kind string, e contract.OrderEnded, at time.Time) Notification {
	return Notification{NotificationID: id, CustomerID: e.CustomerID, OrderID: e.OrderID, Kind: kind,
		Message: Message(kind, e), CreatedAt: at.UTC()}
}

// Message is the text a customer reads: the order, what happened, why, and
// its total as money.
func Message(kind string, e contract.OrderEnded) string {
	total := FormatMoney(e.TotalCents)
	reason := strings.TrimSpace(e.Reason)
	switch kind {
	case KindOrderConfirmed:
		return fmt.Sprintf("Your order %s is confirmed. Total: %s.", e.OrderID, total)
	case KindOrderRejected:
		if reason == "" {
			return fmt.Sprintf("Your order %s (total %s) could not be completed. You have not been charged.", e.OrderID, total)
		}
		return fmt.Sprintf("Your order %s (total %s) could not be completed: %s. You have not been charged.", e.OrderID, total, reason)
	case KindOrderCancelled:
		if reason == "" {
			return fmt.Sprintf("Your order %s (total %s) was cancelled. Any payment is refunded.", e.OrderID, total)
		}
		return fmt.Sprintf("Your order %s (total %s) was cancelled: %s. Any payment is refunded.", e.OrderID, total, reason)
	}
	return fmt.Sprintf("Your order %s changed (total %s).", e.OrderID, total)
}

// FormatMoney writes an amount in cents as money: 123456 is "$1,234.56",
// -5 is "-$0.05".
func FormatMoney(cents int64) string {
	sign := ""
	u := uint64(cents)
	if cents < 0 {
		sign = "-"
		u = uint64(-(cents + 1)) + 1 // no overflow for the smallest int64
	}
	whole := strconv.FormatUint(u/100, 10)
	var b strings.Builder
	b.WriteString(sign)
	b.WriteByte('$')
	for i, d := range whole {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(d)
	}
	fmt.Fprintf(&b, ".%02d", u%100)
	return b.String()
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$`)

// ValidCustomerID reports whether s can name a customer.
func ValidCustomerID(s string) bool { return idPattern.MatchString(s) }
