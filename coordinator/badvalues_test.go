package coordinator

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"testing"

	"github.com/fedzip/fedzip/aggregate"
	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
)

// TestBadValuesCostOneLogEntry: a selected client's compressed update
// whose header and checksum are sound but whose values are not finite
// (the client computed the checksum itself) costs at most one Raft log
// entry, however often it is sent: after the FSM refused it once, the
// leader decodes that client's updates for the round before the log.
// Before, each send appended an entry of the update's size that the FSM
// then refused, and the log kept the last 512 of them on disk. The client
// may still send a good update.
func TestBadValuesCostOneLogEntry(t *testing.T) {
	run := testRun(0)
	run.RunID, run.UploadCodec = "0102030405060708090a0b0c0d0e0f10", "topk=0.5,bits=32"
	fed, _ := dataset.Synthetic(1, 1, 4, 3)
	nodes := inmemCluster(t, 1, run)
	leader := leaderOf(t, nodes)
	waitFor(t, "init", func() bool { return leader.FSM().View().Initialised })
	registerClients(t, leader, fed, 4)
	var v View
	waitFor(t, "a round", func() bool { v = leader.FSM().View(); return v.Phase == round.Collecting })
	model, _ := leader.FSM().Model()
	const mark = float32(1234.5678)
	delta := make([]float32, len(model))
	for i := range delta {
		delta[i] = mark
	}
	good := boundPayload(t, leader.FSM().RunID(), run.UploadCodec, v.Round, delta)
	var markBytes, nanBytes [4]byte
	binary.LittleEndian.PutUint32(markBytes[:], math.Float32bits(mark))
	binary.LittleEndian.PutUint32(nanBytes[:], math.Float32bits(float32(math.NaN())))
	at := bytes.Index(good, markBytes[:])
	if at < 0 {
		t.Fatal("no value of the update found in its payload")
	}
	bad := bytes.Clone(good)
	copy(bad[at:], nanBytes[:])
	n := len(bad) - 4
	binary.LittleEndian.PutUint32(bad[n:], crc32.Checksum(bad[:n], crc32.MakeTable(crc32.Castagnoli)))
	if _, err := gradient.ReadHeader(bad, gradient.UploadLimits(len(model))); err != nil {
		t.Fatalf("the NaN update's header or checksum does not check: %v", err)
	}

	sel := v.Pending[0]
	before := leader.raft.LastIndex()
	for range 5 {
		if _, err := leader.Submit(sel, v.Round, 10, 0, bad); !errors.Is(err, ErrBadUpdate) && !errors.Is(err, aggregate.ErrNonFinite) {
			t.Fatalf("NaN update: %v, want ErrBadUpdate", err)
		}
	}
	if after := leader.raft.LastIndex(); after > before+1 {
		t.Fatalf("5 refused updates took %d log entries, want at most 1", after-before)
	}
	// The client may still send its real update.
	if r, err := leader.Submit(sel, v.Round, 10, 0, good); err != nil || r.Received != 1 {
		t.Fatalf("the good update after the refusals: %+v, %v", r, err)
	}
}
