// Command trellis runs the Trellis container patterns and the reference
// shop: `trellis up` starts the whole shop on a laptop, `trellis service
// NAME` runs one service, `trellis ps` shows what runs; the container
// patterns are commands too: `trellis ambassador`, `trellis sidecar
// config`, `trellis adapter` and `trellis proxy`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
)

func main() {
	ctx, stop := notifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line and returns the exit code: 0 on success, 2
// for bad usage or configuration, the program's own code when a command
// ran one (exitCode), 1 for anything else.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintf(stderr, "trellis: %v\n", err)
	var cfgErr *config.Error
	var usage usageError
	if errors.As(err, &cfgErr) || errors.As(err, &usage) {
		return 2
	}
	return 1
}

// usageError marks errors that are the caller's to fix (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// exitCode is the exit code of a program a command ran and passes on
// (`trellis adapter logs -- COMMAND`); the program said why it failed, so
// run prints nothing.
type exitCode int

func (c exitCode) Error() string { return fmt.Sprintf("exit status %d", int(c)) }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "trellis",
		Short: "Microservice and container design patterns, and a shop built from them",
		Long: `Trellis is a toolkit of microservice and container design patterns in Go,
proved working together in a reference application, the shop.

Run the whole shop on this machine, with an embedded NATS server and one
SQLite database per service:

    trellis up

Every setting is a flag and an environment variable (shown as [$VAR] in each
command's help); a flag given on the command line wins.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	// Every command's bound variables are loaded here, once its flags are
	// parsed and before it runs, so that no command can forget to or load
	// them into a copy of its options. 'service NAME' parses the flags of
	// the service it runs itself, and loads them then (see runService).
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return loadEnv(cmd.Flags())
	}
	root.AddCommand(newUpCmd(), newPsCmd(), newServiceCmd(), newAmbassadorCmd(), newProxyCmd(), newSidecarCmd(),
		newAdapterCmd(), newCarrierCmd(), newEventsCmd(), newSagasCmd(), newKeygenCmd(), newVersionCmd())
	return root
}
