package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/transport"
)

// The Raft port: raftStream is the raft.StreamLayer under the node's
// raft.NetworkTransport. With a peer TLS configuration (Config.RaftTLS,
// from transport.PeerTLSConfig) every connection is mutual TLS 1.3 and
// both ends prove the node role; without one it is plain TCP, which Open
// allows on loopback, or anywhere with Config.RaftInsecure.
//
// Accepting: a goroutine accepts TCP connections and hands each to a
// handshake goroutine with a deadline (RaftHandshakeTimeout), at most
// maxRaftHandshakes at once and maxRaftHandshakesPerHost from one remote
// IP (more are closed at once), so that one host holding silent
// connections cannot take every place from the nodes. Only connections
// whose handshake succeeded reach Accept, so raft never reads a byte from
// an unauthenticated peer, and a peer that connects and sends nothing
// holds one goroutine for the handshake timeout, not forever, and never
// delays Accept for the others. Refusals are logged at most once per
// raftRefusalLogEvery, with a count of those not logged.
//
// Dialling resolves the address at every dial, so a node advertised by
// DNS name (Config.RaftAdvertise) is found at its current address.

// RaftHandshakeTimeout bounds a TLS handshake on the Raft port, accepting
// or dialling.
const RaftHandshakeTimeout = 5 * time.Second

const (
	maxRaftHandshakes = 64
	// maxRaftHandshakesPerHost: a node dials a peer once per connection
	// it needs, and handshakes take milliseconds, so a few places suffice.
	maxRaftHandshakesPerHost = 8
	raftRefusalLogEvery      = 10 * time.Second
)

// Errors of the Raft port.
var (
	// ErrRaftClearText: Raft without peer TLS on an address that is not
	// loopback, and Config.RaftInsecure not set.
	ErrRaftClearText = errors.New("coordinator: Raft without peer TLS on an address that is not loopback")
	// ErrRaftAddress: a Raft bind or advertise address that cannot be used.
	ErrRaftAddress = errors.New("coordinator: bad Raft address")
	// ErrRaftTLS: a peer TLS configuration that does not verify peers.
	ErrRaftTLS = errors.New("coordinator: peer TLS configuration does not verify peers")
)

// raftStream is a raft.StreamLayer over TCP, mutual TLS when tls is set.
type raftStream struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tls.Config // nil: plain TCP
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	timeout   time.Duration // handshake
	log       *slog.Logger

	conns  chan net.Conn // authenticated, for Accept
	sem    chan struct{} // handshakes in flight
	hostMu sync.Mutex
	hosts  map[string]int // handshakes in flight per remote IP
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	refused    atomic.Uint64
	logMu      sync.Mutex
	lastLog    time.Time
	suppressed uint64
}

var _ raft.StreamLayer = (*raftStream)(nil)

// raftAddr is an advertised Raft address as given, perhaps a DNS name.
type raftAddr string

func (a raftAddr) Network() string { return "tcp" }
func (a raftAddr) String() string  { return string(a) }

// raftListen configures listenRaft.
type raftListen struct {
	bind      string // address to listen on
	advertise string // HOST:PORT others dial; empty: the bound address, which must then be a specific IP
	tls       *tls.Config
	dial      func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer
	timeout   time.Duration                                                     // handshake; 0: RaftHandshakeTimeout
	log       *slog.Logger
}

// listenRaft opens a Raft port.
func listenRaft(o raftListen) (*raftStream, error) {
	bind, advertise, tlsCfg := o.bind, o.advertise, o.tls
	if tlsCfg != nil && (tlsCfg.ClientAuth != tls.RequireAndVerifyClientCert || len(tlsCfg.Certificates) == 0 || tlsCfg.VerifyConnection == nil || tlsCfg.MinVersion < tls.VersionTLS13) {
		return nil, fmt.Errorf("%w: build it with transport.PeerTLSConfig", ErrRaftTLS)
	}
	if advertise != "" {
		host, port, err := net.SplitHostPort(advertise)
		if p, perr := strconv.ParseUint(port, 10, 16); err != nil || perr != nil || host == "" || p == 0 {
			return nil, fmt.Errorf("%w: advertise %q: want HOST:PORT", ErrRaftAddress, advertise)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("%w: advertise %q is not an address others can dial", ErrRaftAddress, advertise)
		}
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRaftAddress, err)
	}
	s := &raftStream{ln: ln, tls: tlsCfg, dial: o.dial, timeout: o.timeout, log: o.log,
		conns: make(chan net.Conn), sem: make(chan struct{}, maxRaftHandshakes), hosts: make(map[string]int)}
	if s.dial == nil {
		s.dial = (&net.Dialer{}).DialContext
	}
	if s.timeout <= 0 {
		s.timeout = RaftHandshakeTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if advertise != "" {
		s.advertise = raftAddr(advertise)
	} else {
		a, ok := ln.Addr().(*net.TCPAddr)
		if !ok || a.IP == nil || a.IP.IsUnspecified() {
			ln.Close()
			return nil, fmt.Errorf("%w: %s binds every interface: give an advertise address", ErrRaftAddress, bind)
		}
		s.advertise = a
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if tlsCfg != nil {
		s.wg.Add(1)
		go s.acceptLoop()
	}
	return s, nil
}

// Accept returns the next connection; with TLS, only those whose handshake
// succeeded.
func (s *raftStream) Accept() (net.Conn, error) {
	if s.tls == nil {
		return s.ln.Accept()
	}
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

// acceptLoop accepts TCP connections and starts their handshakes.
func (s *raftStream) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("raft: accept", "err", err)
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		host := remoteHost(c)
		if !s.takeHost(host) {
			c.Close()
			s.refuse(c.RemoteAddr(), errors.New("too many handshakes in flight from this address"))
			continue
		}
		select {
		case s.sem <- struct{}{}:
			s.wg.Add(1)
			go s.handshake(c, host)
		default:
			s.releaseHost(host)
			c.Close()
			s.refuse(c.RemoteAddr(), errors.New("too many handshakes in flight"))
		}
	}
}

// remoteHost is the IP a connection comes from.
func remoteHost(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

// takeHost reserves a handshake place for host, if it has one left.
func (s *raftStream) takeHost(host string) bool {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if s.hosts[host] >= maxRaftHandshakesPerHost {
		return false
	}
	s.hosts[host]++
	return true
}

// releaseHost returns host's place.
func (s *raftStream) releaseHost(host string) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if s.hosts[host]--; s.hosts[host] <= 0 {
		delete(s.hosts, host)
	}
}

// handshake authenticates one accepted connection from host and hands it
// to Accept.
func (s *raftStream) handshake(c net.Conn, host string) {
	defer s.wg.Done()
	defer func() { <-s.sem }()
	defer s.releaseHost(host)
	tc := tls.Server(c, s.tls)
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err == nil {
		err = checkNodeRole(tc)
	}
	if err != nil {
		c.Close()
		if s.ctx.Err() == nil {
			s.refuse(c.RemoteAddr(), err)
		}
		return
	}
	select {
	case s.conns <- tc:
	case <-s.ctx.Done():
		tc.Close()
	}
}

// checkNodeRole checks again, after the handshake, that the peer proved
// the node role: the configuration's VerifyConnection already did, and
// this keeps a configuration that forgot it from opening the port.
func checkNodeRole(tc *tls.Conn) error {
	cs := tc.ConnectionState()
	if len(cs.PeerCertificates) == 0 || !transport.HasNodeRole(cs.PeerCertificates[0]) {
		return fmt.Errorf("%w: the peer's certificate lacks the node role", transport.ErrPeerCert)
	}
	return nil
}

// refuse counts a refused connection and logs it, at most once per
// raftRefusalLogEvery.
func (s *raftStream) refuse(remote net.Addr, err error) {
	n := s.refused.Add(1)
	s.logMu.Lock()
	defer s.logMu.Unlock()
	now := time.Now()
	if !s.lastLog.IsZero() && now.Sub(s.lastLog) < raftRefusalLogEvery {
		s.suppressed++
		return
	}
	s.log.Warn("raft: refused a peer connection", "remote", remote.String(), "err", err, "not_logged_since_last", s.suppressed, "refused_total", n)
	s.lastLog, s.suppressed = now, 0
}

// Dial connects to a peer, resolving address now; with TLS it completes
// the handshake, verifying that the peer is a node, within timeout.
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	c, err := s.dial(ctx, "tcp", string(address))
	if err != nil || s.tls == nil {
		return c, err
	}
	tc := tls.Client(c, s.tls)
	err = tc.HandshakeContext(ctx)
	if err == nil {
		err = checkNodeRole(tc)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("raft: TLS to %s: %w", address, err)
	}
	return tc, nil
}

// Close stops accepting, waits for handshakes in flight and closes the
// listener. Connections already accepted belong to raft.
func (s *raftStream) Close() error {
	var err error
	s.once.Do(func() {
		s.cancel()
		err = s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// Addr returns the advertised address.
func (s *raftStream) Addr() net.Addr { return s.advertise }
