// Package membership tracks which coordinator and client nodes are alive,
// by gossip (hashicorp/memberlist, SWIM). Each member carries metadata: its
// role, its coordinator node ID or client ID, the address it serves on, its
// number of examples, its capacity and the codecs it speaks.
//
// The leader coordinator selects clients only among members memberlist
// considers alive, and drops a selected client from the open round as soon
// as it is declared dead, instead of waiting for the round's deadline.
//
// Gossip is encrypted and authenticated with a shared key (AES-GCM, 16, 24
// or 32 bytes): a node without the key cannot join, and messages without
// it are dropped.
package membership

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Roles of members.
const (
	RoleCoordinator = "coordinator"
	RoleClient      = "client"
)

// Meta is what a member tells the others about itself. Its JSON encoding
// must fit memberlist's 512-byte metadata limit.
type Meta struct {
	Role     string   `json:"r"`
	NodeID   string   `json:"n,omitempty"`
	ClientID uint64   `json:"c,omitempty"`
	GRPC     string   `json:"g,omitempty"`
	Examples uint64   `json:"e,omitempty"`
	Capacity int      `json:"k,omitempty"`
	Codecs   []string `json:"x,omitempty"`
	// Proof binds a client member to its token: ClientProof of the
	// SHA-256 of the client's token, the member's name and ClientID.
	// Coordinators ignore a client member whose proof does not verify.
	Proof []byte `json:"p,omitempty"`
}

// proofContext separates member proofs from every other use of a token.
const proofContext = "fedzip-member-v1"

// ClientProof returns the proof a client member with this name carries in
// its Meta for client ID id: HMAC-SHA256 keyed with tokenHash (the SHA-256
// of the client's bearer token, which is what the coordinators store) over
// "fedzip-member-v1", the name and the ID. Another member cannot make it
// without the token, and it does not verify under another name or ID.
func ClientProof(tokenHash []byte, name string, id uint64) []byte {
	mac := hmac.New(sha256.New, tokenHash)
	mac.Write([]byte(proofContext))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(len(name)))
	mac.Write(b[:])
	mac.Write([]byte(name))
	binary.BigEndian.PutUint64(b[:], id)
	mac.Write(b[:])
	return mac.Sum(nil)
}

// TokenProof is ClientProof for a client that holds its token.
func TokenProof(token, name string, id uint64) []byte {
	h := sha256.Sum256([]byte(token))
	return ClientProof(h[:], name, id)
}

// VerifyClientProof reports, in constant time, whether proof is
// ClientProof(tokenHash, name, id). An empty tokenHash verifies nothing.
func VerifyClientProof(tokenHash []byte, name string, id uint64, proof []byte) bool {
	return len(tokenHash) > 0 && hmac.Equal(proof, ClientProof(tokenHash, name, id))
}

// Member is an alive member with its metadata.
type Member struct {
	Name string
	Addr string
	Meta Meta
}

// Config configures a member.
type Config struct {
	// Name is unique among members.
	Name string
	// BindAddr is the gossip address ("host:port"; port 0 picks one).
	BindAddr string
	// Key is the gossip encryption key (16, 24 or 32 bytes); nil disables
	// encryption (local testing only).
	Key  []byte
	Meta Meta
	// Join are gossip addresses of existing members.
	Join []string
	// OnLeave is called, from memberlist's goroutine, when a member is
	// declared dead or leaves.
	OnLeave func(Member)
	// Fast uses memberlist's local-network timeouts (probe every second,
	// dead within a few seconds); otherwise its LAN defaults.
	Fast bool

	// tune, for tests, changes memberlist's configuration last.
	tune func(*memberlist.Config)
}

// Members is this process's view of the membership.
type Members struct {
	ml   *memberlist.Memberlist
	mu   sync.Mutex
	meta []byte
	cfg  Config
	// alive mirrors memberlist's alive members, kept from its events:
	// memberlist.Members returns nodes that its own goroutines go on
	// mutating, so reading them races.
	alive map[string]Member
}

// ErrKey reports a key of the wrong length.
var ErrKey = errors.New("membership: the gossip key must be 16, 24 or 32 bytes")

// Start joins (or founds) the membership.
func Start(cfg Config) (*Members, error) {
	if cfg.Key != nil && len(cfg.Key) != 16 && len(cfg.Key) != 24 && len(cfg.Key) != 32 {
		return nil, ErrKey
	}
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("membership: bind address %q: %w", cfg.BindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("membership: bind port %q: %w", portStr, err)
	}
	m := &Members{cfg: cfg, alive: map[string]Member{}}
	if m.meta, err = encodeMeta(cfg.Meta); err != nil {
		return nil, err
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 500 * time.Millisecond
		mc.ProbeTimeout = 200 * time.Millisecond
		mc.SuspicionMult = 2
		mc.GossipInterval = 100 * time.Millisecond
	}
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	mc.SecretKey = cfg.Key
	mc.Delegate = m
	mc.Events = &events{m: m}
	mc.Logger = log.New(io.Discard, "", 0)
	if cfg.tune != nil {
		cfg.tune(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: %w", err)
	}
	m.ml = ml
	if len(cfg.Join) > 0 {
		if _, err := ml.Join(cfg.Join); err != nil {
			ml.Shutdown()
			return nil, fmt.Errorf("membership: joining %v: %w", cfg.Join, err)
		}
	}
	return m, nil
}

// Addr returns the gossip address this member listens on.
func (m *Members) Addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Alive returns the members memberlist considers alive, sorted by name.
func (m *Members) Alive() []Member {
	m.mu.Lock()
	out := make([]Member, 0, len(m.alive))
	for _, mem := range m.alive {
		out = append(out, mem)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// AliveClients returns the client IDs of alive client members.
func (m *Members) AliveClients() map[uint64]bool {
	out := map[uint64]bool{}
	for _, mem := range m.Alive() {
		if mem.Meta.Role == RoleClient && mem.Meta.ClientID != 0 {
			out[mem.Meta.ClientID] = true
		}
	}
	return out
}

// SetMeta changes this member's metadata and gossips it. Gossip is best
// effort (UDP datagrams, retransmitted a few times): a starved or busy
// member can miss the update and hold the old metadata until its next full
// state exchange, 15 s or more later, or never if this member dies first.
// So SetMeta also pushes this member's state over TCP to the members it
// joined (Config.Join, the coordinators for a client), which then learn the
// metadata right away. It fails when no join member took the push, or,
// for a member that joined none, when the broadcast did not finish in 5 s.
func (m *Members) SetMeta(meta Meta) error {
	b, err := encodeMeta(meta)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.meta = b
	m.mu.Unlock()
	// UpdateNode sets the local state (a new incarnation) before it waits
	// for the broadcast, so the push below carries the new metadata.
	gossipErr := m.ml.UpdateNode(5 * time.Second)
	if len(m.cfg.Join) == 0 {
		return gossipErr
	}
	if n, err := m.ml.Join(m.cfg.Join); n == 0 {
		return errors.Join(gossipErr, fmt.Errorf("membership: pushing metadata to %v: %w", m.cfg.Join, err))
	}
	return nil
}

// Close leaves the membership gracefully and stops gossiping.
func (m *Members) Close() error {
	m.ml.Leave(time.Second)
	return m.ml.Shutdown()
}

// Kill stops gossiping without leaving, as a crash would.
func (m *Members) Kill() error { return m.ml.Shutdown() }

func encodeMeta(meta Meta) ([]byte, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("membership: metadata of %d bytes, limit %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var meta Meta
	if len(b) > memberlist.MetaMaxSize {
		return meta, fmt.Errorf("membership: metadata of %d bytes", len(b))
	}
	err := json.Unmarshal(b, &meta)
	return meta, err
}

// NodeMeta implements memberlist.Delegate.
func (m *Members) NodeMeta(limit int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.meta) > limit {
		return nil
	}
	return slices.Clone(m.meta)
}

// NotifyMsg implements memberlist.Delegate; members exchange no user
// messages.
func (m *Members) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate.
func (m *Members) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate.
func (m *Members) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate.
func (m *Members) MergeRemoteState(buf []byte, join bool) {}

type events struct{ m *Members }

// member copies what it needs out of n, which memberlist owns.
func member(n *memberlist.Node) (Member, bool) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		return Member{}, false
	}
	return Member{Name: n.Name, Addr: n.Address(), Meta: meta}, true
}

func (e *events) NotifyJoin(n *memberlist.Node) { e.set(n) }

func (e *events) NotifyUpdate(n *memberlist.Node) { e.set(n) }

func (e *events) set(n *memberlist.Node) {
	mem, ok := member(n)
	e.m.mu.Lock()
	defer e.m.mu.Unlock()
	if ok {
		e.m.alive[mem.Name] = mem
	} else {
		delete(e.m.alive, n.Name)
	}
}

func (e *events) NotifyLeave(n *memberlist.Node) {
	mem, ok := member(n)
	e.m.mu.Lock()
	delete(e.m.alive, n.Name)
	e.m.mu.Unlock()
	if ok && e.m.cfg.OnLeave != nil {
		e.m.cfg.OnLeave(mem)
	}
}
