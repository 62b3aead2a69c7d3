// Package yamlconf decodes a YAML (or JSON) configuration strictly and
// says where each problem is: the one way the project's config files
// (the ambassador's, the proxy's) are read.
package yamlconf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one problem of a document, at a line (0 if unknown).
type Problem struct {
	Line int
	Msg  string
}

// Error is a problem with a config, located by file and line: the
// error type of every config this package reads.
type Error struct {
	File string
	Line int // 0 if unknown
	Msg  string
}

// Error formats the problem as file:line: msg.
func (e *Error) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// Errors returns the problems of the document file as one error, each an
// *Error, joined; nil if there are none.
func Errors(file string, probs []Problem) error {
	errs := make([]error, len(probs))
	for i, p := range probs {
		errs[i] = &Error{File: file, Line: p.Line, Msg: p.Msg}
	}
	return errors.Join(errs...)
}

// Parse decodes the document file, of at most limit bytes, into v as
// Decode does, and returns its root mapping, or its problems as one error
// (see Errors).
func Parse(data []byte, file string, limit int, v any) (*yaml.Node, error) {
	if len(data) > limit {
		return nil, &Error{File: file, Msg: fmt.Sprintf("larger than %d bytes", limit)}
	}
	root, probs := Decode(data, v)
	if probs != nil {
		return nil, Errors(file, probs)
	}
	return root, nil
}

// ReadFile reads the config file at path, up to limit bytes and one more,
// so that the parser can refuse a file larger than its limit.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// Decode decodes data into v, refusing unknown fields, and returns the
// document's root mapping for finding lines. A document that cannot be
// decoded gives its problems, each with its line where yaml knows it.
func Decode(data []byte, v any) (*yaml.Node, []Problem) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, problems(err)
	}
	if len(doc.Content) == 0 {
		return nil, []Problem{{Msg: "empty document"}}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return nil, problems(err)
	}
	return doc.Content[0], nil
}

// problems turns an error of the yaml package into Problems.
func problems(err error) []Problem {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]Problem, 0, len(msgs))
	for _, m := range msgs {
		m = strings.TrimPrefix(m, "yaml: ")
		line := 0
		if g := lineRE.FindStringSubmatch(m); g != nil {
			line, _ = strconv.Atoi(g[1])
			m = g[2]
		}
		out = append(out, Problem{Line: line, Msg: m})
	}
	return out
}

// ItemLines returns the line of each item of the list under key in the
// mapping m (nil if there is none).
func ItemLines(m *yaml.Node, key string) []int {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.SequenceNode {
			var out []int
			for _, it := range m.Content[i+1].Content {
				out = append(out, it.Line)
			}
			return out
		}
	}
	return nil
}

// Child returns the mapping under key in the mapping m, or nil: to find
// the lines of a list nested in a section.
func Child(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key && m.Content[i+1].Kind == yaml.MappingNode {
			return m.Content[i+1]
		}
	}
	return nil
}

// At returns lines[i], or 0 past its end.
func At(lines []int, i int) int {
	if i < len(lines) {
		return lines[i]
	}
	return 0
}
