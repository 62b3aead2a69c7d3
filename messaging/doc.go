// Package messaging is asynchronous messaging between services over NATS
// JetStream: typed publish and subscribe, durable consumers with
// redelivery, backoff and a dead-letter stream, handler middleware, and
// request/reply over core NATS. Its sub-packages make effects exactly-once
// over this at-least-once pipe: outbox publishes what a local transaction
// committed, inbox applies each message once.
//
// # Envelope and headers
//
// Every message is an [Envelope]: its data is the JSON body; its metadata
// travels in NATS headers, CloudEvents style:
//
//	Nats-Msg-Id             the envelope id: JetStream de-duplicates on it
//	Trellis-Id              the envelope id, a UUID (version 7)
//	Trellis-Type            what the message means, e.g. "order.placed"
//	Trellis-Source          the service that produced it
//	Trellis-Time            when, RFC 3339 with nanoseconds, UTC
//	Trellis-Correlation-Id  the conversation (saga, request) it belongs to
//	Trellis-Causation-Id    the id of the message that caused it
//	Content-Type            application/json
//	traceparent, tracestate, baggage  the producer's trace (W3C)
//
// The subject is the NATS subject. A message without a cause starts a
// conversation: its correlation id is its own id; [CausedBy] continues
// one. Requests add Trellis-Timeout (the time the requester waits), error
// replies Trellis-Error-Code and Trellis-Error, dead letters the
// Trellis-Dead-* headers.
//
// # Publishing
//
// [Publish] encodes a payload, stamps the envelope (source, time, trace
// context of ctx) and waits for the stream's acknowledgement: once it
// returns, the message is stored (on a SyncAlways server, on disk).
// Publishing the same envelope again within the stream's duplicate window
// stores nothing (PubAck.Duplicate). A message that must be published if
// and only if a database transaction commits goes through package outbox
// instead. [EnsureStream] creates file-backed streams that allow the
// atomic batches the outbox relay uses; the stream's owner calls it. A
// service that only reads another's stream calls [EnsureForeignStream],
// which creates it if missing but never changes the owner's settings.
//
// # Consuming
//
// [Subscribe] runs a handler for the messages of a durable consumer with
// explicit acknowledgement; the replicas of a service share it, each
// message going to one of them. Delivery is at least once:
//
//   - handler returns nil: the message is acknowledged. An acknowledgement
//     can be lost, and the handler can succeed and the process die before
//     it is sent; the message then comes again. Handlers with effects use
//     package inbox.
//   - handler fails: the message is negatively acknowledged with a delay
//     from [ConsumerConfig.Backoff] (exponential with jitter by default)
//     and redelivered.
//   - the failure was delivery number MaxDeliveries, or the error wraps
//     [ErrPermanent] (see [Permanent]; payloads that do not decode are
//     permanent): the message is copied to the dead-letter subject with its
//     data, its headers and Trellis-Dead-Error (the last error),
//     Trellis-Dead-Deliveries, -Stream, -Sequence, -Subject, -Consumer and
//     -Time, and only once the dead-letter stream has stored the copy is
//     the original terminated, so it is never delivered again. If the copy
//     cannot be stored, the original is redelivered and tried again: a
//     message is never dropped. Repeated copies of one delivery share a
//     de-duplication id.
//   - a handler that runs longer than AckWait is kept alive with
//     "in progress" signals, and a panic is a failure ([PanicError]), not
//     a crash.
//
// The server's own delivery limit is off (MaxDeliver -1): the consumer,
// not the server, decides when to give up, so a process that dies before
// dead-lettering does not lose the message.
//
// Order: with Concurrency 1 (the default) messages are handled one at a
// time in stream order, but a failed message is redelivered after its
// backoff, behind the ones that followed it. For strict order even across
// failures set MaxAckPending to 1. With Concurrency above 1 there is no
// order.
//
// # Events that must be handled
//
// A cap on deliveries suits messages that may be dropped after a while.
// An event whose effect must happen (a refund for a rejected order, a
// reservation for a placed one) must not be parked after a few transient
// failures, a database busy or a service restarting: set MaxDeliveries
// to [Unlimited]. The consumer then retries a failing message for as long
// as it fails, with the same capped, jittered backoff, and dead-letters
// only a poison message, at its first failure: an error wrapping
// [ErrPermanent], a payload or envelope that does not decode, and a
// handler panic ([PanicError]; a bug that redelivery cannot fix). A
// handler must therefore return [Permanent] only for what can never
// succeed, and a plain error for trouble that may pass. With MaxAckPending
// 1, a message that keeps failing holds up those behind it until it
// succeeds: that is the price of strict order.
//
// # Routers
//
// A service's consumers run as one unit through a [Router]: each [Group]
// is a durable consumer whose messages go to handlers by message type
// ([Group.Handle], typed with [On]) or by subject pattern
// ([Group.HandleSubject]); a message nobody takes is acknowledged and
// counted as ignored, so a producer can add types without breaking its
// consumers. Every group gets the router's middleware
// ([DefaultMiddleware] unless configured) and defaults (MaxDeliveries,
// AckWait). [Router.Run] starts them all and stops them all, letting the
// messages in flight finish; a consumer that cannot start stops the
// others and Run returns why.
//
// # Metrics and alerts
//
// Every dead letter is logged at Error. With [Config.Registerer] set, every
// consumer also counts, by stream and durable consumer (names from the
// configuration, never from a message, so the series stay few):
//
//	messaging_dead_letters_total{stream,consumer,reason}  reason: permanent, panic, max_deliveries
//	messaging_redeliveries_total{stream,consumer}         deliveries number 2 and later
//	messaging_handled_total{stream,consumer,outcome}      outcome: ok, failed
//	messaging_handler_duration_seconds{stream,consumer}   handling time, middleware included
//	messaging_ignored_total{stream,consumer}              a router's messages no handler took
//
// The series start at zero when a consumer starts, so an alert on
// increase(messaging_dead_letters_total[5m]) > 0 fires on the first dead
// letter. A message that keeps failing is visible before it is
// dead-lettered, or instead, on a consumer without a limit: the
// redeliveries counter grows, and the consumer logs it at Warn with its
// last error at deliveries 4, 8, 16 and so on.
//
// # Middleware
//
// A [Handler] sees a [Delivery]: envelope, headers, stream, sequence and
// delivery count. [Middleware] wraps handlers like HTTP middleware;
// [Chain] composes them, the first outermost. [Logging] (slog), [Tracing]
// (a consumer span per delivery from an OpenTelemetry TracerProvider) and
// [Recovery] (panics become failures) are here. Whatever the middleware,
// the handler's context carries the producer's trace context as its remote
// parent.
//
// # Request and reply
//
// [Request] and [Serve] exchange typed messages over core NATS, at most
// once: a lost request or reply is a timeout ([ErrTimeout]), nobody
// serving the subject is [ErrNoResponders], and a responder's error comes
// back as a [*ReplyError] with a machine-readable code. The requester's
// remaining time travels with the request; the responder handles it under
// that timeout and does not reply after it. Responders on one subject form
// a queue group: each request goes to one of them.
package messaging
