package main

import (
	"errors"
	"io"

	"github.com/spf13/pflag"
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
