package inventory

import (
	"context"
	"errors"

	"github.com/trellis-go/trellis/twopc"
)

// ErrInjectedCrash is what a coordinator made to crash by
// CrashAfterTransferDecision returns.
var ErrInjectedCrash = errors.New("injected coordinator crash")

// CrashAfterTransferDecision makes transfers stop right after their
// decision is recorded, before any warehouse hears of it, as a crash of
// the coordinator at its commit point would.
func CrashAfterTransferDecision(cfg *TransferConfig) {
	cfg.afterDecision = func(context.Context, string, twopc.Status) error { return ErrInjectedCrash }
}
