package config_test

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
)

func Example() {
	fs := pflag.NewFlagSet("catalog", pflag.ContinueOnError)
	port := fs.Int("port", 8101, "port to listen on")
	config.Bind(fs, "port", "PORT")
	_ = fs.Parse(nil)

	environment := map[string]string{"PORT": "9101"}
	lookup := func(k string) (string, bool) { v, ok := environment[k]; return v, ok }
	if err := config.Load(fs, lookup); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(*port)

	environment["PORT"] = "ninety"
	fs2 := pflag.NewFlagSet("catalog", pflag.ContinueOnError)
	fs2.Int("port", 8101, "port to listen on")
	config.Bind(fs2, "port", "PORT")
	_ = fs2.Parse(nil)
	fmt.Println(config.Load(fs2, lookup))
	// Output:
	// 9101
	// invalid value "ninety" for PORT (flag --port): must be an integer
}
