package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/trellis-go/trellis/proxy"
	"github.com/trellis-go/trellis/supervisor"
)

// minMeshCertTTL is the shortest identity lifetime up accepts: renewed at a
// third of it, and read again by the proxies within a second, an identity
// must outlive both.
const minMeshCertTTL = 3 * time.Second

// meshIdentities keeps the identities of a deployment: the CA of dir
// (made on first use), and a certificate for every process of the spec,
// <dir>/<process>.pem, issued anew at a third of its lifetime.
type meshIdentities struct {
	dir   string
	ca    *proxy.CA
	names []string
	ttl   time.Duration
	log   *slog.Logger
}

// newMeshIdentities loads or makes the CA in dir and issues every
// process's identity once.
func newMeshIdentities(dir string, spec *supervisor.Spec, ttl time.Duration, log *slog.Logger) (*meshIdentities, error) {
	ca, err := proxy.LoadOrCreateCA(dir)
	if err != nil {
		return nil, fmt.Errorf("mesh CA: %w", err)
	}
	m := &meshIdentities{dir: dir, ca: ca, ttl: ttl, log: log}
	for _, p := range spec.Processes {
		m.names = append(m.names, p.Name)
	}
	if err := m.issue(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *meshIdentities) issue() error {
	for _, name := range m.names {
		if err := m.ca.IssueFile(filepath.Join(m.dir, name+".pem"), name, m.ttl); err != nil {
			return fmt.Errorf("mesh identity of %s: %w", name, err)
		}
	}
	return nil
}

// renew issues every identity again at a third of its lifetime until ctx
// is done. A failed renewal is logged and tried again at the next turn,
// while the current certificates still have two thirds of their life.
func (m *meshIdentities) renew(ctx context.Context) {
	t := time.NewTicker(m.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := m.issue(); err != nil {
			m.log.Error("mesh identities not renewed", slog.Any("error", err))
			continue
		}
		m.log.Debug("mesh identities renewed", slog.Int("identities", len(m.names)), slog.Duration("ttl", m.ttl))
	}
}
