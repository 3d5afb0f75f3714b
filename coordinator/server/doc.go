// Package server runs a coordinator node and everything around it, as
// `fedzip coordinator` does, in-process: Start(ctx, cfg) validates the
// Config, binds the gRPC port, starts gossip (memberlist), opens the Raft
// node (coordinator.Open), serves the gRPC service, the Prometheus
// metrics, the dashboard and the delivered model over HTTP, joins an
// existing cluster, and watches rounds: one "round closed" log line per
// round with its evaluation, checkpoints (SaveModel), and delivery of the
// compressed, signed model when training ends (DeliverKey).
//
// Start either returns a running Server or an error with everything it
// had started stopped again. Done and Wait tell when the run ended and
// how; the server keeps serving until Close, which stops all of it and
// may be called more than once. Addresses bound on port 0 are reported
// (GRPCAddr, RaftAddr, GossipAddr, MetricsAddr, UIAddr, HTTPAddr), so
// that tests and local clusters run nodes in one process.
//
// Process-wide settings (the garbage collector's target, signals) stay
// with the caller: the package sets none.
package server
