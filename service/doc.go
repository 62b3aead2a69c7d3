// Package service is the host every Trellis process runs in: twelve-factor
// configuration, an HTTP server with health, readiness and metrics, JSON logs
// and traces, fault injection for drills, and a graceful stop.
//
// A service is a [Host] plus the routes it registers:
//
//	h, err := service.New(ctx, cfg, service.Options{Migrations: migrations})
//	h.Route("GET /v1/products/{sku}", getProduct)
//	err = h.Run(ctx) // until ctx is cancelled (SIGTERM), then drains
//
// What every host serves:
//
//	GET  /healthz     the process is alive
//	GET  /readyz      it can do its work: its database and broker answer and it is not stopping
//	                  (a dependency only some routes need is listed as degraded, the host stays ready)
//	GET  /metrics     Prometheus: requests, latency and in-flight by route and status, Go runtime
//	POST /-/faults    inject errors and latency into business routes (development mode or admin token)
//	DELETE /-/faults  clear them
//	GET /debug/pprof/ profiles for go tool pprof (development mode or admin token)
//
// A route's error becomes a problem document; a 5xx is logged at error
// with the cause the client does not see. A request whose client went away
// first (a caller that cancelled it) is not a server error: it is logged
// below error level and counted with status 499, "client closed request"
// (see observe.StatusClientClosedRequest).
//
// On stop the host turns readiness false, optionally waits ShutdownDelay so
// load balancers notice, lets in-flight requests finish within
// ShutdownGrace, and closes its broker connection and database.
package service
