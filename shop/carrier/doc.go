// Package carrier is the shop's carrier simulator: a small HTTP program
// that takes parcels and delivers them as time passes. It is deliberately
// written the way a third party's program is, without the service host:
// plain net/http, the standard log package writing lines of text, its
// own statistics page in its own JSON. It serves no /metrics, no /readyz,
// no JSON logs; package adapter (and `trellis adapter`) make it look like
// the shop's services from outside, which is what it is for.
//
// # API
//
//	POST /parcels       {"order_id":"o-1","address":"1 Tea Street","weight_g":1200}
//	                    → 201 {"id":"P…","status":"accepted"}, Location /parcels/P…
//	GET  /parcels/{id}  → 200 {"id","order_id","status","depot","weight_g","accepted_at"}
//	GET  /stats         → 200 {"uptime_s":…,"parcels":{"accepted":N,"delivered":N,"in_transit":N},
//	                           "depots":{"east":{"queued":N},…},"refused":N,
//	                           "latency_ms":{"p50":…,"p99":…}}
//	GET  /health        → 200 {"status":"ok"}
//
// A parcel is "accepted" (waiting at its depot) until PickupAfter has
// passed, "in_transit" until DeliverAfter, then "delivered"; time comes
// from Config.Now, so a test moves it by hand. latency_ms is absent until
// a request was timed. Bad input is answered 400 with {"error": "…"}.
//
// # Logs
//
// Each line is the standard log package's UTC time, a level, a message
// and, in this order when present, the fields id, order_id, weight_g,
// status, addr and trace (the trace id of a W3C traceparent header):
//
//	2026/12/08 01:02:03 INFO parcel accepted id=P3f2a9c1d0b7e6a54 order_id=o-1 weight_g=1200 trace=4bf92f3577b34da6a3ce929d0e0e4736
//
// LogPattern, a regular expression with named groups, reads them into
// the project's log schema (trace becomes trace_id):
//
//	trellis adapter logs --format regexp --pattern "$PATTERN" -- trellis carrier
//
// # Metrics
//
// metrics.yaml in this directory maps /stats onto Prometheus metrics
// (carrier_parcels_accepted_total, carrier_depot_parcels_queued{depot},
// carrier_request_latency_seconds{quantile}, ...):
//
//	trellis adapter metrics --source http://127.0.0.1:8107/stats --mapping shop/carrier/metrics.yaml
package carrier
