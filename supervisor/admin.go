package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// ProcessesPath is the admin API path listing the replicas.
const ProcessesPath = "/v1/processes"

// maxAdminResponse bounds the admin responses FetchProcesses reads.
const maxAdminResponse = 4 << 20

// problem is an RFC 9457 problem document.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	})
}

// Handler returns the admin API:
//
//	GET /v1/processes   JSON array of ProcessStatus
//
// Other methods get 405 and unknown paths 404, both with an
// application/problem+json body.
func (s *Supervisor) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != ProcessesPath {
			path := r.URL.Path
			if len(path) > 256 { // never echo a megabyte of path
				path = path[:256] + "..."
			}
			writeProblem(w, http.StatusNotFound, fmt.Sprintf("no resource at %q; try GET %s", path, ProcessesPath))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is read-only; use GET", ProcessesPath))
			return
		}
		ps := s.Processes()
		if ps == nil {
			ps = []ProcessStatus{}
		}
		body, err := json.Marshal(ps)
		if err != nil {
			writeProblem(w, http.StatusInternalServerError, "cannot encode process list")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
		_, _ = w.Write(append(body, '\n'))
	})
}

// The admin server's timeouts: its requests are small GETs answered from
// memory, so a client that is slower than this is stuck or hostile.
const (
	adminReadHeaderTimeout = 5 * time.Second
	adminReadTimeout       = 10 * time.Second
	adminWriteTimeout      = 10 * time.Second
	adminIdleTimeout       = time.Minute
)

// AdminServer returns an http.Server for Handler with every timeout set:
// 5 s to send headers, 10 s for a whole request, 10 s to answer, 1 min
// idle. Serve it on a listener of your own, or use ServeAdmin.
func (s *Supervisor) AdminServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: adminReadHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
	}
}

// ServeAdmin serves Handler on addr until ctx is cancelled, then shuts the
// server down gracefully. It returns nil after a shutdown caused by ctx.
func (s *Supervisor) ServeAdmin(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("supervisor: admin listen: %w", err)
	}
	srv := s.AdminServer()
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("supervisor: admin server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("supervisor: admin shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("supervisor: admin server: %w", err)
	}
	return nil
}

// FetchProcesses asks the admin API at adminURL for the status of every
// replica. adminURL is a base URL such as http://127.0.0.1:7070, or just
// host:port.
func FetchProcesses(ctx context.Context, adminURL string) ([]ProcessStatus, error) {
	base := strings.TrimRight(adminURL, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	url := base + ProcessesPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch processes: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	var client http.Client
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch processes: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminResponse))
	if err != nil {
		return nil, fmt.Errorf("fetch processes: read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var p problem
		if json.Unmarshal(body, &p) == nil && p.Detail != "" {
			return nil, fmt.Errorf("fetch processes: GET %s: %s: %s", url, resp.Status, p.Detail)
		}
		return nil, fmt.Errorf("fetch processes: GET %s: %s", url, resp.Status)
	}
	var ps []ProcessStatus
	if err := json.Unmarshal(body, &ps); err != nil {
		return nil, fmt.Errorf("fetch processes: decode response of %s: %w", url, err)
	}
	return ps, nil
}

// WriteTable writes ps as an aligned table with the columns NAME, REPLICA,
// PID, STATE, RESTARTS, URL and UPTIME. A sidecar is named
// process/sidecar, below its process's replica. Uptime is shown for running
// replicas only; missing values are shown as "-".
func WriteTable(w io.Writer, ps []ProcessStatus) error {
	return writeTable(w, ps, time.Now())
}

func writeTable(w io.Writer, ps []ProcessStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREPLICA\tPID\tSTATE\tRESTARTS\tURL\tUPTIME")
	for _, p := range ps {
		pid, url, uptime := "-", "-", "-"
		if p.PID != 0 {
			pid = strconv.Itoa(p.PID)
		}
		if p.URL != "" {
			url = p.URL
		}
		switch p.State {
		case StateStarting, StateReady, StateUnhealthy, StateStopping:
			if !p.StartedAt.IsZero() && p.PID != 0 {
				uptime = max(now.Sub(p.StartedAt), 0).Round(time.Second).String()
			}
		}
		name := p.Name
		if p.Sidecar != "" {
			name += "/" + p.Sidecar
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%s\n", name, p.Replica, pid, p.State, p.Restarts, url, uptime)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write process table: %w", err)
	}
	return nil
}
