package adapter_test

import (
	"context"
	"log"
	"os"
	"strings"
	"time"

	"github.com/trellis-go/trellis/adapter"
)

// A carrier simulator logs in logfmt; the adapter writes what it says in
// the schema of the other services, so one log pipeline reads them all.
func ExampleLogs() {
	simulator := strings.NewReader(`ts=2026-12-07T23:59:58Z lvl=info msg="parcel handed over" parcel=42` + "\n" +
		"a line of its own\n")
	logs := adapter.NewLogs(adapter.Logfmt(), "carrier", os.Stdout,
		func() time.Time { return time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC) })
	if err := logs.Copy(context.Background(), simulator); err != nil {
		log.Fatal(err)
	}
	// Output:
	// {"time":"2026-12-07T23:59:58Z","level":"INFO","msg":"parcel handed over","service":"carrier","parcel":"42"}
	// {"time":"2026-12-08T00:00:00Z","level":"INFO","msg":"a line of its own","service":"carrier","unparsed":true}
}
