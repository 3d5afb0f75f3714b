// Package deps holds no code: its test keeps the import graph as
// docs/ARCHITECTURE.md draws it. The pure packages (round, aggregate,
// gradient, compress, nn, dataset, sim and client) import no gRPC, Raft,
// memberlist, Prometheus or protobuf, nor the project's packages that do
// (transport, coordinator, membership, metrics, client/remote): the
// simulator and a user's Trainer build without the network stack. The
// client process (client/remote) does not import the simulator or the
// coordinator.
package deps
