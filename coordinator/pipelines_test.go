package coordinator

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestClosePipelinesWakesABlockedSender builds the state in which a Raft
// leader's replication goroutine hung in Shutdown: a pipeline whose
// responses nobody consumes (the decoder's output is full) and a sender
// blocked for room in its in-flight queue. closePipelines must wake the
// sender with an error; nothing else does.
func TestClosePipelinesWakesABlockedSender(t *testing.T) {
	peer, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// The peer answers every AppendEntries at once, until the test ends.
	stop, stopped := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-stopped }()
	go func() {
		defer close(stopped)
		for {
			select {
			case rpc := <-peer.Consumer():
				rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
			case <-stop:
				return
			}
		}
	}()
	own, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	trans := newPipelineTransport(own)
	defer trans.Close()
	p, err := trans.AppendEntriesPipeline("peer", peer.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	// Nobody reads p.Consumer(): the decoder blocks once its output is
	// full, then the in-flight queue fills, then AppendEntries blocks.
	blocked := make(chan error, 1)
	go func() {
		for {
			if _, err := p.AppendEntries(&raft.AppendEntriesRequest{}, &raft.AppendEntriesResponse{}); err != nil {
				blocked <- err
				return
			}
		}
	}()
	select {
	case err := <-blocked:
		t.Fatalf("the sender failed before the pipeline was closed: %v", err)
	case <-time.After(200 * time.Millisecond):
		// Not a timing assertion: the sender may block any time from
		// here on, and the close below must wake it whenever it does.
	}
	trans.closePipelines()
	select {
	case err := <-blocked:
		if !errors.Is(err, raft.ErrPipelineShutdown) {
			t.Logf("the sender ended with %v", err) // a write on the closed connection may answer first
		}
	case <-time.After(time.Minute):
		t.Fatal("closing the pipelines did not wake the blocked sender")
	}
	trans.mu.Lock()
	left := len(trans.open)
	trans.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d pipelines still tracked after closing them", left)
	}
}
