// Command cpucause splits the CPU time per order that BenchmarkPlaceOrderUp
// reports, process by process, into causes, from the CPU profiles the
// benchmark writes with TRELLIS_BENCH_PROFILE_DIR:
//
//	TRELLIS_BENCH_PROFILE_DIR=/tmp/prof go test -run x \
//	    -bench 'BenchmarkPlaceOrderUp/.*/in-flight-16/wait' -benchtime 2000x ./cmd/trellis/ | tee /tmp/bench.txt
//	go run ./cmd/cpucause -bench /tmp/bench.txt -profiles /tmp/prof   # in bench/
//
// Each profile sample is charged to one cause: an fsync anywhere in its
// stack, else a dial, else the leaf-most frame that belongs to SQLite,
// JSON, logging, the NATS server or client, tracing, metrics, HTTP,
// network I/O, the garbage collector or the scheduler; "other" is the
// rest (the services' own code among it). A process's shares are weighted
// by its cpu-ms/order, so the causes add up to the CPU the services and
// the supervisor spend per order. An fsync mostly waits: it shows little
// here and much in the latency.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/google/pprof/profile"
)

// causes are checked in order against each frame, leaf first.
var causes = []struct{ name, match string }{
	{"sqlite", "modernc.org/sqlite"},
	{"json", "encoding/json."},
	{"logging", "log/slog."},
	{"nats-server", "nats-server"},
	{"nats-client", "nats.go"},
	{"tracing", "go.opentelemetry.io"},
	{"metrics", "prometheus"},
	{"http", "net/http."},
	{"network", "internal/poll."},
	{"network", "net."},
	{"gc", "runtime.gcBgMarkWorker"},
	{"gc", "runtime.mallocgc"},
	{"gc", "runtime.gcAssist"},
	{"scheduler", "runtime.schedule"},
	{"scheduler", "runtime.findRunnable"},
	{"scheduler", "runtime.mcall"},
	{"scheduler", "runtime.park_m"},
}

func main() {
	benchFile := flag.String("bench", "", "the benchmark's output")
	dir := flag.String("profiles", "", "TRELLIS_BENCH_PROFILE_DIR of the same run")
	flag.Parse()
	if *benchFile == "" || *dir == "" {
		log.Fatal("cpucause: -bench and -profiles are required")
	}
	cases, err := readBench(*benchFile)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range cases {
		total := map[string]float64{}
		var procs []string
		for proc, ms := range c.cpu {
			file := filepath.Join(*dir, strings.ReplaceAll(c.name, "/", "-")+"-"+proc+".pprof")
			shares, err := shares(file)
			if os.IsNotExist(err) {
				continue // the clients, or a build that serves no profiles
			}
			if err != nil {
				log.Fatal(err)
			}
			procs = append(procs, fmt.Sprintf("%s %.2f", proc, ms))
			for cause, s := range shares {
				total[cause] += s * ms
			}
		}
		sort.Strings(procs)
		fmt.Printf("%s\n  cpu-ms/order by process: %s\n  by cause:", c.name, strings.Join(procs, ", "))
		names := make([]string, 0, len(total))
		for n := range total {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return total[names[i]] > total[names[j]] })
		for _, n := range names {
			fmt.Printf(" %s %.2f", n, total[n])
		}
		fmt.Println()
	}
}

type benchCase struct {
	name string             // e.g. BenchmarkPlaceOrderUp/orchestrated/in-flight-16/wait
	cpu  map[string]float64 // cpu-ms/order by process
}

// readBench reads the cpu-ms/order-<process> metrics of every case.
func readBench(path string) ([]benchCase, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []benchCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") {
			continue
		}
		// The name ends with -GOMAXPROCS.
		name := fields[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		c := benchCase{name: name, cpu: map[string]float64{}}
		for i := 2; i+1 < len(fields); i += 2 {
			if proc, ok := strings.CutPrefix(fields[i+1], "cpu-ms/order-"); ok {
				v, err := strconv.ParseFloat(fields[i], 64)
				if err != nil {
					return nil, fmt.Errorf("%s: %q: %w", path, fields[i], err)
				}
				c.cpu[proc] = v
			}
		}
		out = append(out, c)
	}
	return out, sc.Err()
}

// shares returns the share of a CPU profile's time charged to each cause.
func shares(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	by := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[len(s.Value)-1] // cpu nanoseconds
		total += v
		by[causeOf(s)] += v
	}
	out := map[string]float64{}
	for c, v := range by {
		out[c] = float64(v) / float64(total)
	}
	return out, nil
}

func causeOf(s *profile.Sample) string {
	cause := ""
	for _, loc := range s.Location {
		for _, l := range loc.Line {
			switch fn := l.Function.Name; {
			case strings.Contains(fn, "_unixSync"), strings.Contains(fn, "(*File).Sync"):
				return "fsync"
			case cause == "" && (strings.Contains(fn, "net.(*Dialer)") || strings.Contains(fn, "Transport).dialConn")):
				cause = "dial"
			}
		}
	}
	if cause != "" {
		return cause
	}
	for _, loc := range s.Location { // leaf first
		for i := len(loc.Line) - 1; i >= 0; i-- {
			fn := loc.Line[i].Function.Name
			for _, c := range causes {
				if strings.Contains(fn, c.match) {
					return c.name
				}
			}
		}
	}
	return "other"
}
