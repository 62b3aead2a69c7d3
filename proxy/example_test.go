package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/trellis-go/trellis/proxy"
)

// Two services in a mesh: payment's proxy in front of its application,
// and order's proxy, through which order calls payment. The call crosses
// mutual TLS, and payment's application learns who called.
func Example() {
	dir, err := os.MkdirTemp("", "mesh")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// The deployment's CA and an identity per service (trellis up does
	// this, and renews them).
	ca, err := proxy.LoadOrCreateCA(dir)
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"order", "payment"} {
		if err := ca.IssueFile(filepath.Join(dir, name+".pem"), name, 0); err != nil {
			log.Fatal(err)
		}
	}
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s from %s\n", r.URL.Path, r.Header.Get(proxy.PeerHeader))
	}))
	defer app.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := func(doc string) *proxy.Proxy {
		cfg, err := proxy.ParseConfig([]byte(doc), "example", func(string) string { return dir })
		if err != nil {
			log.Fatal(err)
		}
		p, err := proxy.New(cfg, proxy.Options{})
		if err != nil {
			log.Fatal(err)
		}
		if err := p.Listen(); err != nil {
			log.Fatal(err)
		}
		go p.Serve(ctx)
		return p
	}
	payment := start(`
service: payment
inbound:
  listen: 127.0.0.1:0
  app: ` + app.URL + `
  allow: [{from: [order], routes: ["POST /v1/charges"]}]
`)
	order := start(`
service: order
outbound: [{name: payment, listen: "127.0.0.1:0", endpoints: ["` + payment.Addr("inbound").String() + `"]}]
`)
	for _, method := range []string{"POST", "DELETE"} {
		req, _ := http.NewRequest(method, "http://"+order.Addr("payment").String()+"/v1/charges", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Println(method, resp.Status)
			continue
		}
		fmt.Print(method, " ", string(body))
	}
	// Output:
	// POST /v1/charges from order
	// DELETE 403 Forbidden
}
