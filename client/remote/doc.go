// Package remote runs a client against a coordinator cluster over gRPC:
// Run registers, then loops fetch task → download the model (whole, or the
// deltas since the model it holds) → train with a client.Trainer → encode
// with the task's codec and the client's error-feedback state → upload,
// until the coordinator says training is done. It follows leader
// redirects, retries with backoff, and keeps its identity, its
// unacknowledged update, its codec state and the model it holds in
// Config.StateDir, so that a restarted client resumes where it stopped.
//
// What it receives from the network is checked before it is used (guard.go):
// a task, a model or an update it refuses is logged and skipped, and the
// client waits for the next task; it never exits for them.
package remote
