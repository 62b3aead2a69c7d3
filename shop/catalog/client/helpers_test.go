package client_test

import "os"

func tempDir() (string, func()) {
	dir, err := os.MkdirTemp("", "catalog-client")
	if err != nil {
		panic(err)
	}
	return dir, func() { os.RemoveAll(dir) }
}
