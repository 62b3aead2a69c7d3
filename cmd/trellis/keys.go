package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trellis-go/trellis/config"
	"github.com/trellis-go/trellis/identity"
)

// serviceKeyFile is where `trellis up` keeps the deployment's service key,
// in its data directory.
const serviceKeyFile = "service.key"

func newKeygenCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen",
		Short: "Print a new service key for calls between services",
		Long: `Print a new random service key, id:secret, for TRELLIS_SERVICE_KEY or the file
TRELLIS_SERVICE_KEY_FILE names (a Kubernetes Secret, for example). Every
service of a deployment needs the same keys: services sign their calls to
each other's internal routes with the first key and accept any of them.

To rotate: put the new key second in every service's keyring and roll them
out; then put it first and roll out again; then drop the old key.
'trellis up' makes a key of its own in <data-dir>/service.key.`,
		Example: "  trellis keygen > service.key\n  kubectl create secret generic trellis-service-key --from-file=service.key",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := identity.GenerateKey()
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), k.String())
			return err
		},
	}
}

// ensureServiceKey returns the path of the data directory's service key,
// writing a new one, readable by its owner only, if there is none. A key
// that is there but unreadable or malformed is an error, not replaced: the
// running services of this data directory may be using it.
func ensureServiceKey(dataDir string) (string, error) {
	path := filepath.Join(dataDir, serviceKeyFile)
	if _, err := identity.LoadKeyring(path); err == nil {
		return path, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("service key: %w", err)
	}
	k, err := identity.GenerateKey()
	if err != nil {
		return "", err
	}
	// Written under a temporary name and renamed, so a crash never leaves
	// half a key behind.
	tmp, err := os.CreateTemp(dataDir, serviceKeyFile+".*")
	if err != nil {
		return "", fmt.Errorf("service key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := fmt.Fprintf(tmp, "# trellis service key: the first signs, all verify\n%s\n", k); err != nil {
		tmp.Close()
		return "", fmt.Errorf("service key: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("service key: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("service key: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("service key: %w", err)
	}
	return path, nil
}

// operatorKey is the keyring a command that calls internal routes signs
// with: TRELLIS_SERVICE_KEY, else the file its flag names (by default the
// one `trellis up` keeps in the data directory).
type operatorKey struct {
	file string
	key  string
}

func (o *operatorKey) register(cmd *cobra.Command) {
	o.file = filepath.Join(".trellis", serviceKeyFile)
	f := cmd.Flags()
	f.StringVar(&o.file, "service-key-file", o.file, "service key to sign calls to internal routes with (trellis up keeps one in its data dir)")
	f.StringVar(&o.key, "service-key", "", "service key itself, id:secret (prefer the variable: flags show in ps)")
	config.Bind(f, "service-key-file", "TRELLIS_SERVICE_KEY_FILE")
	config.Bind(f, "service-key", "TRELLIS_SERVICE_KEY")
}

// signer returns a signer speaking for the operator.
func (o *operatorKey) signer() (*identity.Signer, error) {
	var ring *identity.Keyring
	var err error
	if o.key != "" {
		ring, err = identity.ParseKeyring(o.key)
	} else {
		ring, err = identity.LoadKeyring(o.file)
	}
	if err != nil {
		return nil, usageError{fmt.Errorf("%w (the service key of the shop: set TRELLIS_SERVICE_KEY_FILE or --service-key-file)", err)}
	}
	return identity.NewSigner("operator", ring, identity.SignerOptions{}), nil
}
