package coordinator

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// pipelineTransport is a raft.NetworkTransport that keeps track of the
// AppendEntries pipelines it hands out, so that the node can end them when
// it closes.
//
// hashicorp/raft (1.7.3) can leave a leader's replication goroutine
// blocked for good inside a pipeline: when the pipeline's decoder stops
// (a follower answered with a newer term) while the sender waits for room
// in the pipeline's in-flight queue, only closing the pipeline wakes the
// sender, and only that goroutine would close it. Raft's Shutdown then
// waits for it forever (seen as a hung Node.Close in TestRollingRestart:
// replicate → pipelineSend → netPipeline.AppendEntries, 9 minutes).
// Closing a pipeline is safe at any time: Raft treats it as a failed
// pipeline and, while it runs, replicates without one.
type pipelineTransport struct {
	*raft.NetworkTransport
	mu   sync.Mutex
	open map[*trackedPipeline]struct{}
}

func newPipelineTransport(t *raft.NetworkTransport) *pipelineTransport {
	return &pipelineTransport{NetworkTransport: t, open: make(map[*trackedPipeline]struct{})}
}

// AppendEntriesPipeline returns the transport's pipeline, tracked.
func (t *pipelineTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	tp := &trackedPipeline{AppendPipeline: p, t: t}
	t.mu.Lock()
	t.open[tp] = struct{}{}
	t.mu.Unlock()
	return tp, nil
}

// closePipelines closes every pipeline still open.
func (t *pipelineTransport) closePipelines() {
	t.mu.Lock()
	ps := make([]*trackedPipeline, 0, len(t.open))
	for p := range t.open {
		ps = append(ps, p)
	}
	t.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
}

// trackedPipeline forgets itself when closed. The pipeline's own Close is
// idempotent.
type trackedPipeline struct {
	raft.AppendPipeline
	t *pipelineTransport
}

func (p *trackedPipeline) Close() error {
	p.t.mu.Lock()
	delete(p.t.open, p)
	p.t.mu.Unlock()
	return p.AppendPipeline.Close()
}

// shutdownRaft shuts r down. With a pipelineTransport it first closes
// the open pipelines, and again every interval until Raft has stopped, in
// case replication opened a new one meanwhile.
func shutdownRaft(r *raft.Raft, trans raft.Transport, interval time.Duration) error {
	pt, ok := trans.(*pipelineTransport)
	if !ok {
		return r.Shutdown().Error()
	}
	pt.closePipelines()
	done := make(chan error, 1)
	go func() { done <- r.Shutdown().Error() }()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			pt.closePipelines()
		}
	}
}
