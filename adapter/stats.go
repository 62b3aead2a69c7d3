package adapter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// StatsFormat is how a program writes its statistics.
type StatsFormat string

// The formats of statistics the metrics adapter reads.
const (
	// StatsJSON is one JSON value, objects nested as the program likes:
	// {"parcels":{"delivered":12}} gives parcels.delivered. A number is a
	// value, true and false are 1 and 0; an array's elements are its keys
	// 0, 1, 2...
	StatsJSON StatsFormat = "json"
	// StatsText is one statistic a line, as memcached's and Redis's
	// commands and many status pages write them: "key value",
	// "key=value", "key: value" or "key:value", with blank lines, lines
	// beginning with # and a memcached "STAT " before the key ignored. A
	// key ends at the line's first "=", else at its first space or tab,
	// else at its first ":"; a key's dots separate the segments of a path
	// as a JSON object's nesting does. A key given twice keeps its last
	// value.
	StatsText StatsFormat = "text"
)

// ParseStatsFormat returns the format named s: "json" or "text".
func ParseStatsFormat(s string) (StatsFormat, error) {
	switch f := StatsFormat(s); f {
	case StatsJSON, StatsText:
		return f, nil
	}
	return "", fmt.Errorf("adapter: stats format %q: want json or text", s)
}

// stats is one reading of a program's statistics.
type stats interface {
	// find calls visit for each value at path, with the texts its
	// wildcards stood for, or once with a reason if there is none.
	find(path []segment, visit func(keys []string, v float64, why skipReason))
}

// skipReason says why a declared value is left out of a scrape.
type skipReason string

const (
	found       skipReason = ""
	missing     skipReason = "missing"      // not in the statistics, or null
	notANumber  skipReason = "not_a_number" // text, an object, or a number beyond float64
	negative    skipReason = "negative"     // a counter below zero
	tooMany     skipReason = "too_many"     // a wildcard's matches past MaxSeries
	invalidName skipReason = "invalid"      // a series Prometheus refuses
)

// parseStats reads body in format f.
func parseStats(f StatsFormat, body []byte) (stats, error) {
	switch f {
	case StatsJSON:
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("adapter: stats: not JSON: %w", err)
		}
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			return nil, errors.New("adapter: stats: more than one JSON value")
		}
		return jsonStats{v}, nil
	case StatsText:
		return parseTextStats(body), nil
	}
	return nil, fmt.Errorf("adapter: stats format %q: want json or text", f)
}

// segment is one dot-separated part of a path: a key, or, with a
// wildcard, any key with this prefix and suffix around at least one
// character.
type segment struct {
	key            string
	wild           bool
	prefix, suffix string
}

// match reports whether key fits s, and the text its wildcard stands for.
func (s segment) match(key string) (string, bool) {
	if !s.wild {
		return "", key == s.key
	}
	if len(key) <= len(s.prefix)+len(s.suffix) || !strings.HasPrefix(key, s.prefix) || !strings.HasSuffix(key, s.suffix) {
		return "", false
	}
	return key[len(s.prefix) : len(key)-len(s.suffix)], true
}

// compilePath splits a path into its segments.
func compilePath(path string) ([]segment, error) {
	if path == "" {
		return nil, errors.New("empty")
	}
	parts := strings.Split(path, ".")
	segs := make([]segment, len(parts))
	for i, p := range parts {
		switch strings.Count(p, "*") {
		case 0:
			if p == "" {
				return nil, fmt.Errorf("segment %d is empty", i+1)
			}
			segs[i] = segment{key: p}
		case 1:
			star := strings.IndexByte(p, '*')
			segs[i] = segment{wild: true, prefix: p[:star], suffix: p[star+1:]}
		default:
			return nil, fmt.Errorf("segment %q has more than one *", p)
		}
	}
	return segs, nil
}

// number reads a value's text as a finite number.
func number(s string) (float64, skipReason) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, notANumber
	}
	return f, found
}

// jsonStats are statistics read from JSON.
type jsonStats struct{ root any }

func (s jsonStats) find(path []segment, visit func([]string, float64, skipReason)) {
	walkJSON(s.root, path, nil, visit)
}

func walkJSON(node any, path []segment, keys []string, visit func([]string, float64, skipReason)) {
	if len(path) == 0 {
		switch v := node.(type) {
		case json.Number:
			f, why := number(v.String())
			visit(keys, f, why)
		case bool:
			if v {
				visit(keys, 1, found)
			} else {
				visit(keys, 0, found)
			}
		case nil:
			visit(keys, 0, missing)
		default:
			visit(keys, 0, notANumber)
		}
		return
	}
	seg, rest := path[0], path[1:]
	switch n := node.(type) {
	case map[string]any:
		if !seg.wild {
			child, ok := n[seg.key]
			if !ok {
				visit(keys, 0, missing)
				return
			}
			walkJSON(child, rest, keys, visit)
			return
		}
		names := make([]string, 0, len(n))
		for k := range n {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if text, ok := seg.match(k); ok {
				walkJSON(n[k], rest, append(keys[:len(keys):len(keys)], text), visit)
			}
		}
	case []any:
		if seg.wild && seg.prefix == "" && seg.suffix == "" {
			for i, child := range n {
				walkJSON(child, rest, append(keys[:len(keys):len(keys)], strconv.Itoa(i)), visit)
			}
			return
		}
		if i, err := strconv.Atoi(seg.key); !seg.wild && err == nil && i >= 0 && i < len(n) && strconv.Itoa(i) == seg.key {
			walkJSON(n[i], rest, keys, visit)
			return
		}
		visit(keys, 0, missing)
	default:
		visit(keys, 0, missing)
	}
}

// textStats are statistics read from lines of text.
type textStats struct {
	values map[string]string
	keys   []textKey // sorted
}

// textKey is a key and its segments.
type textKey struct {
	key   string
	parts []string
}

// parseTextStats reads lines of "key value", "key=value" or "key:value"
// (see StatsText). Invalid UTF-8 in a key or value is replaced, so that
// a key can become a label value.
func parseTextStats(body []byte) textStats {
	s := textStats{values: map[string]string{}}
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		key, value, ok := textStat(string(line))
		if ok {
			s.values[key] = value
		}
	}
	for k := range s.values {
		s.keys = append(s.keys, textKey{k, strings.Split(k, ".")})
	}
	sort.Slice(s.keys, func(i, j int) bool { return s.keys[i].key < s.keys[j].key })
	return s
}

// textStat splits one line into its key and value; ok is false for a
// line that holds none.
func textStat(line string) (key, value string, ok bool) {
	if !utf8.ValidString(line) {
		line = strings.ToValidUTF8(line, "\uFFFD")
	}
	line = strings.TrimSpace(line)
	if line == "" || line[0] == '#' {
		return "", "", false
	}
	line = strings.TrimPrefix(line, "STAT ")
	i := strings.IndexByte(line, '=')
	if i < 0 {
		i = strings.IndexFunc(line, unicode.IsSpace)
	}
	if i < 0 {
		i = strings.IndexByte(line, ':')
	}
	if i <= 0 {
		return "", "", false
	}
	key, value = strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
	if value != "" && (value[0] == '=' || value[0] == ':') { // "key = value", "key : value"
		value = strings.TrimSpace(value[1:])
	}
	if key == "" || value == "" {
		return "", "", false
	}
	return key, value, true
}

func (s textStats) find(path []segment, visit func([]string, float64, skipReason)) {
	wild := false
	for _, seg := range path {
		wild = wild || seg.wild
	}
	if !wild {
		parts := make([]string, len(path))
		for i, seg := range path {
			parts[i] = seg.key
		}
		v, ok := s.values[strings.Join(parts, ".")]
		if !ok {
			visit(nil, 0, missing)
			return
		}
		f, why := number(v)
		visit(nil, f, why)
		return
	}
	var keys []string
next:
	for _, k := range s.keys {
		if len(k.parts) != len(path) {
			continue
		}
		keys = keys[:0]
		for i, seg := range path {
			text, ok := seg.match(k.parts[i])
			if !ok {
				continue next
			}
			if seg.wild {
				keys = append(keys, text)
			}
		}
		f, why := number(s.values[k.key])
		visit(keys, f, why)
	}
}
