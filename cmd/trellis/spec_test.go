package main

import (
	"os"
	"testing"
)

// The binary carries the shop: --print-spec writes the repository's spec,
// and with no -f and no spec file in the working directory, up runs the
// built-in one.
func TestBuiltInShopSpec(t *testing.T) {
	want, err := os.ReadFile("../../shop/system.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, code := runTrellis(t, nil, "up", "--print-spec")
	if code != 0 || out != string(want) {
		t.Fatalf("up --print-spec: exit %d, %d bytes (want %d)\n%s", code, len(out), len(want), stderr)
	}
	t.Chdir(t.TempDir())
	spec, err := loadSpec("")
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Processes) != 9 {
		t.Fatalf("built-in spec: %d processes", len(spec.Processes))
	}
	if _, err := loadSpec("nope.yaml"); err == nil {
		t.Fatal("a missing -f file must be an error, not the built-in spec")
	}
}

// The carrier's metrics mapping is kept in the spec's environment, so that
// the built-in spec needs no file; shop/carrier/metrics.yaml, the same
// mapping for running the adapter by hand, must not drift from it.
func TestCarrierMappingMatchesTheSpec(t *testing.T) {
	file, err := os.ReadFile("../../shop/carrier/metrics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := loadSpec("../../shop/system.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range spec.Processes {
		for _, sc := range p.Sidecars {
			if p.Name == "carrier" && sc.Name == "metrics" {
				if got := sc.Env["TRELLIS_ADAPTER_MAPPING_YAML"]; got != string(file) {
					t.Fatalf("the spec's mapping differs from shop/carrier/metrics.yaml:\n%s", got)
				}
				return
			}
		}
	}
	t.Fatal("no metrics sidecar of the carrier in shop/system.yaml")
}
