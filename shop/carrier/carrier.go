package carrier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/trellis-go/trellis/usertext"
)

// Name is the program's name, and DefaultPort where it listens unless
// told otherwise.
const (
	Name        = "carrier"
	DefaultPort = 8107
)

// LogPattern reads the carrier's log lines (see the package's
// documentation) with adapter.Regexp: time, level, msg, trace_id and the
// fields parcel_id, order_id, weight_g, status and addr.
const LogPattern = `^(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<level>[A-Z]+) (?P<msg>[^=]*?)` +
	`(?: id=(?P<parcel_id>\S+))?(?: order_id=(?P<order_id>\S+))?(?: weight_g=(?P<weight_g>\d+))?` +
	`(?: status=(?P<status>\S+))?(?: addr=(?P<addr>\S+))?(?: trace=(?P<trace_id>[0-9a-f]{32}))?$`

// The statuses of a parcel, in the order it takes them.
const (
	StatusAccepted  = "accepted"
	StatusInTransit = "in_transit"
	StatusDelivered = "delivered"
)

// Limits of what the carrier takes.
const (
	MaxParcels   = 100_000 // parcels it holds; more are refused with 503
	MaxWeightG   = 100_000 // grams in one parcel
	maxBodyBytes = 64 << 10
	latencyRing  = 1024 // requests the latency percentiles are taken over
)

// depots are where parcels wait to be picked up: a fixed set, so a
// label made of them is bounded.
var depots = [...]string{"east", "north", "south", "west"}

// Config is how a carrier behaves; zero fields take defaults.
type Config struct {
	// Now tells the time that moves parcels along (nil: time.Now).
	Now func() time.Time
	// Log receives the carrier's log lines (nil: os.Stderr).
	Log io.Writer
	// PickupAfter is how long a parcel waits at its depot (2 s by
	// default), DeliverAfter how long after its acceptance it is
	// delivered (10 s by default).
	PickupAfter, DeliverAfter time.Duration
	// NewID makes a tracking id (nil: "P" and 16 random hex digits).
	NewID func() string
}

// Carrier is the simulator; its Handler serves the API.
type Carrier struct {
	cfg     Config
	log     *log.Logger
	started time.Time

	mu       sync.Mutex
	parcels  map[string]*parcel
	accepted map[string][]time.Time // by depot: acceptance times, never decreasing
	last     time.Time              // the latest acceptance time
	refused  int
	latency  [latencyRing]float64 // in milliseconds
	nTimed   int                  // requests timed, of which the ring holds the last
}

type parcel struct {
	ID         string    `json:"id"`
	OrderID    string    `json:"order_id"`
	Status     string    `json:"status"`
	Depot      string    `json:"depot"`
	WeightG    int       `json:"weight_g"`
	AcceptedAt time.Time `json:"accepted_at"`
}

// New returns a carrier configured by cfg.
func New(cfg Config) *Carrier {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	if cfg.PickupAfter <= 0 {
		cfg.PickupAfter = 2 * time.Second
	}
	if cfg.DeliverAfter <= 0 {
		cfg.DeliverAfter = 10 * time.Second
	}
	if cfg.NewID == nil {
		cfg.NewID = randomID
	}
	return &Carrier{
		cfg:      cfg,
		log:      log.New(cfg.Log, "", log.LstdFlags|log.LUTC),
		started:  cfg.Now(),
		parcels:  map[string]*parcel{},
		accepted: map[string][]time.Time{},
	}
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return "P" + hex.EncodeToString(b[:])
}

// Handler serves the carrier's API.
func (c *Carrier) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /parcels", c.timed(http.HandlerFunc(c.accept)))
	mux.Handle("GET /parcels/{id}", c.timed(http.HandlerFunc(c.lookup)))
	mux.HandleFunc("GET /stats", c.stats)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	for path, allow := range map[string]string{"/parcels": "POST", "/parcels/{id}": "GET, HEAD", "/stats": "GET, HEAD", "/health": "GET, HEAD"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+allow)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such path")
	})
	return mux
}

// timed records how long h takes, for the latency percentiles.
func (c *Carrier) timed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := c.cfg.Now()
		h.ServeHTTP(w, r)
		ms := float64(c.cfg.Now().Sub(start)) / float64(time.Millisecond)
		c.mu.Lock()
		c.latency[c.nTimed%latencyRing] = ms
		c.nTimed++
		c.mu.Unlock()
	})
}

var (
	orderIDRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
	traceparentRE = regexp.MustCompile(`^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}`)
	addressRule   = usertext.Rule{Max: 200, Multiline: true, Required: true}
)

// traceSuffix is " trace=<id>" for a request with a valid W3C
// traceparent header, else "".
func traceSuffix(r *http.Request) string {
	m := traceparentRE.FindStringSubmatch(r.Header.Get("traceparent"))
	if m == nil || m[1] == "ff" || m[2] == strings.Repeat("0", 32) || m[3] == strings.Repeat("0", 16) {
		return ""
	}
	if m[1] == "00" && len(r.Header.Get("traceparent")) != 55 {
		return "" // version 00 has nothing after the flags
	}
	return " trace=" + m[2]
}

type parcelRequest struct {
	OrderID string `json:"order_id"`
	Address string `json:"address"`
	WeightG *int   `json:"weight_g"`
}

func (c *Carrier) accept(w http.ResponseWriter, r *http.Request) {
	trace := traceSuffix(r)
	refuse := func(status int, reason, detail string) {
		c.mu.Lock()
		c.refused++
		c.mu.Unlock()
		c.log.Printf("WARN parcel refused: %s%s", reason, trace)
		writeError(w, status, detail)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	var req parcelRequest
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			refuse(http.StatusRequestEntityTooLarge, "body too large", fmt.Sprintf("the body is larger than %d bytes", maxBodyBytes))
			return
		}
		refuse(http.StatusBadRequest, "invalid JSON body", "invalid JSON body: "+err.Error())
		return
	}
	if dec.More() {
		refuse(http.StatusBadRequest, "invalid JSON body", "invalid JSON body: more than one value")
		return
	}
	switch {
	case !orderIDRE.MatchString(req.OrderID):
		refuse(http.StatusBadRequest, "bad order_id", "order_id must be 1 to 64 letters, digits or . _ : - (not first)")
		return
	case req.WeightG == nil || *req.WeightG < 1 || *req.WeightG > MaxWeightG:
		refuse(http.StatusBadRequest, "bad weight_g", fmt.Sprintf("weight_g must be a whole number of grams from 1 to %d", MaxWeightG))
		return
	}
	if err := addressRule.Check(req.Address); err != nil {
		refuse(http.StatusBadRequest, "bad address", "address "+err.Error())
		return
	}

	now := c.cfg.Now()
	c.mu.Lock()
	if len(c.parcels) >= MaxParcels {
		c.mu.Unlock()
		refuse(http.StatusServiceUnavailable, "no room", fmt.Sprintf("the carrier holds %d parcels and takes no more", MaxParcels))
		return
	}
	if now.Before(c.last) {
		now = c.last // acceptance times never go back, so they stay sorted
	}
	p := &parcel{ID: c.cfg.NewID(), OrderID: req.OrderID, Depot: depotOf(req.OrderID), WeightG: *req.WeightG, AcceptedAt: now}
	if _, taken := c.parcels[p.ID]; taken {
		c.mu.Unlock()
		writeError(w, http.StatusInternalServerError, "tracking id taken; try again")
		return
	}
	c.parcels[p.ID] = p
	c.accepted[p.Depot] = append(c.accepted[p.Depot], now)
	c.last = now
	c.mu.Unlock()

	c.log.Printf("INFO parcel accepted id=%s order_id=%s weight_g=%d%s", p.ID, p.OrderID, p.WeightG, trace)
	w.Header().Set("Location", "/parcels/"+p.ID)
	writeJSON(w, http.StatusCreated, map[string]string{"id": p.ID, "status": StatusAccepted})
}

// depotOf picks the depot of an order, the same every time.
func depotOf(orderID string) string {
	h := fnv.New32a()
	h.Write([]byte(orderID))
	return depots[h.Sum32()%uint32(len(depots))]
}

func (c *Carrier) status(p *parcel, now time.Time) string {
	switch since := now.Sub(p.AcceptedAt); {
	case since >= c.cfg.DeliverAfter:
		return StatusDelivered
	case since >= c.cfg.PickupAfter:
		return StatusInTransit
	}
	return StatusAccepted
}

func (c *Carrier) lookup(w http.ResponseWriter, r *http.Request) {
	trace := traceSuffix(r)
	now := c.cfg.Now()
	c.mu.Lock()
	p, ok := c.parcels[r.PathValue("id")]
	var view parcel
	if ok {
		view = *p
		view.Status = c.status(p, now)
	}
	c.mu.Unlock()
	if !ok {
		c.log.Printf("WARN parcel not found%s", trace)
		writeError(w, http.StatusNotFound, fmt.Sprintf("no parcel %q", r.PathValue("id")))
		return
	}
	c.log.Printf("INFO parcel looked up id=%s status=%s%s", view.ID, view.Status, trace)
	writeJSON(w, http.StatusOK, view)
}

// Stats is what GET /stats answers.
type Stats struct {
	UptimeS float64 `json:"uptime_s"`
	Parcels struct {
		Accepted  int `json:"accepted"`
		Delivered int `json:"delivered"`
		InTransit int `json:"in_transit"`
	} `json:"parcels"`
	Depots    map[string]DepotStats `json:"depots"`
	Refused   int                   `json:"refused"`
	LatencyMS *Latency              `json:"latency_ms,omitempty"`
}

// DepotStats are one depot's numbers.
type DepotStats struct {
	Queued int `json:"queued"`
}

// Latency are percentiles of the time taken to answer the latest
// requests to /parcels, in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// Stats returns the carrier's numbers now.
func (c *Carrier) Stats() Stats {
	now := c.cfg.Now()
	var s Stats
	s.UptimeS = now.Sub(c.started).Seconds()
	s.Depots = make(map[string]DepotStats, len(depots))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range depots {
		times := c.accepted[d]
		// times are sorted: count those accepted long enough ago.
		upTo := func(age time.Duration) int {
			limit := now.Add(-age)
			return sort.Search(len(times), func(i int) bool { return times[i].After(limit) })
		}
		delivered, pickedUp := upTo(c.cfg.DeliverAfter), upTo(c.cfg.PickupAfter)
		s.Parcels.Accepted += len(times)
		s.Parcels.Delivered += delivered
		s.Parcels.InTransit += pickedUp - delivered
		s.Depots[d] = DepotStats{Queued: len(times) - pickedUp}
	}
	s.Refused = c.refused
	if n := min(c.nTimed, latencyRing); n > 0 {
		ms := append([]float64(nil), c.latency[:n]...)
		sort.Float64s(ms)
		s.LatencyMS = &Latency{P50: percentile(ms, 0.50), P99: percentile(ms, 0.99)}
	}
	return s
}

// percentile is the nearest-rank percentile q of sorted.
func percentile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func (c *Carrier) stats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, c.Stats())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// The server's timeouts: its requests are small, so a client slower than
// this is stuck or hostile.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = time.Minute
	shutdownGrace     = 10 * time.Second
)

// Serve serves the API on ln until ctx ends, then lets the requests in
// flight finish (up to 10 s) and returns nil.
func (c *Carrier) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          log.New(c.cfg.Log, "", log.LstdFlags|log.LUTC),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	c.log.Printf("INFO carrier listening addr=%s", ln.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("carrier: serve: %w", err)
	case <-ctx.Done():
	}
	c.log.Printf("INFO carrier stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("carrier: requests in flight did not finish within %s: %w", shutdownGrace, err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("carrier: serve: %w", err)
	}
	c.log.Printf("INFO carrier stopped")
	return nil
}
