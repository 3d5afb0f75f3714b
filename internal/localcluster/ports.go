package localcluster

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
)

// nodePorts are one node's addresses on 127.0.0.1.
type nodePorts struct {
	grpc, raft, gossip, ui string
}

// Automatic ports come from [autoPortLo, autoPortHi): below Linux's
// ephemeral range (32768–60999), from which every ":0" listener draws, so
// that a port checked here and bound a moment later by a child is not
// taken meanwhile by an ephemeral bind; and apart from the ranges the
// repository's tests pick from (20000–32000).
const (
	autoPortLo = 10000
	autoPortHi = 20000
)

// choosePorts returns the nodes' addresses: from base (see Config.BasePort),
// or, with base 0, free ports picked at random.
func choosePorts(base, nodes int) ([]nodePorts, error) {
	out := make([]nodePorts, nodes)
	if base != 0 {
		for i := range out {
			n := i + 1
			out[i] = nodePorts{addr(base + n), addr(base + 100 + n), addr(base + 200 + n), addr(base + 300 + n)}
			for _, a := range []string{out[i].grpc, out[i].raft, out[i].gossip, out[i].ui} {
				if !free(a) {
					return nil, fmt.Errorf("%w: %s is in use: give another base port, or 0 to pick free ports", ErrConfig, a)
				}
			}
		}
		return out, nil
	}
	used := map[int]bool{}
	pick := func() (string, error) {
		for range 1000 {
			p := autoPortLo + rand.IntN(autoPortHi-autoPortLo)
			if used[p] {
				continue
			}
			used[p] = true
			if a := addr(p); free(a) {
				return a, nil
			}
		}
		return "", fmt.Errorf("localcluster: no free port in [%d, %d)", autoPortLo, autoPortHi)
	}
	for i := range out {
		var err error
		for _, dst := range []*string{&out[i].grpc, &out[i].raft, &out[i].gossip, &out[i].ui} {
			if *dst, err = pick(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func addr(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// free reports whether addr is free for TCP and UDP (gossip uses both).
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
