// Package checkpoint reads and writes the global model file: a float32
// model with its layout and training metadata, checksummed. The simulator
// writes it with --save-model, the coordinator after each round, and the
// delivery pipeline reads it as the input it compresses.
//
// # Format (version 1)
//
// All integers are little-endian.
//
//	offset  size  field
//	0       8     magic "FZMODEL\x00"
//	8       2     format version, 1
//	10      2     flags, 0
//	12      4     header length H (at most MaxHeader)
//	16      H     header: UTF-8 JSON, see Header
//	16+H    8     parameter count P (must equal the layout's size)
//	24+H    4P    parameters, float32 (IEEE 754 binary32)
//	24+H+4P 4     CRC-32C (Castagnoli) of every byte before it
//
// A reader checks the magic, the version, every size against limits before
// it allocates, that the header's layout tiles exactly P parameters, that
// no parameter is NaN or infinite, and the checksum.
package checkpoint

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/nn"
)

// Magic starts every model file.
const Magic = "FZMODEL\x00"

// Version is the format version this package writes.
const Version = 1

// Limits on what a reader accepts.
const (
	MaxHeader = 1 << 20 // bytes of JSON header
	MaxParams = 1 << 28 // parameters (1 GiB of float32)
	// MaxModelSpec bounds Header.Model when Network parses it (a file
	// without Sizes).
	MaxModelSpec = 4096
)

// Errors of the reader. Every error it returns wraps one of these.
var (
	ErrMagic    = errors.New("checkpoint: not a fedzip model file (bad magic)")
	ErrVersion  = errors.New("checkpoint: unsupported format version")
	ErrTooLarge = errors.New("checkpoint: size over limit")
	ErrCorrupt  = errors.New("checkpoint: corrupt file")
	ErrChecksum = errors.New("checkpoint: checksum mismatch")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the JSON metadata of a model file.
type Header struct {
	// Model is the architecture spec, as nn.ParseModel reads it ("2nn",
	// "mlp:784-64-10", "cnn", "conv:32x5,pool:2,fc:10", ...).
	Model string `json:"model"`
	// Sizes are an MLP's layer sizes, input first; empty for other
	// networks.
	Sizes []int `json:"sizes,omitempty"`
	// Input is the shape of one example, [C, H, W], and Classes the
	// number of outputs: with Model they rebuild a network that is not an
	// MLP. Files written before conv nets have neither.
	Input   []int `json:"input,omitempty"`
	Classes int   `json:"classes,omitempty"`
	// Tensors is the layout of the parameter vector.
	Tensors []TensorInfo `json:"tensors"`
	// Round is the last training round folded into the model, Version the
	// global model version.
	Round   int    `json:"round"`
	Version uint64 `json:"version"`
	// Dataset names the training data, for humans.
	Dataset string `json:"dataset,omitempty"`
	// Extra holds free-form metadata (seed, strategy, codec, accuracy).
	Extra map[string]string `json:"extra,omitempty"`
}

// TensorInfo is one tensor of the layout.
type TensorInfo struct {
	Name  string `json:"name"`
	Shape []int  `json:"shape"`
}

// Model is a decoded model file.
type Model struct {
	Header Header
	Params []float32
}

// New returns a Model for a network's parameters (not copied).
func New(m nn.Model, params []float32) *Model {
	h := Header{Model: m.Name()}
	if mlp, ok := m.(*nn.MLP); ok {
		// An MLP's file is what it was before conv nets: sizes, no shape.
		h.Sizes = append([]int(nil), mlp.Sizes()...)
	} else {
		in := m.InputShape()
		h.Input, h.Classes = []int{in.C, in.H, in.W}, m.Classes()
	}
	for _, t := range m.Layout().Tensors {
		h.Tensors = append(h.Tensors, TensorInfo{Name: t.Name, Shape: append([]int(nil), t.Shape...)})
	}
	return &Model{Header: h, Params: params}
}

// Network rebuilds the network the file describes (an MLP from Sizes,
// otherwise nn.ParseModel of Model on Input and Classes) and checks that
// its layout matches the file's tensors.
func (m *Model) Network() (nn.Model, error) {
	var (
		net nn.Model
		err error
	)
	// Bound what the header makes Network build before building it: an
	// MLP of n sizes has 2(n−1) tensors, and a spec is short.
	if n := len(m.Header.Sizes); n > 0 {
		if 2*(n-1) != len(m.Header.Tensors) {
			return nil, fmt.Errorf("%w: %d layer sizes for %d tensors", ErrCorrupt, n, len(m.Header.Tensors))
		}
		net, err = nn.NewMLP(m.Header.Sizes...)
	} else {
		if len(m.Header.Model) > MaxModelSpec {
			return nil, fmt.Errorf("%w: model spec of %d bytes (limit %d)", ErrCorrupt, len(m.Header.Model), MaxModelSpec)
		}
		if len(m.Header.Input) != 3 {
			return nil, fmt.Errorf("%w: model %q without layer sizes needs an input shape [C, H, W], got %v", ErrCorrupt, m.Header.Model, m.Header.Input)
		}
		in := nn.Shape{C: m.Header.Input[0], H: m.Header.Input[1], W: m.Header.Input[2]}
		net, err = nn.ParseModel(m.Header.Model, in, m.Header.Classes)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	l := net.Layout()
	if len(l.Tensors) != len(m.Header.Tensors) || l.Size != len(m.Params) {
		return nil, fmt.Errorf("%w: layout of %d tensors and %d parameters does not match model %q", ErrCorrupt, len(m.Header.Tensors), len(m.Params), m.Header.Model)
	}
	for i, t := range l.Tensors {
		h := m.Header.Tensors[i]
		if h.Name != t.Name || !slices.Equal(h.Shape, t.Shape) {
			return nil, fmt.Errorf("%w: tensor %d is %s%v, model %q implies %s%v", ErrCorrupt, i, h.Name, h.Shape, m.Header.Model, t.Name, t.Shape)
		}
	}
	return net, nil
}

// MLP is Network for a file that holds an MLP; other networks are an
// error.
func (m *Model) MLP() (*nn.MLP, error) {
	net, err := m.Network()
	if err != nil {
		return nil, err
	}
	mlp, ok := net.(*nn.MLP)
	if !ok {
		return nil, fmt.Errorf("%w: model %q is not an MLP", ErrCorrupt, m.Header.Model)
	}
	return mlp, nil
}

// Write encodes m to w.
func Write(w io.Writer, m *Model) error {
	hdr, err := json.Marshal(m.Header)
	if err != nil {
		return err
	}
	if len(hdr) > MaxHeader {
		return fmt.Errorf("%w: header of %d bytes", ErrTooLarge, len(hdr))
	}
	if len(m.Params) > MaxParams {
		return fmt.Errorf("%w: %d parameters", ErrTooLarge, len(m.Params))
	}
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriter(io.MultiWriter(w, crc))
	var fixed [16]byte
	copy(fixed[:], Magic)
	binary.LittleEndian.PutUint16(fixed[8:], Version)
	binary.LittleEndian.PutUint32(fixed[12:], uint32(len(hdr)))
	bw.Write(fixed[:])
	bw.Write(hdr)
	var b8 [8]byte
	binary.LittleEndian.PutUint64(b8[:], uint64(len(m.Params)))
	bw.Write(b8[:])
	var b4 [4]byte
	for _, v := range m.Params {
		binary.LittleEndian.PutUint32(b4[:], math.Float32bits(v))
		bw.Write(b4[:])
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(b4[:], crc.Sum32())
	_, err = w.Write(b4[:])
	return err
}

// Marshal returns the encoding of m.
func Marshal(m *Model) ([]byte, error) {
	var b bytes.Buffer
	err := Write(&b, m)
	return b.Bytes(), err
}

// Read decodes a model file from r, reading at most what the header
// announces (plus the checksum).
func Read(r io.Reader) (*Model, error) {
	crc := crc32.New(castagnoli)
	br := bufio.NewReader(r)
	tr := io.TeeReader(br, crc)
	var fixed [16]byte
	if _, err := io.ReadFull(tr, fixed[:]); err != nil {
		return nil, fmt.Errorf("%w: reading the fixed header: %v", ErrCorrupt, err)
	}
	if string(fixed[:8]) != Magic {
		return nil, ErrMagic
	}
	if v := binary.LittleEndian.Uint16(fixed[8:]); v != Version {
		return nil, fmt.Errorf("%w: %d (this build reads %d)", ErrVersion, v, Version)
	}
	if f := binary.LittleEndian.Uint16(fixed[10:]); f != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrCorrupt, f)
	}
	hlen := binary.LittleEndian.Uint32(fixed[12:])
	if hlen > MaxHeader {
		return nil, fmt.Errorf("%w: header of %d bytes (limit %d)", ErrTooLarge, hlen, MaxHeader)
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(tr, hdr); err != nil {
		return nil, fmt.Errorf("%w: header truncated: %v", ErrCorrupt, err)
	}
	var m Model
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m.Header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	want, err := layoutSize(m.Header)
	if err != nil {
		return nil, err
	}
	var b8 [8]byte
	if _, err := io.ReadFull(tr, b8[:]); err != nil {
		return nil, fmt.Errorf("%w: parameter count truncated: %v", ErrCorrupt, err)
	}
	p := binary.LittleEndian.Uint64(b8[:])
	if p != uint64(want) {
		return nil, fmt.Errorf("%w: %d parameters, layout has %d", ErrCorrupt, p, want)
	}
	m.Params = make([]float32, p)
	var buf [4096]byte
	for i := 0; i < len(m.Params); {
		n := min(len(buf)/4, len(m.Params)-i)
		if _, err := io.ReadFull(tr, buf[:4*n]); err != nil {
			return nil, fmt.Errorf("%w: parameters truncated after %d of %d: %v", ErrCorrupt, i, p, err)
		}
		if _, err := gradient.DecodeFloat32s(m.Params[i:i+n], buf[:4*n]); err != nil {
			return nil, fmt.Errorf("%w: parameters %d to %d: %w", ErrCorrupt, i, i+n, err)
		}
		i += n
	}
	sum := crc.Sum32()
	var b4 [4]byte
	if _, err := io.ReadFull(br, b4[:]); err != nil {
		return nil, fmt.Errorf("%w: checksum truncated: %v", ErrCorrupt, err)
	}
	if got := binary.LittleEndian.Uint32(b4[:]); got != sum {
		return nil, fmt.Errorf("%w: file says %08x, content gives %08x", ErrChecksum, got, sum)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing bytes after the checksum", ErrCorrupt)
	}
	return &m, nil
}

// layoutSize checks the header's tensors and returns the number of
// parameters they cover, refusing anything over MaxParams.
func layoutSize(h Header) (int, error) {
	if len(h.Tensors) == 0 || len(h.Tensors) > 4096 {
		return 0, fmt.Errorf("%w: %d tensors", ErrCorrupt, len(h.Tensors))
	}
	total := 0
	for _, t := range h.Tensors {
		if t.Name == "" || len(t.Shape) == 0 || len(t.Shape) > 8 {
			return 0, fmt.Errorf("%w: tensor %q with shape %v", ErrCorrupt, t.Name, t.Shape)
		}
		n := 1
		for _, d := range t.Shape {
			if d <= 0 || d > MaxParams || n > MaxParams/d {
				return 0, fmt.Errorf("%w: tensor %q with shape %v", ErrTooLarge, t.Name, t.Shape)
			}
			n *= d
		}
		if total > MaxParams-n {
			return 0, fmt.Errorf("%w: more than %d parameters", ErrTooLarge, MaxParams)
		}
		total += n
	}
	return total, nil
}

// WriteFile writes m to path atomically: to a temporary file in the same
// directory, synced, then renamed over path.
func WriteFile(path string, m *Model) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = Write(f, m); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// ReadFile reads a model file; errors name the file.
func ReadFile(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m, err := Read(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
