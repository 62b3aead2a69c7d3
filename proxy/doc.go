// Package proxy is the service-mesh sidecar: a proxy beside each service
// that gives every call between services mutual TLS, an identity and the
// project's resilience, without a line of it in the services.
//
// Inbound, the proxy listens with TLS 1.3 and requires a client
// certificate from the deployment's CA; the caller's identity is the
// SPIFFE ID in it (spiffe://trellis.local/service/<name>). Allow rules say
// which services may call which routes (http.ServeMux patterns); a call
// they do not allow gets a 403 problem naming the caller and the route.
// The request goes to the application over plain HTTP on loopback, with
// the caller's name in the Trellis-Peer header, which no caller can set.
//
// Outbound, the application calls each upstream through a plain-HTTP
// listener on loopback; the proxy sends the call over mutual TLS to one of
// the upstream's endpoints, accepting only a server whose certificate
// names that upstream. It balances (power of two choices by requests in
// flight, or round robin), retries requests safe to repeat within a retry
// budget, bounds every call with a timeout, keeps a circuit breaker per
// endpoint (service.ClientTransport's pipeline) and ejects an endpoint that
// fails several times in a row for a while. A request that reached no
// endpoint (connection refused, breaker open) goes to the next one.
//
// Identities are short-lived certificates issued by a CA (CA, Issue,
// IssueFile; trellis up keeps one per data directory and renews every
// identity at a third of its lifetime). An Identity reads its files again
// when they change: new handshakes use the new certificate, and a
// connection made under a replaced or expired certificate is closed after
// its current request, so a renewal fails no request.
package proxy
