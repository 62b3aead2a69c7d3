// Package broker connects a service to NATS with JetStream, either an
// external cluster or a server embedded in the process.
//
// # Why embedded or external
//
// A service should start on a laptop with nothing else running, and in
// production join a shared NATS cluster, with the same code. [Open] with an
// empty [Config.URL] starts a JetStream-enabled nats-server inside the
// process, stores its data under <DataDir>/nats and connects to it
// in-process, without a socket. The server also listens on a random loopback
// port (logged at start) so that tools can inspect it. With TRELLIS_NATS_URL
// ([EnvURL]) set, Open connects to those servers instead. Either way the
// service gets a *nats.Conn and a jetstream.JetStream.
//
// # Durability
//
// JetStream's file store by default fsyncs every two minutes: a message is
// acknowledged once it is written, not once it is on disk, so a crash of the
// machine can lose messages the publisher was told are stored. The embedded
// server ([StartServer]) runs with SyncAlways, which fsyncs before every
// acknowledgement. That buys the promise a PubAck is supposed to make and
// costs throughput: one fsync per message, which asynchronous publishing
// does not batch, so a stream takes about as many messages per second as the
// disk takes fsyncs (see BenchmarkPublishJS and BenchmarkPublishJSAsync). Configure an external cluster the
// same way (jetstream { sync_interval: always }) or rely on replication.
//
// # Reconnection
//
// The connection reconnects forever, and starts even when no server is up
// yet (the first connection is retried in the background), so a service can
// start before its broker; [Broker.Check], the readiness check, reports it
// unready until it is connected and JetStream answers. Between rounds of
// attempts it waits a "full jitter" exponential backoff: a random delay in
// [0, min(MaxReconnectWait, ReconnectWait·2^(n-1))] for the n-th round, so
// that a fleet of services does not reconnect in lockstep after a broker
// restart.
//
// # Tracing
//
// [Broker.Publish] and [Broker.PublishJS] inject the W3C trace context (and
// baggage) of their context into the message headers; [Broker.Extract] gives
// a consumer a context whose remote span context is the publisher's, to start
// its span from. NATS headers are case-sensitive: the keys are the lower-case
// "traceparent", "tracestate" and "baggage", and Extract also accepts other
// spellings written by other clients.
package broker
