package main

import (
	"errors"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/trellis-go/trellis/config"
)

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SortFlags = false
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	return fs
}

func isHelp(err error) bool { return errors.Is(err, pflag.ErrHelp) }

// loadEnv sets the flags of fs not given on the command line from the
// environment variables bound to them (config.Bind). The root command runs
// it for every command; a flag set parsed apart from cobra's runs it once
// parsed.
func loadEnv(fs *pflag.FlagSet) error { return config.Load(fs, os.LookupEnv) }
