package adapters

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sync"

	"github.com/trellis-go/trellis/shop/catalog/domain"
	"github.com/trellis-go/trellis/sidecar/configsync"
)

// FeaturedFile reads the featured products from the catalog's
// configuration directory, the root a configuration sidecar publishes
// into: each read looks at the current revision, and a new revision is
// parsed once. A revision whose file does not parse is not used: the list
// of the last good one is served, and Check reports the bad one, so that
// the sidecar, seeing the catalog unready, rolls it back.
type FeaturedFile struct {
	file *configsync.File

	mu      sync.Mutex
	rev     configsync.Revision // the revision last looked at
	good    []domain.Featured   // the list of the last revision that parsed
	current error               // why rev's file did not parse, nil if it did
}

// NewFeaturedFile returns the featured products of the root at root.
func NewFeaturedFile(root string) *FeaturedFile {
	return &FeaturedFile{file: configsync.NewFile(root, domain.FeaturedFile), good: []domain.Featured{}}
}

// Featured returns the list of the current revision, or of the last one
// that parsed. No revision yet, or none with the file, is an empty list.
func (f *FeaturedFile) Featured() ([]domain.Featured, error) {
	f.look()
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.good, nil
}

// Check reports a current revision whose featured products do not parse.
func (f *FeaturedFile) Check(context.Context) error {
	f.look()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.current != nil {
		return fmt.Errorf("configuration revision %s: %w", f.rev, f.current)
	}
	return nil
}

// look reads the current revision if it changed since the last look.
func (f *FeaturedFile) look() {
	data, rev, err := f.file.Read()
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// No revision published yet, or one without the file: nothing is
		// featured. (Read's error for a missing current link wraps it.)
		f.mu.Lock()
		f.good, f.current = []domain.Featured{}, nil
		f.mu.Unlock()
		return
	case err != nil:
		f.mu.Lock()
		f.current = err
		f.mu.Unlock()
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev == f.rev && f.rev != "" {
		return
	}
	f.rev = rev
	list, err := domain.ParseFeatured(data)
	if err != nil {
		f.current = err
		return
	}
	f.good, f.current = list, nil
}
