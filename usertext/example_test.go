package usertext_test

import (
	"errors"
	"fmt"

	"github.com/trellis-go/trellis/usertext"
)

func ExampleRule_Check() {
	address := usertext.Rule{Max: 500, Multiline: true, Required: true}
	name := usertext.Rule{Max: 200, Required: true}

	fmt.Println(address.Check("1 Tea Street\nLondon"))
	fmt.Println("name", name.Check("Glass\ncup"))
	fmt.Println("name", name.Check("Glass\x00cup"))
	fmt.Println("name", name.Check("Glass \xffcup"))
	err := name.Check("  ")
	fmt.Println("name", err, errors.Is(err, usertext.ErrRequired))
	// Output:
	// <nil>
	// name must be one line, without tabs: U+000A at character offset 5
	// name must not hold control characters: U+0000 at character offset 5
	// name must be valid UTF-8: byte 0xff at offset 6 is not
	// name is required: 1 to 200 characters, not only white space true
}
