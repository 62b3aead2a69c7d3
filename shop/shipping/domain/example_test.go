package domain_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/trellis-go/trellis/shop/shipping/domain"
)

func Example() {
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	s := domain.New("shp_o-1", "o-1", "1 Tea Street", at)
	shipped, _, _ := s.Ship()
	_, _, err := shipped.Cancel()
	fmt.Println(shipped.Status, errors.Is(err, domain.ErrShipped))

	cancelled, changed, _ := s.Cancel()
	fmt.Println(cancelled.Status, changed)

	// A cancel that came before the schedule leaves a tombstone.
	t := domain.Tombstone("shp_o-2", "o-2", at)
	fmt.Println(t.Status, t.Address == "")
	fmt.Println(domain.OrderOf("shp_o-2"))
	fmt.Println(domain.ValidateSchedule("o-3", ""))
	// Output:
	// shipped true
	// cancelled true
	// cancelled true
	// o-2 true
	// invalid shipment: address is required: 1 to 500 characters, not only white space
}
