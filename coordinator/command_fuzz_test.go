package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/round"
)

// fuzzRunConfig is a run small enough to build in every fuzz execution:
// an 8-parameter model, three clients per round, no deadline.
const fuzzRunConfig = `{"model":"mlp:","input_dim":3,"classes":2,"init_seed":1,"strategy":"fedavg","round":{"PerRound":3,"Seed":1},"task_seed":1,"local_epochs":1,"batch_size":1,"lr":0.1,"upload_codec":"none"}`

// fuzzUpdate is a valid dense update for the fuzz run's model.
func fuzzUpdate(v float32) []byte {
	d := make([]float32, 8)
	for i := range d {
		d[i] = v * float32(i+1)
	}
	return gradient.AppendFloat32s(nil, d)
}

// seedCommands returns one valid command of each type, as the leader
// would write them for the fuzz run (after runningFSM, the submit is
// accepted and the drop names a selected client).
func seedCommands() []command {
	return []command{
		{Type: cmdInit, Now: 1, Config: []byte(fuzzRunConfig)},
		{Type: cmdRegister, Now: 2, Name: "c", TokenHash: bytes.Repeat([]byte{7}, 32), Examples: 10},
		{Type: cmdOpen, Now: 3, Candidates: []round.ClientID{1, 2, 3}},
		{Type: cmdSubmit, Now: 4, Round: 1, Client: 2, Examples: 3, TrainLoss: 0.5, Payload: fuzzUpdate(0.25)},
		{Type: cmdClose, Now: 5},
		{Type: cmdAbort, Now: 6},
		{Type: cmdNode, Now: 7, Name: "n1", RaftAddr: "127.0.0.1:7000", GRPCAddr: "127.0.0.1:7001"},
		{Type: cmdUnnode, Now: 8, Name: "n1"},
		{Type: cmdDrop, Now: 9, Round: 1, Client: 3},
		{Type: cmdExpire, Now: 10, Candidates: []round.ClientID{7, 1 << 40}},
		{Type: cmdSecAgg, Now: 11, Round: 1, Client: 2, Step: SecAggMasked, Payload: []byte{1, 2, 3}},
		{Type: cmdSecAggEnd, Now: 12, Round: 1, Step: SecAggUnmask},
	}
}

// FuzzDecodeCommand: any bytes decode to a command or to an error wrapping
// errCommand, never a panic; whatever decodes re-encodes to the same
// bytes, so that one log entry has one meaning.
func FuzzDecodeCommand(f *testing.F) {
	for _, c := range seedCommands() {
		f.Add(c.encode())
	}
	f.Add((&command{Type: cmdSubmit, Now: 4, Round: 1, Client: 2, Examples: 3, Payload: []byte{1}, Eval: &round.EvalReport{Examples: 2, Loss: 1, Accuracy: 0.5}}).encode())
	f.Add([]byte{})
	f.Add([]byte{byte(cmdClose), 0x80, 0x00})               // an overlong varint
	f.Add([]byte{byte(cmdOpen), 0, 0xff, 0xff, 0xff, 0x0f}) // a count beyond the entry
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeCommand(data)
		if err != nil {
			if !errors.Is(err, errCommand) {
				t.Fatalf("error does not wrap errCommand: %v", err)
			}
			return
		}
		if got := c.encode(); !bytes.Equal(got, data) {
			t.Fatalf("%s entry re-encodes differently:\n in  %x\n out %x", c.Type, data, got)
		}
	})
}

// TestDecodeCommandRoundTrip runs every seed command through encode and
// decode.
func TestDecodeCommandRoundTrip(t *testing.T) {
	for _, c := range seedCommands() {
		d, err := decodeCommand(c.encode())
		if err != nil {
			t.Fatalf("%s: %v", c.Type, err)
		}
		if !bytes.Equal(d.encode(), c.encode()) {
			t.Fatalf("%s: round trip changed the entry", c.Type)
		}
	}
}

// TestDecodeCommandCanonical: an integer written in more bytes than it
// needs is refused, so that two different entries cannot mean the same
// command (found by FuzzDecodeCommand).
func TestDecodeCommandCanonical(t *testing.T) {
	for _, data := range [][]byte{
		{byte(cmdClose), 0x80, 0x00},                     // time 0 in two bytes
		{byte(cmdUnnode), 0, 0x81, 0x00, 'x'},            // length 1 in two bytes
		{byte(cmdDrop), 0, 0x02, 0x83, 0x80, 0x80, 0x00}, // client 3 in four bytes
		{byte(cmdSubmit), 0, 0x02, 0x01, 0x81, 0x00, 0, 0, // examples 1 in two bytes
			0, 0, 0, 0, 0, 0, 0},
	} {
		if _, err := decodeCommand(data); !errors.Is(err, errCommand) {
			t.Errorf("%x: %v, want errCommand", data, err)
		}
	}
}

// runningFSM returns an FSM in the middle of a run: initialised with the
// fuzz run, three clients registered, round 1 open with client 1's update
// accepted, and the index of its last entry.
func runningFSM(t testing.TB) (*FSM, uint64) {
	f := NewFSM()
	cmds := []command{
		{Type: cmdInit, Now: 1, Config: []byte(fuzzRunConfig)},
		{Type: cmdRegister, Now: 2, Name: "a", TokenHash: []byte{1}, Examples: 5},
		{Type: cmdRegister, Now: 2, Name: "b", TokenHash: []byte{2}, Examples: 5},
		{Type: cmdRegister, Now: 2, Name: "c", TokenHash: []byte{3}, Examples: 5},
		{Type: cmdNode, Now: 2, Name: "n0", RaftAddr: "a:1", GRPCAddr: "a:2"},
		{Type: cmdOpen, Now: 3, Candidates: []round.ClientID{1, 2, 3}},
		{Type: cmdSubmit, Now: 4, Round: 1, Client: 1, Examples: 5, Payload: fuzzUpdate(0.5)},
	}
	for i, c := range cmds {
		if err, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c.encode()}).(error); ok {
			t.Fatalf("building the running FSM: %s: %v", c.Type, err)
		}
	}
	return f, uint64(len(cmds))
}

// stateBytes is the FSM's snapshot as it would be persisted, without the
// applied index (which every entry, refused or not, advances).
func stateBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	snap := s.(*snapshot)
	snap.Applied = 0
	var buf bytes.Buffer
	if err := snap.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// checkRestores requires f's state to survive a snapshot and a restore
// into a fresh FSM bit for bit, with the same model.
func checkRestores(t testing.TB, f *FSM) {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := s.Persist(&memSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	g := NewFSM()
	if err := g.Restore(nopCloser{&buf}); err != nil {
		t.Fatalf("restoring the state the entry left: %v", err)
	}
	if !bytes.Equal(stateBytes(t, f), stateBytes(t, g)) || f.ModelHash() != g.ModelHash() {
		t.Fatal("a restored FSM differs from the one it was snapshotted from")
	}
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

// fuzzMaxParams bounds the model an init entry may build inside the fuzz
// target: larger runs are valid (up to maxRunParams) but cost an
// allocation per execution, not coverage.
const fuzzMaxParams = 1 << 12

// bigInit reports whether data is an init entry for a model larger than
// fuzzMaxParams.
func bigInit(data []byte) bool {
	c, err := decodeCommand(data)
	if err != nil || c.Type != cmdInit {
		return false
	}
	var cfg RunConfig
	if json.Unmarshal(c.Config, &cfg) != nil {
		return false
	}
	m, err := cfg.network()
	return err == nil && m.NumParams() > fuzzMaxParams
}

// FuzzFSMApply applies one arbitrary log entry to a fresh FSM and to one in
// the middle of a round. Apply never panics; an entry that does not decode
// is answered with errCommand; an entry Apply refuses changes nothing; and
// whatever state the entry leaves survives a snapshot and a restore bit
// for bit.
func FuzzFSMApply(f *testing.F) {
	for _, c := range seedCommands() {
		f.Add(c.encode())
	}
	f.Add([]byte{byte(cmdSubmit), 8, 2, 4, 10, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0x80, 0x7f}) // not 8 parameters
	f.Add((&command{Type: cmdSubmit, Now: 4, Round: 1, Client: 2, Examples: 3, Payload: fuzzUpdate(0.25), Eval: &round.EvalReport{Examples: 2, Loss: 1, Accuracy: 0.5}}).encode())
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if bigInit(data) {
			t.Skip("a model beyond the fuzz target's allocation bound")
		}
		_, decErr := decodeCommand(data)
		fresh := NewFSM()
		running, last := runningFSM(t)
		for _, fsm := range []struct {
			name  string
			f     *FSM
			index uint64
		}{{"fresh", fresh, 1}, {"running", running, last + 1}} {
			before := stateBytes(t, fsm.f)
			res := fsm.f.Apply(&raft.Log{Index: fsm.index, Type: raft.LogCommand, Data: data})
			err, refused := res.(error)
			if decErr != nil && (!refused || !errors.Is(err, errCommand)) {
				t.Fatalf("%s FSM: an entry that does not decode (%v) was answered %v", fsm.name, decErr, res)
			}
			if refused && !bytes.Equal(before, stateBytes(t, fsm.f)) {
				t.Fatalf("%s FSM: a refused entry (%v) changed the state", fsm.name, err)
			}
			// The applied index is that of the last command applied: an
			// entry that is not one (it does not decode) leaves it.
			if v := fsm.f.View(); decErr == nil && v.Applied != fsm.index {
				t.Fatalf("%s FSM: applied index %d, want %d", fsm.name, v.Applied, fsm.index)
			}
			checkRestores(t, fsm.f)
		}
	})
}
