package coordinator

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/gradient"
	"github.com/hashicorp/raft"
)

var _ raft.BatchingFSM = (*FSM)(nil)

// decoded is a submitted update decoded ahead of its turn.
type decoded struct {
	set bool
	u   aggregate.Update
	err error
}

// maxPredecodeFactor bounds the coordinates one batch decodes ahead, as a
// multiple of the model size (each costs 8 bytes of scratch).
const maxPredecodeFactor = 8

// ApplyBatch applies committed entries in order, with the result Apply
// would give for each. Decoding an update is a pure function of its bytes,
// the model size and the codec, so the batch's compressed updates are
// decoded first, in parallel on GOMAXPROCS goroutines; then every entry is
// applied in log order, and the aggregate sees the updates in exactly the
// order Apply would give it. Decode buffers are kept between batches, up
// to 2·maxPredecodeFactor times the model's coordinates in all (8 bytes
// each); trimBatch releases the rest after each batch.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	cmds := make([]command, len(logs))
	valid := make([]bool, len(logs))
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		c, err := decodeCommand(l.Data)
		if err != nil {
			out[i] = err
			continue
		}
		cmds[i], valid[i] = c, true
	}
	pre := f.predecode(cmds, valid)
	for i, l := range logs {
		if !valid[i] {
			continue
		}
		var p *decoded
		if pre != nil && pre[i].set {
			p = &pre[i]
		}
		out[i] = f.applyEntry(l.Index, cmds[i], p)
	}
	return out
}

// predecode decodes the batch's compressed submit entries in parallel into
// the FSM's batch scratch. It returns nil when there is nothing worth doing
// ahead: fewer than two such entries, or dense float32 updates (their check
// is a scan and their decode O(model) of memory each).
func (f *FSM) predecode(cmds []command, valid []bool) []decoded {
	f.mu.RLock()
	codec, n := f.codec, f.n
	f.mu.RUnlock()
	if !codec.Sparse() {
		return nil
	}
	lim := gradient.UploadLimits(n)
	var jobs []int
	budget := maxPredecodeFactor * n
	for i, c := range cmds {
		if !valid[i] || c.Type != cmdSubmit {
			continue
		}
		h, err := gradient.ReadHeader(c.Payload, lim)
		if err != nil || h.K > budget {
			continue // refused or too big: decoded in turn
		}
		budget -= h.K
		jobs = append(jobs, i)
	}
	if len(jobs) < 2 {
		return nil
	}
	if len(f.batch) < len(jobs) {
		f.batch = append(f.batch, make([]scratch, len(jobs)-len(f.batch))...)
	}
	pre := make([]decoded, len(cmds))
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1)) - 1
				if j >= len(jobs) {
					return
				}
				i := jobs[j]
				u, err := codec.Decode(&f.batch[j], n, cmds[i].Payload, float64(cmds[i].Examples))
				pre[i] = decoded{set: true, u: u, err: err}
			}
		}()
	}
	wg.Wait()
	f.trimBatch(n)
	return pre
}

// trimBatch keeps the batch decode buffers within twice
// maxPredecodeFactor times the model's coordinates in all (a batch decodes
// at most maxPredecodeFactor·n ahead; append may have doubled a buffer),
// releasing the buffers beyond: each buffer otherwise keeps the largest
// capacity it ever grew to.
func (f *FSM) trimBatch(n int) {
	budget := 2 * maxPredecodeFactor * n
	for j := range f.batch {
		sc := &f.batch[j]
		c := max(cap(sc.Indices), cap(sc.Values)) + cap(sc.Dense)
		if c > budget {
			clear(f.batch[j:])
			f.batch = f.batch[:j]
			return
		}
		budget -= c
	}
}
