package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/supervisor"
)

func newPsCmd() *cobra.Command {
	admin := "127.0.0.1:7070"
	asJSON := false
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "Show the processes a running 'trellis up' supervises",
		Long: `Show the processes of a running 'trellis up': name, replica, pid, state,
restarts, URL and uptime, read from the supervisor's admin API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url := admin
			if !strings.Contains(url, "://") {
				url = "http://" + url
			}
			procs, err := supervisor.FetchProcesses(cmd.Context(), url)
			if err != nil {
				return fmt.Errorf("%w (is 'trellis up' running?)", err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(procs)
			}
			return supervisor.WriteTable(cmd.OutOrStdout(), procs)
		},
	}
	cmd.Flags().StringVar(&admin, "admin", admin, "address of the supervisor's admin API")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	config.Bind(cmd.Flags(), "admin", "TRELLIS_ADMIN_ADDR")
	return cmd
}
