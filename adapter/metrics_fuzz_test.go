package adapter_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-go/trellis/adapter"
)

// FuzzMetricsMapping: whatever a mapping file holds, ParseMapping either
// refuses it with problems that each name the file, or returns a mapping
// Prometheus accepts: the adapter registers (names, labels and the
// metrics that share a name agree) and gathers without error.
func FuzzMetricsMapping(f *testing.F) {
	for _, s := range []string{
		carrierMapping,
		"metrics: []",
		"metrics:\n  - {name: a, type: gauge, path: 'x.*', key_labels: [k]}\n  - {name: a, type: gauge, path: 'y.*', key_labels: [k]}\n",
		"metrics:\n  - &m {name: a, type: gauge, path: a, labels: {k: v}}\n  - *m\n",
		"metrics:\n  - {name: a_total, type: counter, path: a, labels: {q: '1'}}\n  - {name: a_total, type: counter, path: b, labels: {q: '2'}, help: other}\n",
		"metrics: [{name: a, type: gauge, path: a, scale: .inf}]",
		"metrics: [{name: a, type: gauge, path: '*', key_labels: [le]}]",
		"- a\n- b\n", "metrics: !!binary aGVsbG8=", "{metrics: [[]]}", "metrics:\n  - name: \xff\n",
	} {
		f.Add(s)
	}
	stats := adapter.SourceFunc(func(context.Context) ([]byte, error) {
		return []byte(`{"a":1,"b":2,"x":{"p":3},"y":{"q":4},"parcels":{"delivered":5}}`), nil
	})
	f.Fuzz(func(t *testing.T, data string) {
		m, err := adapter.ParseMapping([]byte(data), "fuzz.yaml")
		if err != nil {
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				var me *adapter.MappingError
				if !errors.As(e, &me) || me.File != "fuzz.yaml" || !strings.HasPrefix(e.Error(), "fuzz.yaml") || me.Msg == "" {
					t.Fatalf("problem %q (%T) does not name the file", e, e)
				}
			}
			return
		}
		a, err := adapter.NewMetrics(m, stats, adapter.MetricsOptions{})
		if err != nil {
			t.Fatalf("accepted mapping refused by NewMetrics: %v\n%s", err, data)
		}
		reg := prometheus.NewRegistry()
		if err := reg.Register(a); err != nil {
			t.Fatalf("accepted mapping refused by Prometheus: %v\n%s", err, data)
		}
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("accepted mapping does not gather: %v\n%s", err, data)
		}
	})
}

// FuzzStats: whatever a program answers, in either format, the adapter
// gathers without error, every value it gives is a finite number under a
// label valid as UTF-8, a value the answer does not hold is never given,
// and a scrape fails only for JSON that is not JSON.
func FuzzStats(f *testing.F) {
	for _, s := range []string{
		`{"a":1,"b":{"c":2,"d":"x"},"e":[{"f":1},{"f":2}],"g":true,"h":null}`,
		"a 1\nb.c=2\nb.d: x\ne.0.f:1\n# comment\nSTAT e.1.f 2\nEND\n",
		`{"a":1e999}`, "a NaN\na +Inf\n", "a=\xff\nb.\xff.f 3\n", `[1,2]`, `{"a":1} {"a":2}`, "", "=\n:\n \n",
	} {
		f.Add([]byte(s))
	}
	mapping := mustMapping(f, `
metrics:
  - {name: a, type: gauge, path: a}
  - {name: c_total, type: counter, path: b.c}
  - {name: d, type: gauge, path: b.d}
  - {name: f, type: gauge, path: 'e.*.f', key_labels: [i]}
  - {name: any_key, type: gauge, path: 'b.*', key_labels: [k]}
  - {name: g, type: gauge, path: g}
`)
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, format := range []adapter.StatsFormat{adapter.StatsJSON, adapter.StatsText} {
			src := adapter.SourceFunc(func(context.Context) ([]byte, error) { return body, nil })
			a, err := adapter.NewMetrics(mapping, src, adapter.MetricsOptions{Format: format})
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(a)
			families, err := reg.Gather()
			if err != nil {
				t.Fatalf("%s: %q: %v", format, body, err)
			}
			names := map[string]bool{}
			for _, mf := range families {
				for _, m := range mf.GetMetric() {
					names[mf.GetName()] = true
					v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
					if math.IsNaN(v) || math.IsInf(v, 0) {
						t.Fatalf("%s: %q: %s = %v", format, body, mf.GetName(), v)
					}
					for _, l := range m.GetLabel() {
						if !utf8.ValidString(l.GetValue()) {
							t.Fatalf("%s: %q: label %s=%q", format, body, l.GetName(), l.GetValue())
						}
					}
					if mf.GetName() == "adapter_scrape_success" {
						want := format == adapter.StatsText || json.Valid(body)
						if (v == 1) != want {
							t.Fatalf("%s: %q: success %v", format, body, v)
						}
					}
				}
			}
			if !bytes.Contains(body, []byte("a")) && names["a"] {
				t.Fatalf("%s: %q: a value given for a key the answer does not hold", format, body)
			}
			if !bytes.Contains(body, []byte("c")) && names["c_total"] {
				t.Fatalf("%s: %q: a value given for a key the answer does not hold", format, body)
			}
		}
	})
}
