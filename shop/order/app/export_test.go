package app

// Waiters counts the readers waiting on c.
func Waiters(c *Changes) int { return c.waiters() }
