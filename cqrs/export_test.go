package cqrs

import "github.com/trellis-go/trellis/eventstore"

// SetBeforeTx makes pr call fn before each projection transaction, with
// the first event it is about to apply: a test stalls a projector there, holding
// an event it read, to see what it does with it once it wakes. Call it
// before Run.
func SetBeforeTx(pr *Projector, fn func(eventstore.Event)) { pr.beforeTx = fn }
