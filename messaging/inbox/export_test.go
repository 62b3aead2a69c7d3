package inbox

// QueueLen returns the number of Handle calls waiting for a group.
func QueueLen(in *Inbox) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.queue)
}
