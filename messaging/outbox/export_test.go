package outbox

import "context"

// SetAfterPublish installs a fault hook that runs after a cycle's
// messages are published and before they are marked sent; an error from
// it aborts the cycle as a crash at that point would.
func SetAfterPublish(r *Relay, hook func(ctx context.Context, ids []string) error) {
	r.afterPublish = hook
}
