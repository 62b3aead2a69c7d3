package service_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/trellis-go/trellis/service"
)

// A client that sends a request's headers and then a slow or no body holds
// a connection only until the read timeout: it gets a 408 problem and the
// connection is closed. One that never finishes its headers is cut off at
// the read header timeout.
func TestSlowClientsAreCutOff(t *testing.T) {
	r := start(t, func(c *service.Config) {
		c.Timeouts = service.Timeouts{ReadHeader: 200 * time.Millisecond, Read: 400 * time.Millisecond}
	}, service.Options{}, func(h *service.Host) {
		h.Route("POST /v1/things", func(w http.ResponseWriter, r *http.Request) error {
			var v map[string]any
			if err := service.DecodeJSON(w, r, &v); err != nil {
				return err
			}
			return service.WriteJSON(w, http.StatusCreated, v)
		})
	})
	addr := strings.TrimPrefix(r.url, "http://")
	cases := []struct {
		name, send string
		status     string // the answer's status line, "" for none
	}{
		{"body never sent", "POST /v1/things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", "408"},
		{"body cut short", "POST /v1/things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":", "408"},
		{"chunked body never ended", "POST /v1/things HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n", "408"},
		{"headers never ended", "POST /v1/things HTTP/1.1\r\nHost: x\r\n", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, c.send); err != nil {
				t.Fatal(err)
			}
			// Far longer than the timeouts: the server must close first.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			got, err := io.ReadAll(conn)
			if err != nil {
				t.Fatalf("the server held the connection %s: %v", time.Since(start).Round(time.Millisecond), err)
			}
			if c.status == "" {
				if len(got) != 0 && !strings.HasPrefix(string(got), "HTTP/1.1 408") {
					t.Fatalf("answer %q", got)
				}
				return
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(got))), nil)
			if err != nil {
				t.Fatalf("answer %q: %v", got, err)
			}
			body, _ := io.ReadAll(resp.Body)
			if fmt.Sprint(resp.StatusCode) != c.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("answer %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
			}
		})
	}
	// A client that keeps its promise is served on the same settings.
	resp, err := http.Post(r.url+"/v1/things", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("a prompt client got %d", resp.StatusCode)
	}
}

// No metric label takes a value from a request: junk methods, paths and
// headers leave the number of series where it was.
func TestRequestsCannotAddSeries(t *testing.T) {
	r := start(t, nil, service.Options{}, func(h *service.Host) {
		h.Route("GET /v1/things/{id}", func(w http.ResponseWriter, r *http.Request) error {
			return service.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
		})
	})
	addr := strings.TrimPrefix(r.url, "http://")
	send := func(i int) {
		method := []string{"GET", "POST", "BREW", "M" + strings.Repeat("A", 4096) + fmt.Sprint(i), "get"}[i%5]
		path := []string{"/v1/things/" + fmt.Sprint(i), "/x" + fmt.Sprint(i), "/v1/things/" + strings.Repeat("z", 3000),
			"/metrics", "/%zz" + fmt.Sprint(i)}[i/5%5]
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nX-Junk-%d: %d\r\nConnection: close\r\n\r\n", method, path, i, i)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(conn); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Fatal(err)
		}
	}
	series := func() int {
		n, err := testutil.GatherAndCount(r.h.Registry())
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Every kind of request once, so each fixed label value exists...
	for i := range 25 {
		send(i)
	}
	before := series()
	// ...and then many more with fresh junk: no new series.
	for i := 25; i < 500; i++ {
		send(i)
	}
	if after := series(); after != before {
		t.Fatalf("%d series before, %d after 475 junk requests", before, after)
	}
}
