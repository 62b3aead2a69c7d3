package inbox

// QueueLen returns the number of Handle calls waiting for a group.
func QueueLen(in *Inbox) int {
	return in.b.Len()
}
