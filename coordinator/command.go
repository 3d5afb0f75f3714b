package coordinator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/fedzip/fedzip/round"
)

// Commands are the entries of the Raft log: every change of coordinator
// state is one of them, applied in log order by every replica's FSM. Each
// carries the leader's clock reading (Now, Unix nanoseconds), so that
// deadlines are judged identically everywhere.
//
// Encoding: one type byte, then the fields in order: integers as uvarints
// (signed as zig-zag varints), floats as 8 little-endian bytes, strings and
// byte slices as a uvarint length and the bytes. Decoding bounds every
// length by what is left of the entry and refuses integers written in more
// bytes than they need, so that an entry that decodes re-encodes to the
// same bytes.
type cmdType byte

const (
	cmdInit     cmdType = 1 // create the training run: its configuration and initial model
	cmdRegister cmdType = 2 // add a client
	cmdOpen     cmdType = 3 // open the next round among the given candidates
	cmdSubmit   cmdType = 4 // one client's update
	cmdClose    cmdType = 5 // close the open round into the next model
	cmdAbort    cmdType = 6 // discard the open round (deadline passed with too few updates)
	cmdNode     cmdType = 7 // record a coordinator node's addresses
	cmdUnnode   cmdType = 8 // forget a coordinator node
	cmdDrop     cmdType = 9 // drop a selected client that memberlist declared dead
)

// cmdExpire forgets registered clients the leader has not seen for long.
const cmdExpire cmdType = 10

// cmdSubmitEval is the type byte of a submit entry that carries the
// client's federated evaluation report (command.Eval) after the submit
// fields: examples (uvarint), loss and accuracy (float64). It decodes to
// Type cmdSubmit with Eval set. A plain submit keeps type cmdSubmit, so
// that logs written before federated evaluation replay the same.
const cmdSubmitEval cmdType = 11

// Secure aggregation entries (see secagg.go): a client's message for a
// step of the protocol, and the end of a step.
const (
	cmdSecAgg    cmdType = 12
	cmdSecAggEnd cmdType = 13
)

func (t cmdType) String() string {
	switch t {
	case cmdInit:
		return "init"
	case cmdRegister:
		return "register"
	case cmdOpen:
		return "open"
	case cmdSubmit:
		return "submit"
	case cmdClose:
		return "close"
	case cmdAbort:
		return "abort"
	case cmdNode:
		return "node"
	case cmdUnnode:
		return "unnode"
	case cmdDrop:
		return "drop"
	case cmdExpire:
		return "expire"
	case cmdSecAgg:
		return "secagg"
	case cmdSecAggEnd:
		return "secagg-end"
	}
	return fmt.Sprintf("cmd(%d)", byte(t))
}

// command is the decoded form of every command; fields a type does not use
// stay zero.
type command struct {
	Type cmdType
	Now  int64
	// Init: the run's configuration, JSON (see RunConfig).
	Config []byte
	// Register: the new client's name, the SHA-256 of its token, and what
	// it declared.
	Name      string
	TokenHash []byte
	Examples  uint64
	// Open: candidates. Expire: the clients to forget.
	Candidates []round.ClientID
	// Node and Unnode: a coordinator node's Raft ID (in Name) and
	// addresses.
	RaftAddr, GRPCAddr string
	// Submit and Drop.
	Round     int64
	Client    round.ClientID
	TrainLoss float64
	Payload   []byte
	// Step is a secagg or secagg-end entry's protocol step (with Round;
	// secagg also has Client and the message in Payload).
	Step int
	// Eval is a submit's federated evaluation report, nil without (see
	// cmdSubmitEval).
	Eval *round.EvalReport
}

var errCommand = errors.New("coordinator: malformed log entry")

type encoder struct{ b []byte }

func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) varint(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b = append(e.b, p...) }
func (e *encoder) float64(f float64) {
	e.b = binary.LittleEndian.AppendUint64(e.b, math.Float64bits(f))
}

func (c *command) encode() []byte {
	e := &encoder{b: make([]byte, 0, 64+len(c.Payload)+len(c.Config))}
	if c.Type == cmdSubmit && c.Eval != nil {
		e.b = append(e.b, byte(cmdSubmitEval))
	} else {
		e.b = append(e.b, byte(c.Type))
	}
	e.varint(c.Now)
	switch c.Type {
	case cmdInit:
		e.bytes(c.Config)
	case cmdRegister:
		e.bytes([]byte(c.Name))
		e.bytes(c.TokenHash)
		e.uvarint(c.Examples)
	case cmdOpen, cmdExpire:
		e.uvarint(uint64(len(c.Candidates)))
		for _, id := range c.Candidates {
			e.uvarint(uint64(id))
		}
	case cmdSubmit:
		e.varint(c.Round)
		e.uvarint(uint64(c.Client))
		e.uvarint(c.Examples)
		e.float64(c.TrainLoss)
		e.bytes(c.Payload)
		if c.Eval != nil {
			e.uvarint(c.Eval.Examples)
			e.float64(c.Eval.Loss)
			e.float64(c.Eval.Accuracy)
		}
	case cmdNode:
		e.bytes([]byte(c.Name))
		e.bytes([]byte(c.RaftAddr))
		e.bytes([]byte(c.GRPCAddr))
	case cmdUnnode:
		e.bytes([]byte(c.Name))
	case cmdDrop:
		e.varint(c.Round)
		e.uvarint(uint64(c.Client))
	case cmdSecAgg:
		e.varint(c.Round)
		e.uvarint(uint64(c.Client))
		e.uvarint(uint64(c.Step))
		e.bytes(c.Payload)
	case cmdSecAggEnd:
		e.varint(c.Round)
		e.uvarint(uint64(c.Step))
	}
	return e.b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errCommand, what)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 || n != uvarintLen(v) {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 || n != uvarintLen(uint64(v)<<1^uint64(v>>63)) {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail(what)
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

// uvarintLen is the length of v's shortest uvarint encoding.
func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// step reads a secure aggregation step, 0..3.
func (d *decoder) step() int {
	v := d.uvarint("step")
	if v > SecAggUnmask {
		d.fail("step")
		return 0
	}
	return int(v)
}

func (d *decoder) float64(what string) float64 {
	if len(d.b) < 8 {
		d.fail(what)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(d.b))
	d.b = d.b[8:]
	return v
}

// decodeCommand parses a log entry. Byte slices in the result alias data.
func decodeCommand(data []byte) (command, error) {
	if len(data) == 0 {
		return command{}, fmt.Errorf("%w: empty", errCommand)
	}
	c := command{Type: cmdType(data[0])}
	withEval := c.Type == cmdSubmitEval
	if withEval {
		c.Type = cmdSubmit
	}
	d := &decoder{b: data[1:]}
	c.Now = d.varint("time")
	switch c.Type {
	case cmdInit:
		c.Config = d.bytes("config")
	case cmdRegister:
		c.Name = string(d.bytes("name"))
		c.TokenHash = d.bytes("token hash")
		c.Examples = d.uvarint("examples")
	case cmdOpen, cmdExpire:
		n := d.uvarint("candidate count")
		if n > uint64(len(d.b)) { // each candidate takes at least one byte
			d.fail("candidate count")
			break
		}
		c.Candidates = make([]round.ClientID, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			c.Candidates = append(c.Candidates, round.ClientID(d.uvarint("candidate")))
		}
	case cmdSubmit:
		c.Round = d.varint("round")
		c.Client = round.ClientID(d.uvarint("client"))
		c.Examples = d.uvarint("examples")
		c.TrainLoss = d.float64("train loss")
		c.Payload = d.bytes("payload")
		if withEval {
			c.Eval = &round.EvalReport{Examples: d.uvarint("eval examples"), Loss: d.float64("eval loss"), Accuracy: d.float64("eval accuracy")}
		}
	case cmdNode:
		c.Name = string(d.bytes("node id"))
		c.RaftAddr = string(d.bytes("raft address"))
		c.GRPCAddr = string(d.bytes("grpc address"))
	case cmdUnnode:
		c.Name = string(d.bytes("node id"))
	case cmdDrop:
		c.Round = d.varint("round")
		c.Client = round.ClientID(d.uvarint("client"))
	case cmdSecAgg:
		c.Round = d.varint("round")
		c.Client = round.ClientID(d.uvarint("client"))
		c.Step = d.step()
		c.Payload = d.bytes("payload")
	case cmdSecAggEnd:
		c.Round = d.varint("round")
		c.Step = d.step()
	case cmdClose, cmdAbort:
	default:
		return command{}, fmt.Errorf("%w: unknown type %d", errCommand, data[0])
	}
	if d.err != nil {
		return command{}, fmt.Errorf("%s entry: %w", c.Type, d.err)
	}
	if len(d.b) != 0 {
		return command{}, fmt.Errorf("%w: %s entry has %d trailing bytes", errCommand, c.Type, len(d.b))
	}
	return c, nil
}
