// Package secagg is the core of SecAgg+ (Bell et al. 2020), secure
// aggregation over a sparse random graph: the server learns the sum modulo
// 2^32 of the clients' integer vectors and nothing else about any one of
// them, and recovers the sum exactly when clients drop out, as long as
// every secret it needs keeps t shares among the survivors.
//
// The package is pure: no goroutines, no clocks, no I/O. All randomness
// comes from an io.Reader the caller passes in (crypto/rand in a
// deployment, a seeded stream in tests and simulations), so a run is
// reproducible from its seeds. Drivers (the simulator, the coordinator's
// round machine) move the messages; they are not wired in yet (see
// docs/secagg.md).
//
// # The protocol
//
// Params name the round's clients, the neighbourhood size k, the threshold
// t and the vector length d; NewGraph builds the same Harary graph over a
// seeded permutation of the clients for every party. Each client is a
// Client and the server a Server, and a round runs four steps:
//
//  0. Advertise: each client sends two X25519 public keys, c (to encrypt
//     shares) and s (to agree pairwise masks).
//  1. ShareKeys: each client Shamir-shares its mask key s_sk and a fresh
//     self-mask seed b with threshold t among the neighbours that
//     advertised, and seals each neighbour's two shares with AES-256-GCM
//     under a key derived (HKDF-SHA256) from the pair's c keys.
//  2. MaskInput: each client sends y = x + PRG(b) + Σ ±PRG(s_ij) modulo
//     2^32 over its neighbours j that shared keys, where s_ij comes from
//     X25519 of the pair's s keys and the lower ID adds the mask.
//  3. Unmask: each survivor reveals, for each neighbour, the share of b if
//     that neighbour sent its masked input and the share of s_sk if it did
//     not, never both; the server rebuilds the secrets and removes the
//     masks (Server.Sum).
//
// Shamir sharing works over the field of the Mersenne prime 2^61-1; the
// shared secrets are 16-byte seeds (three field elements) from which a
// client derives its mask key s_sk and its self-mask key with HKDF-SHA256.
// PRG is the AES-256-CTR keystream. FixedPoint maps clipped float32 values
// to integers whose sum cannot wrap, MaskedWidth sizes the masked values
// on the wire (and ReadSum reads their sum), and Support draws a random-k
// support from a round seed so that all clients mask the same coordinates.
//
// # Conventions
//
// Errors wrap the sentinels of errors.go. Decoders (the UnmarshalBinary
// methods) bound every count by MaxClients or MaxDim and by the bytes left
// before allocating, and never panic; each has a fuzz target. Programmer
// errors (mismatched lengths) panic with a message starting "secagg: ".
package secagg
