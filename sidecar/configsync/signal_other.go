//go:build !unix

package configsync

import (
	"errors"
	"os"
)

// ParseSignal fails: this system has no signals to reload a process with.
func ParseSignal(name string) (os.Signal, error) {
	return nil, errors.New("reload signals need a Unix system")
}
