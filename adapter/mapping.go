package adapter

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// MetricType is the Prometheus type of a mapped metric.
type MetricType string

// The types a mapping may declare. A program's statistics are numbers it
// already counted or measured, so the adapter exposes them as they are:
// a counter (a total that only grows, reset when the program restarts) or
// a gauge (a value that goes up and down).
const (
	Counter MetricType = "counter"
	Gauge   MetricType = "gauge"
)

// MetricMapping declares one metric: where its value is in the
// program's statistics and how Prometheus sees it.
type MetricMapping struct {
	// Name is the Prometheus name; a counter's ends in _total.
	Name string
	// Help is the metric's help text.
	Help string
	// Type is Counter or Gauge.
	Type MetricType
	// Path is where the value is: keys separated by dots
	// ("parcels.delivered"); a segment with a * matches any key that
	// begins and ends as the segment does ("carriers.*.queued",
	// "queue_*"), the text it stands for becoming a label value.
	Path string
	// Labels are constant labels, the same on every sample.
	Labels map[string]string
	// KeyLabels name the labels the path's wildcards give, in order:
	// one per *.
	KeyLabels []string
	// Scale multiplies the value (0.001 turns milliseconds into
	// seconds); 1 when the mapping gives none.
	Scale float64
	// Line is where the metric is declared in its file.
	Line int
}

// Mapping is a parsed metrics mapping: the metrics a program's
// statistics become.
type Mapping struct {
	File    string // the file it was read from, for messages
	Metrics []MetricMapping
}

// Limits of a mapping file, so that a mistaken file (a log, a binary)
// fails at once rather than costing memory.
const (
	MaxMappingBytes   = 1 << 20
	MaxMappedMetrics  = 1000
	maxMappingErrors  = 20
	defaultMetricHelp = "From the adapted program's statistics."
)

// The names of the adapter's own metrics, which a mapping may not take.
const (
	scrapeSuccessName  = "adapter_scrape_success"
	scrapeDurationName = "adapter_scrape_duration_seconds"
	valuesSkippedName  = "adapter_values_skipped_total"
)

// MappingError is one problem of a mapping file, with where it is: the
// file, the line and the field ("metrics[2].type").
type MappingError struct {
	File  string
	Line  int // 0 when the problem is the whole file's
	Field string
	Msg   string
}

func (e *MappingError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// LoadMapping reads and checks the mapping file at path.
func LoadMapping(path string) (*Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("adapter: mapping: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxMappingBytes+1))
	if err != nil {
		return nil, fmt.Errorf("adapter: mapping: %w", err)
	}
	return ParseMapping(data, path)
}

// ParseMapping reads a mapping file's YAML and checks it whole: unknown
// fields, names Prometheus would refuse, bad types, paths and scales,
// and metrics that would collide. Every problem is reported, each a
// *MappingError naming file, line and field (several are joined with
// errors.Join, sorted by line). file names the data in messages only.
//
//	metrics:
//	  - name: carrier_parcels_delivered_total
//	    help: Parcels delivered.
//	    type: counter
//	    path: parcels.delivered
//	  - name: carrier_depot_parcels_queued
//	    type: gauge
//	    path: depots.*.queued
//	    key_labels: [depot]
//	  - name: carrier_request_latency_seconds
//	    type: gauge
//	    path: latency_ms.p99
//	    labels: {quantile: "0.99"}
//	    scale: 0.001
func ParseMapping(data []byte, file string) (*Mapping, error) {
	p := &mappingParser{file: file}
	m := p.parse(data)
	if err := p.err(); err != nil {
		return nil, err
	}
	return m, nil
}

type mappingParser struct {
	file    string
	errs    []*MappingError
	dropped bool
}

func (p *mappingParser) errorf(line int, field, format string, args ...any) {
	if len(p.errs) >= maxMappingErrors {
		p.dropped = true
		return
	}
	p.errs = append(p.errs, &MappingError{File: p.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

func (p *mappingParser) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
	errs := make([]error, 0, len(p.errs)+1)
	for _, e := range p.errs {
		errs = append(errs, e)
	}
	if p.dropped {
		errs = append(errs, &MappingError{File: p.file, Msg: fmt.Sprintf("too many problems: only the first %d are reported", maxMappingErrors)})
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

var yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlError records an error of the yaml package with its line.
func (p *mappingParser) yamlError(err error) {
	msg, line := strings.TrimPrefix(err.Error(), "yaml: "), 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	p.errorf(line, "", "%s", msg)
}

func (p *mappingParser) parse(data []byte) *Mapping {
	if len(data) > MaxMappingBytes {
		p.errorf(0, "", "larger than %d bytes", MaxMappingBytes)
		return nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorf(0, "", "empty: want a metrics list")
		} else {
			p.yamlError(err)
		}
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errorf(extra.Line, "", "only one YAML document is allowed")
		return nil
	} else if !errors.Is(err, io.EOF) {
		p.yamlError(err)
		return nil
	}
	root := resolve(&doc)
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			p.errorf(0, "", "empty: want a metrics list")
			return nil
		}
		root = resolve(root.Content[0])
	}
	m := &Mapping{File: p.file}
	var list *yaml.Node
	p.fields(root, "", []string{"metrics"}, func(key string, v *yaml.Node) { list = v })
	if p.errs != nil {
		return nil
	}
	if list == nil {
		p.errorf(root.Line, "metrics", "missing: want a list of metrics")
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list.Line, "metrics", "want a list, found %s", kindName(list))
		return nil
	}
	if len(list.Content) > MaxMappedMetrics {
		p.errorf(list.Line, "metrics", "%d metrics: at most %d are allowed", len(list.Content), MaxMappedMetrics)
		return nil
	}
	for i, n := range list.Content {
		if mm, ok := p.metric(resolve(n), fmt.Sprintf("metrics[%d]", i)); ok {
			m.Metrics = append(m.Metrics, mm)
		}
	}
	p.together(m.Metrics)
	return m
}

// resolve follows an alias to the node it names.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

// fields calls set for each key of the mapping n that is one of known,
// reporting any other key, a key given twice, and n not being a mapping.
func (p *mappingParser) fields(n *yaml.Node, at string, known []string, set func(key string, v *yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, at, "want a mapping, found %s", kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		field := k.Value
		if at != "" {
			field = at + "." + k.Value
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(k.Line, at, "a key must be text, found %s", kindName(k))
		case !slices.Contains(known, k.Value):
			p.errorf(k.Line, field, "unknown field (known: %s)", strings.Join(known, ", "))
		case seen[k.Value] > 0:
			p.errorf(k.Line, field, "given twice (first at line %d)", seen[k.Value])
		default:
			seen[k.Value] = k.Line
			set(k.Value, v)
		}
	}
}

// text returns the scalar n's text, reporting anything else.
func (p *mappingParser) text(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n.Line, field, "want text, found %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

var (
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// checkName returns what is wrong with a metric or label name, "" if
// nothing: Prometheus's rules, without the colons kept for recording
// rules, and without the __ prefix kept for Prometheus itself.
func checkName(name string, re *regexp.Regexp) string {
	switch {
	case name == "":
		return "must not be empty"
	case strings.HasPrefix(name, "__"):
		return "must not begin with __ (reserved for Prometheus)"
	case strings.Contains(name, ":"):
		return "must not contain a colon (reserved for recording rules)"
	case !re.MatchString(name):
		return "must be letters, digits and underscores, not beginning with a digit"
	}
	return ""
}

var metricFields = []string{"name", "help", "type", "path", "labels", "key_labels", "scale"}

// metric reads and checks one entry of the metrics list.
func (p *mappingParser) metric(n *yaml.Node, at string) (MetricMapping, bool) {
	before := len(p.errs)
	mm := MetricMapping{Line: n.Line, Scale: 1}
	lines := map[string]int{} // field → its line, for the fields given
	named := false
	p.fields(n, at, metricFields, func(key string, v *yaml.Node) {
		field := at + "." + key
		lines[key] = v.Line
		switch key {
		case "name":
			mm.Name, named = p.text(v, field)
		case "help":
			mm.Help, _ = p.text(v, field)
		case "type":
			if t, ok := p.text(v, field); ok {
				mm.Type = MetricType(t)
				if mm.Type != Counter && mm.Type != Gauge {
					p.errorf(v.Line, field, "%q: want counter or gauge", t)
				}
			}
		case "path":
			if s, ok := p.text(v, field); ok {
				mm.Path = s
				if _, err := compilePath(s); err != nil {
					p.errorf(v.Line, field, "%q: %v", s, err)
				}
			}
		case "labels":
			mm.Labels = p.constLabels(v, field)
		case "key_labels":
			mm.KeyLabels = p.keyLabels(v, field)
		case "scale":
			var f float64
			if v.Kind != yaml.ScalarNode || v.Decode(&f) != nil {
				p.errorf(v.Line, field, "want a number, found %s", kindName(v))
			} else if math.IsNaN(f) || math.IsInf(f, 0) || f <= 0 {
				p.errorf(v.Line, field, "%s: must be a positive number", v.Value)
			} else {
				mm.Scale = f
			}
		}
	})
	if n.Kind != yaml.MappingNode {
		return mm, false
	}
	for _, req := range []string{"name", "type", "path"} {
		if _, ok := lines[req]; !ok {
			p.errorf(n.Line, at+"."+req, "missing")
		}
	}
	if named {
		if why := checkName(mm.Name, metricNameRE); why != "" {
			p.errorf(lines["name"], at+".name", "%q %s", mm.Name, why)
		} else if mm.Name == scrapeSuccessName || mm.Name == scrapeDurationName || mm.Name == valuesSkippedName {
			p.errorf(lines["name"], at+".name", "%q is the adapter's own metric", mm.Name)
		} else if mm.Type == Counter && !strings.HasSuffix(mm.Name, "_total") {
			p.errorf(lines["name"], at+".name", "%q: a counter's name ends in _total", mm.Name)
		}
	}
	if mm.Help == "" {
		mm.Help = defaultMetricHelp
	}
	if lines["path"] > 0 {
		if stars := strings.Count(mm.Path, "*"); stars != len(mm.KeyLabels) {
			line := lines["key_labels"]
			if line == 0 {
				line = lines["path"]
			}
			p.errorf(line, at+".key_labels", "path %q has %d wildcards and %d key labels: give one label for each *", mm.Path, stars, len(mm.KeyLabels))
		}
	}
	for _, k := range mm.KeyLabels {
		if _, ok := mm.Labels[k]; ok {
			p.errorf(lines["key_labels"], at+".key_labels", "%q is a constant label too", k)
		}
	}
	return mm, len(p.errs) == before
}

// constLabels reads the labels mapping: valid names, non-empty values.
func (p *mappingParser) constLabels(n *yaml.Node, field string) map[string]string {
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, field, "want a mapping of label names to values, found %s", kindName(n))
		return nil
	}
	labels := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		_, taken := labels[k.Value]
		name, ok := p.labelName(k, field, taken)
		if !ok {
			continue
		}
		value, ok := p.text(v, field+"."+name)
		if ok && value == "" {
			p.errorf(v.Line, field+"."+name, "a constant label needs a value")
		}
		labels[name] = value
	}
	return labels
}

// keyLabels reads the key_labels list: valid, distinct names.
func (p *mappingParser) keyLabels(n *yaml.Node, field string) []string {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, field, "want a list of label names, found %s", kindName(n))
		return nil
	}
	var names []string
	for i, e := range n.Content {
		e = resolve(e)
		if name, ok := p.labelName(e, fmt.Sprintf("%s[%d]", field, i), slices.Contains(names, e.Value)); ok {
			names = append(names, name)
		}
	}
	return names
}

// labelName reads the label name n, reporting one that is not text, not
// a valid name, or taken already.
func (p *mappingParser) labelName(n *yaml.Node, field string, taken bool) (string, bool) {
	name, ok := p.text(n, field)
	if !ok {
		return "", false
	}
	if why := checkName(name, labelNameRE); why != "" {
		p.errorf(n.Line, field, "label %q %s", name, why)
		return "", false
	}
	if taken {
		p.errorf(n.Line, field, "label %q given twice", name)
		return "", false
	}
	return name, true
}

// together checks the metrics against each other: entries that share a
// name are one metric, so they must agree on type, help and label names,
// and differ in their constant labels' values, or two would give the same
// series.
func (p *mappingParser) together(ms []MetricMapping) {
	first := map[string]int{}  // name → index of its first entry
	series := map[string]int{} // name and constant labels → line
	for i, m := range ms {
		id := m.Name + "{" + labelsKey(m.Labels) + "}"
		if line, ok := series[id]; ok {
			p.errorf(m.Line, fmt.Sprintf("metrics[%d]", i), "%s duplicates the metric at line %d: entries that share a name need different constant label values", m.Name, line)
			continue
		}
		series[id] = m.Line
		j, ok := first[m.Name]
		if !ok {
			first[m.Name] = i
			continue
		}
		o := ms[j]
		switch {
		case m.Type != o.Type:
			p.errorf(m.Line, fmt.Sprintf("metrics[%d].type", i), "%s is a %s at line %d: entries that share a name share a type", m.Name, o.Type, o.Line)
		case m.Help != o.Help:
			p.errorf(m.Line, fmt.Sprintf("metrics[%d].help", i), "%s has another help at line %d: entries that share a name share a help", m.Name, o.Line)
		case !slices.Equal(labelNames(m), labelNames(o)):
			p.errorf(m.Line, fmt.Sprintf("metrics[%d].labels", i), "%s has labels %v at line %d, here %v: entries that share a name share label names",
				m.Name, labelNames(o), o.Line, labelNames(m))
		}
	}
}

// labelsKey is a canonical text of labels, for comparisons.
func labelsKey(labels map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		fmt.Fprintf(&b, "%s=%q,", k, labels[k])
	}
	return b.String()
}

// labelNames are all the label names of m, sorted.
func labelNames(m MetricMapping) []string {
	return slices.Sorted(slices.Values(append(slices.Collect(maps.Keys(m.Labels)), m.KeyLabels...)))
}
