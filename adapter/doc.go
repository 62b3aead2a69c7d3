// Package adapter is the adapter pattern: it makes a program that was not
// written with the service host look like the others from outside. This
// part turns a program's own log lines (plain text, logfmt, a regular
// expression with named groups, or JSON with other field names) into the
// project's JSON log schema, the one every Trellis service writes with
// log/slog: time, level, msg, service, trace_id and span_id when the line
// has them, and the line's other fields.
//
// A line that does not parse is not lost: it becomes a record whose
// message is the whole line, with "unparsed": true.
package adapter
