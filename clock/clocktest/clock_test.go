package clocktest_test

import (
	"testing"
	"time"

	"github.com/trellis-go/trellis/clock/clocktest"
)

func TestTimersFireInDeadlineOrderAndStopRemovesThem(t *testing.T) {
	c := clocktest.New(time.Unix(0, 0))
	late, early, stopped := c.NewTimer(3*time.Second), c.NewTimer(time.Second), c.NewTimer(2*time.Second)
	if !stopped.Stop() {
		t.Fatal("Stop of a waiting timer reported false")
	}
	if n := c.Timers(); n != 2 {
		t.Fatalf("%d timers waiting; want 2", n)
	}
	c.Advance(time.Second)
	if at := <-early.C(); !at.Equal(time.Unix(1, 0)) {
		t.Fatalf("early timer fired at %v; want 1s", at)
	}
	select {
	case <-late.C():
		t.Fatal("late timer fired before its deadline")
	default:
	}
	c.Advance(5 * time.Second)
	if at := <-late.C(); !at.Equal(time.Unix(3, 0)) {
		t.Fatalf("late timer fired at %v; want its deadline, 3s", at)
	}
	if late.Stop() {
		t.Fatal("Stop of a fired timer reported true")
	}
	if zero := c.NewTimer(0); len(zero.C()) != 1 {
		t.Fatal("a timer of zero did not fire at once")
	}
}

func TestWaitForTimers(t *testing.T) {
	c := clocktest.New(time.Unix(0, 0))
	go c.NewTimer(time.Second)
	if !c.WaitForTimers(1, time.Minute) {
		t.Fatal("WaitForTimers gave up although a timer was created")
	}
	if c.WaitForTimers(2, time.Millisecond) {
		t.Fatal("WaitForTimers reported a second timer that was never created")
	}
}
