package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/service"
	"github.com/trellis-go/trellis/shop"
)

func newServiceCmd() *cobra.Command {
	var names []string
	for _, s := range shop.Services() {
		names = append(names, s.Name)
	}
	cmd := &cobra.Command{
		Use:   "service NAME",
		Short: "Run one shop service",
		Long: `Run one service of the shop: ` + strings.Join(names, ", ") + `.

The service serves its API and GET /healthz, /readyz and /metrics on its port,
owns its database (a SQLite file in the data dir, or PostgreSQL when
<NAME>_DATABASE_URL is set) and connects to NATS (embedded unless
TRELLIS_NATS_URL is set). It stops gracefully on SIGTERM or Ctrl-C.

Run 'trellis service NAME --help' for a service's settings.`,
		Example:            "  trellis service catalog --port 8101\n  CATALOG_DATABASE_URL=postgres://localhost/catalog trellis service catalog",
		DisableFlagParsing: true, // flags depend on the service; parsed below
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
				return listServices(cmd)
			}
			def, ok := shop.Lookup(args[0])
			if !ok {
				return usageError{fmt.Errorf("unknown service %q: choose one of %s", args[0], strings.Join(names, ", "))}
			}
			return runService(cmd, def, args[1:])
		},
	}
	return cmd
}

func listServices(cmd *cobra.Command) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "%s\n\nServices:\n", cmd.Long)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, s := range shop.Services() {
		fmt.Fprintf(tw, "  %s\t%s\t(port %d)\n", s.Name, s.Summary, s.DefaultPort)
	}
	return tw.Flush()
}

func runService(cmd *cobra.Command, def shop.Service, args []string) error {
	cfg := service.Defaults(def.Name)
	cfg.Port = def.DefaultPort
	cfg.Version = buildVersion()
	fs := newFlagSet("trellis service " + def.Name)
	cfg.RegisterFlags(fs)
	register := def.Setup(fs)
	if err := fs.Parse(args); err != nil {
		if isHelp(err) {
			fmt.Fprintf(cmd.OutOrStdout(), "Usage: trellis service %s [flags]\n\nRun the %s service (%s).\n\nFlags:\n%s",
				def.Name, def.Name, def.Summary, fs.FlagUsages())
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	// The root's loadEnv saw none of these flags: cobra does not parse
	// them (DisableFlagParsing), fs does, just above.
	if err := loadEnv(fs); err != nil {
		return err
	}
	if err := cfg.Validate(fs); err != nil {
		return err
	}
	ctx := cmd.Context()
	h, err := service.New(ctx, cfg, service.Options{Migrations: def.Migrations, Broker: def.Broker, Stdout: cmd.OutOrStdout()})
	if err != nil {
		return err
	}
	if err := register(h); err != nil {
		_ = h.Close()
		return err
	}
	return h.Run(ctx)
}
