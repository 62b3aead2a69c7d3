// Package layers checks that the package list of docs/architecture.md
// tells the truth: every import points down the list, or within one line
// from right to left.
package layers

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/trellis-go/trellis/"

// layer is one position in the list: its line and its place in the line.
type layer struct {
	line, col int
	prefix    string
}

// readLayers returns the first column of the first code block of
// docs/architecture.md, as prefixes ("saga/", "cmd/trellis") with their
// positions.
func readLayers(t *testing.T, root string) []layer {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	var layers []layer
	in := false
	sc := bufio.NewScanner(bytes.NewReader(doc))
	for line := 0; sc.Scan(); {
		text := sc.Text()
		if strings.HasPrefix(text, "```") {
			if in {
				break
			}
			in = true
			continue
		}
		if !in || strings.TrimSpace(text) == "" {
			continue
		}
		column := regexp.MustCompile(`\s{2,}`).Split(text, 2)[0]
		for col, name := range strings.Fields(column) {
			if i := strings.Index(name, "<"); i >= 0 { // shop/<service>
				name = name[:i]
			}
			layers = append(layers, layer{line: line, col: col, prefix: name})
		}
		line++
	}
	if len(layers) == 0 {
		t.Fatal("docs/architecture.md has no package list")
	}
	return layers
}

// place returns the most specific layer holding the package at rel.
func place(layers []layer, rel string) (layer, bool) {
	var best layer
	found := false
	for _, l := range layers {
		p := strings.TrimSuffix(l.prefix, "/")
		if (rel == p || strings.HasPrefix(rel, p+"/")) && len(p) >= len(strings.TrimSuffix(best.prefix, "/")) {
			best, found = l, true
		}
	}
	return best, found
}

// testSupport reports whether rel is a package of test helpers
// (clocktest, servicetest, testenv...), which only tests import and which
// may lean on what they help test.
func testSupport(rel string) bool {
	last := rel[strings.LastIndex(rel, "/")+1:]
	return strings.HasSuffix(last, "test") || last == "testenv"
}

func TestImportsPointDownTheArchitectureList(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list over the module")
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	layers := readLayers(t, root)
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		rel := strings.TrimPrefix(fields[0], module)
		if testSupport(rel) || strings.HasPrefix(rel, "internal/layers") {
			continue
		}
		from, ok := place(layers, rel)
		if !ok {
			t.Errorf("package %s is on no line of docs/architecture.md", rel)
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			to, ok := place(layers, dep)
			if !ok || to.prefix == from.prefix {
				continue // reported as a package of its own, or within one entry
			}
			if to.line < from.line || (to.line == from.line && to.col > from.col) {
				t.Errorf("%s (%s) imports %s (%s), which is not below it in docs/architecture.md", rel, from.prefix, dep, to.prefix)
			}
		}
	}
}
