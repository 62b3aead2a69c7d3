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
	if len(spec.Processes) != 8 {
		t.Fatalf("built-in spec: %d processes", len(spec.Processes))
	}
	if _, err := loadSpec("nope.yaml"); err == nil {
		t.Fatal("a missing -f file must be an error, not the built-in spec")
	}
}
