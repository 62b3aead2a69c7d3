package ports

import (
	"context"
	"database/sql"
	"errors"

	"github.com/trellis-go/trellis/messaging"
	"github.com/trellis-go/trellis/messaging/inbox"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/notification/app"
)

// OrderEndSubjects are the order events that notify the customer, in
// every flow of the saga.
var OrderEndSubjects = []string{contract.SubjectOrderConfirmed, contract.SubjectOrderRejected, contract.SubjectOrderCancelled}

// OrderEvents handles the order events of OrderEndSubjects: each stores
// one notification, in the transaction that records the message in the
// inbox, so a redelivered event notifies once. An event that notifies no
// one (no customer) is a permanent failure: it goes to the dead letters.
func OrderEvents(a *app.App, in *inbox.Inbox, consumer string) messaging.Handler {
	return messaging.Typed(inbox.Handler(in, consumer,
		func(ctx context.Context, tx *sql.Tx, msg messaging.Message[contract.OrderEnded]) error {
			subject := msg.Type
			if subject == "" {
				subject = msg.Subject
			}
			_, err := a.NotifyTx(ctx, tx, msg.ID, subject, msg.Payload)
			if errors.Is(err, app.ErrNotNotifiable) {
				return messaging.Permanent(err)
			}
			return err
		}))
}
