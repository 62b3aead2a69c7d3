package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/shop/carrier"
)

func newCarrierCmd() *cobra.Command {
	host, port := "127.0.0.1", carrier.DefaultPort
	pickup, deliver := 2*time.Second, 10*time.Second
	logFile := ""
	cmd := &cobra.Command{
		Use:   "carrier",
		Short: "Run the shop's carrier simulator, a program written without the service host",
		Long: `Run the shop's carrier simulator: POST /parcels, GET /parcels/{id}, GET /stats,
GET /health. A parcel waits at its depot for --pickup-after, then travels
until --deliver-after.

It is written as a third party's program would be: it logs lines of plain
text on stderr (or to --log-file) and serves statistics in a JSON of its own, no /metrics and
no /readyz. 'trellis adapter' makes it look like the shop's services (see
the carrier package's documentation for its log pattern and
shop/carrier/metrics.yaml for its metrics). It stops gracefully on SIGTERM
or Ctrl-C.`,
		Example: "  trellis carrier --port 8107\n  trellis adapter metrics --source http://127.0.0.1:8107/stats --mapping shop/carrier/metrics.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			switch {
			case port < 0 || port > 65535:
				return config.Invalid(fs, "port", strconv.Itoa(port), "must be between 0 and 65535")
			case pickup <= 0:
				return config.Invalid(fs, "pickup-after", pickup.String(), "must be positive")
			case deliver <= pickup:
				return config.Invalid(fs, "deliver-after", deliver.String(), "must be longer than the pickup time "+pickup.String())
			}
			addr := net.JoinHostPort(host, strconv.Itoa(port))
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("carrier: listen on %s: %w", addr, err)
			}
			out := cmd.ErrOrStderr()
			if logFile != "" {
				// As many programs do: a log file, which a log adapter
				// beside it (a sidecar sharing the directory) follows.
				f, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
				if err != nil {
					_ = ln.Close()
					return config.Invalid(fs, "log-file", logFile, err.Error())
				}
				defer f.Close()
				out = f
			}
			c := carrier.New(carrier.Config{Log: out, PickupAfter: pickup, DeliverAfter: deliver})
			return c.Serve(cmd.Context(), ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", host, "interface to listen on (0.0.0.0 in a container)")
	f.IntVar(&port, "port", port, "HTTP port (0 picks a free one)")
	f.DurationVar(&pickup, "pickup-after", pickup, "how long a parcel waits at its depot")
	f.DurationVar(&deliver, "deliver-after", deliver, "how long after its acceptance a parcel is delivered")
	f.StringVar(&logFile, "log-file", logFile, "append the log to this file instead of standard error")
	config.Bind(f, "host", "TRELLIS_HOST")
	config.Bind(f, "port", "PORT")
	config.Bind(f, "pickup-after", "CARRIER_PICKUP_AFTER")
	config.Bind(f, "deliver-after", "CARRIER_DELIVER_AFTER")
	config.Bind(f, "log-file", "CARRIER_LOG_FILE")
	return cmd
}
