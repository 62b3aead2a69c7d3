package domain_test

import (
	"fmt"

	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/notification/domain"
)

func ExampleFormatMoney() {
	fmt.Println(domain.FormatMoney(123456))
	fmt.Println(domain.FormatMoney(5))
	// Output:
	// $1,234.56
	// $0.05
}

func ExampleMessage() {
	e := contract.OrderEnded{OrderID: "o-7", CustomerID: "c-1", TotalCents: 2599, Reason: "payment declined"}
	fmt.Println(domain.Message(domain.KindOrderRejected, e))
	// Output:
	// Your order o-7 (total $25.99) could not be completed: payment declined. You have not been charged.
}
