// Package difftest holds the differential test that proves the claim of
// the README: simulation and the cluster share one code path. The same
// seed and run, driven by sim.Run and by a single-node coordinator (Raft
// on an on-disk log, gRPC on a 127.0.0.1 socket) with client runtimes in
// the same process, end with the same global model, bit for bit. The
// package has no code of its own: it exists to import both drivers, which
// the pure packages may not.
package difftest
