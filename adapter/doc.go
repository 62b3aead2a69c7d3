// Package adapter is the adapter pattern: it makes a program that was not
// written with the service host look like the others from outside, without
// changing it.
//
// # Logs
//
// [Logs] turns a program's own log lines (plain text, logfmt, a regular
// expression with named groups, or JSON with other field names) into the
// project's JSON log schema, the one every Trellis service writes with
// log/slog: time, level, msg, service, trace_id and span_id when the line
// has them, and the line's other fields.
//
// A line that does not parse is not lost: it becomes a record whose
// message is the whole line, with "unparsed": true.
//
// # Metrics
//
// [Metrics] exposes a program's own statistics (a JSON document or lines
// of "key value", fetched by a [Source], usually [HTTPSource]) as the
// Prometheus metrics a [Mapping] declares: each metric's name, help, type
// (counter or gauge), the path of its value ("parcels.delivered", with
// wildcards that give labels: "depots.*.queued"), constant labels and a
// scale. A mapping is YAML, read by [ParseMapping] or [LoadMapping], which
// refuse unknown fields, names Prometheus would refuse and metrics that
// would collide, naming the file, the line and the field.
//
// Metrics is a prometheus.Collector: every collection fetches the
// statistics, within a timeout, unless a scrape younger than a second
// (by default) can serve it, and concurrent collections share one fetch.
// A value the statistics lack, or that is not a number, is left out and
// counted in adapter_values_skipped_total, never given as a zero; a
// failed fetch gives no value at all and adapter_scrape_success 0.
//
// # Files
//
// [Follow] reads a log file as tail -F does, through rotation and
// truncation, for an adapter that runs beside a program as a sidecar and
// shares its log directory.
package adapter
