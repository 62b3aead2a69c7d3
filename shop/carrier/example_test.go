package carrier_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/trellis-go/trellis/shop/carrier"
)

// A parcel handed to the carrier is delivered once DeliverAfter has
// passed on the carrier's clock, here moved by hand.
func ExampleCarrier() {
	clk := newClock() // a time moved by hand, safe to read from the server's goroutines
	c := carrier.New(carrier.Config{
		Now:   clk.Now,
		Log:   io.Discard,
		NewID: func() string { return "P1" },
	})
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/parcels", "application/json",
		strings.NewReader(`{"order_id":"o-1","address":"1 Tea Street","weight_g":1200}`))
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))

	clk.Advance(10 * time.Second)
	s := c.Stats()
	fmt.Println("delivered:", s.Parcels.Delivered, "in transit:", s.Parcels.InTransit)
	// Output:
	// 201 Created {"id":"P1","status":"accepted"}
	// delivered: 1 in transit: 0
}
