// Package coordinator is a coordinator node: one Raft replica of the
// round state, the leader's round driver, and the gRPC service clients
// and other nodes call.
//
// A Node (Open, Config) holds:
//
//   - the FSM (fsm.go), a hashicorp/raft FSM over the pure round machine
//     (package round): it applies the commands of the log (command.go:
//     init, register, open, submit, close, abort, drop, expire, node)
//     deterministically, so that every replica that applied the same log
//     holds bit-identical models. The run (RunConfig) is the log's first
//     command; the log's run wins over a node's own settings.
//   - the leader's driver (Node.loop): it commits the run, opens a round
//     when enough registered clients are alive (they poll, or gossip with
//     a proof keyed by their token; see Config.Alive), closes it when the
//     selected clients reported or at the deadline, and expires clients
//     not seen for Config.ClientTTL. It says once (rate-limited) why no
//     round opens.
//   - the drop worker (Node.dropLoop), which owns the clients gossip said
//     left until their grace ends, and drops them from the open round.
//
// Service and ClusterService (service.go) are the gRPC face: register,
// long-poll for a task, download the model (whole, or compressed deltas
// with a download codec), submit an update, and join or remove nodes. A
// follower redirects to the leader.
//
// The state directory (Config.Dir, statedir.go) holds raft.db (the Raft
// log and stable store, bbolt), snapshots/ and the marker
// fedzip-node.json; Open checks it before Raft reads it and refuses a
// missing, rolled-back, corrupt or foreign state, unless Config.Recover.
// Raft runs over mutual TLS 1.3 between nodes that carry the node role
// (raftstream.go); clear text only on loopback or with
// Config.RaftInsecure.
//
// Package coordinator/server starts and stops all of a node (gRPC,
// gossip, HTTP endpoints, round watching) around a Node. The repository's
// docs/ARCHITECTURE.md describes the packages ("Packages"), the data flow
// of a round ("The data flow of a round"), the node's lifecycle and the
// Raft log entries ("Wire and file formats"); docs/security.md the trust
// boundaries.
package coordinator
