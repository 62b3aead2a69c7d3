package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/identity"
	"github.com/trellis-go/trellis/problem"
	"github.com/trellis-go/trellis/saga"
	"github.com/trellis-go/trellis/shop/contract"
	"github.com/trellis-go/trellis/shop/order"
	"github.com/trellis-go/trellis/shop/order/ports"
)

func newSagasCmd() *cobra.Command {
	orderURL := order.DefaultURL
	var status, name string
	var limit int
	var retry bool
	var key operatorKey
	cmd := &cobra.Command{
		Use:   "sagas [ID]",
		Short: "List the order service's sagas, show one, or retry a failed compensation",
		Long: `List the sagas of the order service (place-order and cancel-order), newest
first, optionally only those in one status; or show one saga's steps with
their times, attempts and errors. A choreographed order has no central log:
its saga is shown as the events of its conversation, in order.

A saga past its pivot whose step keeps failing shows as retrying, with its
last error as the reason: it is retried until it succeeds, and an operator
should look at why. A saga whose compensation kept failing ends
compensation_failed and waits for an operator: --retry starts its
compensation again.

It asks the order service's HTTP API (GET /v1/sagas, GET /v1/sagas/{id},
POST /v1/sagas/{id}/retry), internal routes that need the shop's service
key: by default the one 'trellis up' keeps in .trellis/service.key.`,
		Example: "  trellis sagas\n  trellis sagas --status compensation_failed\n  trellis sagas 0193...\n  trellis sagas 0193... --retry",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := url.Parse(orderURL)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return config.Invalid(cmd.Flags(), "order-url", orderURL, "must be an http:// or https:// URL")
			}
			base := strings.TrimSuffix(orderURL, "/")
			signer, err := key.signer()
			if err != nil {
				return err
			}
			client := &http.Client{Transport: identity.Transport(nil, signer, contract.ServiceOrder)}
			call := func(ctx context.Context, method, u string, out any) error {
				return callWith(ctx, client, method, u, out)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			out := cmd.OutOrStdout()
			switch {
			case len(args) == 0 && retry:
				return usageError{fmt.Errorf("--retry needs a saga ID")}
			case len(args) == 0:
				q := url.Values{}
				if status != "" {
					q.Set("status", status)
				}
				if name != "" {
					q.Set("name", name)
				}
				q.Set("limit", fmt.Sprint(limit))
				var list struct{ Items []saga.Summary }
				if err := call(ctx, http.MethodGet, base+"/v1/sagas?"+q.Encode(), &list); err != nil {
					return err
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tSAGA\tSTATUS\tSTEP\tUPDATED\tREASON")
				for _, s := range list.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Name, s.Status, s.Step, s.UpdatedAt.Format(time.RFC3339), s.Reason)
				}
				return tw.Flush()
			case retry:
				var info saga.Info
				if err := call(ctx, http.MethodPost, base+"/v1/sagas/"+url.PathEscape(args[0])+"/retry", &info); err != nil {
					return err
				}
				fmt.Fprintf(out, "saga %s: compensation restarted (%s)\n", info.ID, info.Status)
				return nil
			default:
				var v ports.SagaView
				if err := call(ctx, http.MethodGet, base+"/v1/sagas/"+url.PathEscape(args[0]), &v); err != nil {
					return err
				}
				printSaga(out, v)
				return nil
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&orderURL, "order-url", orderURL, "base URL of the order service")
	f.StringVar(&status, "status", "", "only sagas in this status: running, retrying, aborting, compensating, completed, compensated, compensation_failed")
	f.StringVar(&name, "name", "", "only sagas of this kind: place-order or cancel-order")
	f.IntVar(&limit, "limit", 50, "how many sagas to list (1 to 1000)")
	f.BoolVar(&retry, "retry", false, "restart the compensation of a compensation_failed saga")
	config.Bind(f, "order-url", "ORDER_URL")
	key.register(cmd)
	return cmd
}

func printSaga(out io.Writer, v ports.SagaView) {
	fmt.Fprintf(out, "saga %s (%s): %s\n", v.ID, v.Flow, v.Status)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	if v.Saga != nil {
		if v.Saga.Reason != "" {
			fmt.Fprintf(out, "reason: %s\n", v.Saga.Reason)
		}
		fmt.Fprintln(tw, "STEP\tPHASE\tSTATUS\tATTEMPTS\tSTARTED\tTOOK\tERROR")
		for _, s := range v.Saga.Steps {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Step, s.Phase, s.Status, s.Attempts,
				s.StartedAt.Format("15:04:05.000"), s.EndedAt.Sub(s.StartedAt).Round(time.Microsecond), s.Error)
		}
	} else {
		fmt.Fprintln(tw, "TIME\tEVENT\tSOURCE\tMESSAGE")
		for _, e := range v.Events {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.At.Format("15:04:05.000"), e.Type, e.Source, e.MessageID)
		}
	}
	_ = tw.Flush()
}

// callWith sends a request to a service's API and decodes its JSON
// answer; a problem answer becomes the error.
func callWith(ctx context.Context, client *http.Client, method, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w (is the shop running? see 'trellis up')", method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		err := problem.Read(resp)
		if resp.StatusCode < 500 {
			return usageError{err}
		}
		return err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode: %w", method, u, err)
	}
	return nil
}
