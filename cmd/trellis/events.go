package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/eventstore"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/store"
)

type eventsOptions struct {
	dataDir     string
	databaseURL string
}

func newEventsCmd() *cobra.Command {
	o := eventsOptions{dataDir: ".trellis"}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Inspect the order service's event store",
		Long: `Inspect the event store of the order service: list its streams, show a
stream's events, and fold an order to its state at any version or time.

It opens the order service's write database read-only: the SQLite file
<data-dir>/order.db, or PostgreSQL when ORDER_DATABASE_URL is set.`,
		Example: "  trellis events streams\n  trellis events show order-0193...\n  trellis events order 0193... --version 1",
	}
	f := cmd.PersistentFlags()
	f.StringVar(&o.dataDir, "data-dir", o.dataDir, "the data dir the shop runs with")
	f.StringVar(&o.databaseURL, "database-url", "", "the order service's database URL (default: SQLite in the data dir)")
	config.Bind(f, "data-dir", "TRELLIS_DATA_DIR")
	config.Bind(f, "database-url", store.EnvVar(order.Name))

	var limit int
	streams := &cobra.Command{
		Use:   "streams",
		Short: "List the streams, newest id last",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withEvents(cmd, &o, func(ctx context.Context, es *eventstore.Store) error {
				list, err := es.ListStreams(ctx, eventstore.ListOptions{Limit: limit})
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "STREAM\tVERSION\tLAST EVENT\tUPDATED")
				for _, s := range list {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s.Stream, s.Version, s.LastType, s.UpdatedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	streams.Flags().IntVar(&limit, "limit", 100, "how many streams to list")

	var from int64
	show := &cobra.Command{
		Use:   "show STREAM",
		Short: "Show a stream's events with their data and metadata",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withEvents(cmd, &o, func(ctx context.Context, es *eventstore.Store) error {
				evs, err := es.ReadStream(ctx, args[0], from, limit)
				if err != nil {
					return err
				}
				if len(evs) == 0 {
					return usageError{fmt.Errorf("stream %q has no events from version %d", args[0], from)}
				}
				return printEvents(cmd.OutOrStdout(), evs)
			})
		},
	}
	show.Flags().Int64Var(&from, "from", 1, "first version to show")
	show.Flags().IntVar(&limit, "limit", 100, "how many events to show")

	var version int64
	var at string
	state := &cobra.Command{
		Use:   "order ID",
		Short: "Show an order's state, now or at a version or time",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withEvents(cmd, &o, func(ctx context.Context, es *eventstore.Store) error {
				orders := order.Aggregate(es)
				var (
					st  any
					v   int64
					err error
				)
				switch {
				case version > 0 && at != "":
					return usageError{errors.New("give --version or --at, not both")}
				case version > 0:
					st, v, err = orders.LoadAtVersion(ctx, args[0], version)
				case at != "":
					t, perr := time.Parse(time.RFC3339, at)
					if perr != nil {
						return &config.Error{Var: "--at", Flag: "at", Value: at, Reason: "must be an RFC 3339 time such as 2026-11-22T10:00:00Z"}
					}
					st, v, err = orders.LoadAtTime(ctx, args[0], t)
				default:
					st, v, err = orders.Load(ctx, args[0])
				}
				if err != nil {
					return err
				}
				if v == 0 {
					return usageError{fmt.Errorf("no order %q (stream %s is empty at that point)", args[0], orders.Stream(args[0]))}
				}
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			})
		},
	}
	state.Flags().Int64Var(&version, "version", 0, "fold the events up to this version")
	state.Flags().StringVar(&at, "at", "", "fold the events recorded up to this time (RFC 3339)")

	cmd.AddCommand(streams, show, state)
	return cmd
}

// withEvents opens the order service's event store for reading, as o says
// once its flags and their environment variables are loaded.
func withEvents(cmd *cobra.Command, o *eventsOptions, fn func(context.Context, *eventstore.Store) error) error {
	url := o.databaseURL
	if url == "" {
		path := filepath.Join(o.dataDir, order.Name+".db")
		if _, err := os.Stat(path); err != nil {
			return usageError{fmt.Errorf("no order database at %s: run 'trellis up' first, or pass --data-dir or --database-url", path)}
		}
	} else if !strings.HasPrefix(url, "postgres") {
		return config.Invalid(cmd.Flags(), "database-url", url, "must be a postgres:// URL (or empty for SQLite in the data dir)")
	}
	ctx := cmd.Context()
	// Read-only and unmigrated: a tool must not change the service's data
	// or schema, whichever version of it runs.
	db, err := store.Open(ctx, store.Config{Service: order.Name, URL: url, DataDir: o.dataDir, ReadOnly: true})
	if err != nil {
		return err
	}
	defer db.Close()
	es, err := eventstore.New(db, eventstore.Options{})
	if err != nil {
		return err
	}
	defer es.Close()
	return fn(ctx, es)
}

func printEvents(w io.Writer, evs []eventstore.Event) error {
	for _, e := range evs {
		meta, _ := json.Marshal(e.Metadata)
		fmt.Fprintf(w, "%s  v%d  #%d  %s  %s\n  data: %s\n  meta: %s\n", e.Stream, e.Version, e.Position, e.Type,
			e.RecordedAt.Format(time.RFC3339Nano), e.Data, meta)
	}
	return nil
}
