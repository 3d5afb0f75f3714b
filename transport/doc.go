// Package transport carries fedzip between training clients and
// coordinator nodes over gRPC: the wire protocol (generated in fedzippb
// from proto/fedzip/v1/fedzip.proto), TLS and mTLS, token auth, chunked
// streaming of large payloads, and the interceptors that bound sizes,
// check auth and count RPCs. It holds no round logic: the coordinator
// implements fedzippb.CoordinatorServer and Authenticator on top of it,
// the client runtime calls fedzippb.CoordinatorClient over Dial.
//
// # Service
//
// fedzip.v1.Coordinator has five RPCs:
//
//   - Register(join secret, name, capabilities) → client id and token.
//   - GetTask(client id, model version held) → Task, a long poll. When the
//     server's hold time ends without a task it returns NoTaskError
//     (codes.DeadlineExceeded); IsNoTask is true for it and for the
//     client's own deadline, and the client simply polls again.
//   - Download(client id, have, want) → stream of ModelChunk: the model,
//     whole or as a delta from the version the client has.
//   - Submit(stream of UpdateChunk) → SubmitResponse, sent only after the
//     update is committed; resubmission is idempotent.
//   - ClusterStatus → the Raft nodes and the leader's address.
//
// The standard gRPC health service (grpc.health.v1.Health) is registered
// beside it. Only the Raft leader serves Register, GetTask, Download and
// Submit; a follower returns NotLeaderError: codes.Unavailable with the
// leader's address in a status detail (LeaderFromError) and in the
// trailer LeaderKey ("fedzip-leader"). Dial takes several addresses; the
// client redials with the leader's first.
//
// Payloads are chunked (SendModel, RecvModel, SendUpdate, RecvUpdate,
// Upload, DownloadModel): the first message carries a header announcing
// total_bytes and the CRC-32C of the payload. Receivers refuse a total
// above their Limits before allocating and a chunk above Limits.MaxChunk
// (codes.ResourceExhausted), a malformed stream (codes.InvalidArgument),
// and a stream that ends early or fails its checksum (codes.DataLoss).
// Limits come from the model size and the codec's worst case (LimitsFor).
//
// # Ports
//
// A coordinator node serves this package's gRPC service on one TCP port,
// for clients, operators (ClusterStatus) and health checkers alike. Raft
// replication and memberlist gossip use their own ports, owned by the
// coordinator package; this package builds the Raft port's mutual TLS
// configuration (PeerTLSConfig): node certificates from a separate peer
// CA that carry the node role (NodeRoleURI), so that a client certificate
// never speaks Raft.
//
// # Security model
//
//   - Transport: TLS 1.3 (ServerTLSConfig, ClientTLSConfig). With a client
//     CA the server requires and verifies a client certificate (mTLS), so
//     only holders of a certificate from that CA can connect at all.
//     GenerateDevCerts makes a CA, a server and a client certificate for
//     local use (`fedzip dev-certs DIR`). Serving or dialling without TLS
//     must be asked for explicitly (Insecure) and is meant for tests.
//   - Admission: Register requires the federation's join secret,
//     compared in constant time (CheckJoinSecret), and issues a random
//     per-client token (NewToken, 256 bits).
//   - Per-RPC auth: every RPC except Register, ClusterStatus and health
//     carries "authorization: Bearer <token>" and "fedzip-client-id"
//     (TokenCredentials, which refuse to travel without TLS when TLS is
//     configured). The auth interceptors check them with the coordinator's
//     Authenticator (codes.Unauthenticated on failure) and put the client
//     id into the context (ClientIDFromContext). Handlers call
//     CheckClientID on every client id a request names, so a client acts
//     only for itself (codes.PermissionDenied otherwise).
//   - Resource bounds: per-message size (Limits.MaxChunk plus
//     MessageOverhead), per-stream bytes, idle time and minimum rate for
//     client streams, and caps on the uploads open per client and per
//     server, refused at once with codes.ResourceExhausted (StreamGuard);
//     receive buffers that grow only with the data that arrived; handshake
//     timeout, streams per connection,
//     metadata size, keepalive enforcement and a maximum connection age,
//     so that oversized input and stalled clients (slowloris) cost bounded
//     memory and time and do not block others. Handler panics become
//     codes.Internal; the node stays up.
package transport
