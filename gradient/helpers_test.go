package gradient

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"testing"
)

// testSpecs covers every preset and every key, alone and combined.
var testSpecs = []string{
	"none", "dgc", "stc", "qsgd8", "qsgd4", "topk1", "topk4", "efsign", "terngrad",
	"topk=0.05",
	"topk=0.05,ef=on",
	"topk=0.05,bits=16,ef=on",
	"topk=0.05,bits=bf16,ef=on",
	"topk=0.05,bits=bf16",
	"topk=0.02,bits=1,ef=on",
	"topk=0.02,bits=2,ef=on,entropy=none",
	"topk=0.02,bits=3,ef=on,entropy=golomb",
	"topk=0.02,bits=5,ef=on,entropy=huffman",
	"topk=0.02,bits=6,ef=on,entropy=zstd",
	"topk=0.02,bits=7,stochastic=on,ef=on,bucket=64",
	"topk=0.02,ef=on,entropy=zstd",
	"topk=0.02,bits=16,entropy=zstd",
	"topk=0.02,entropy=none",
	"topk=0.5,bits=ternary,ef=on,entropy=huffman",
	"topk=0.3,bits=ternary,stochastic=on,ef=on,bucket=50",
	"topk=1,bits=4,ef=on",
	"randk=0.05,bits=4,ef=on",
	"randk=0.1,bits=ternary,stochastic=on,ef=on",
	"randk=0.02,entropy=none",
	"randk=1,bits=8",
	"bits=16",
	"bits=bf16,ef=on",
	"bits=8",
	"bits=3,ef=on,bucket=100",
	"bits=sign,stochastic=on",
	"bits=ternary,ef=on,bucket=33",
	"bits=4,entropy=zstd,ef=on",
	"topk=0.01,ef=on,momentum=0.9,clip=1,warmup=3",
	"topk=0.01,bits=4,ef=on,momentum=0.5,warmup=2,clip=0.5",
	"randk=0.01,bits=2,ef=on,momentum=0.9,warmup=5",
	"bits=2,ef=on,momentum=0.9",
	"topk=0.01,bits=ternary,ef=on,momentum=0.9,decay=0.8",
	"topk=0.02,bits=ternary,ef=on,decay=0.5,warmup=1",
	"topk=0.05,bits=4,ef=on,entropy=gaps",
	"topk=0.3,entropy=gaps",
	"topk=0.04,bits=ternary,ef=on,decay=0.7,block=8",
	"topk=0.1,block=3,warmup=2,warmstart=0.5",
	"topk=0.01,bits=ternary,ef=on,momentum=0.9,decay=0.8,warmup=2,warmstart=0.05",
	"clip=0.1",
	"clip=100,bits=4,stochastic=on",
}

func mustSpec(t testing.TB, s string) Spec {
	t.Helper()
	sp, err := ParseSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func mustEncoder(t testing.TB, s string, n int) *Encoder {
	t.Helper()
	e, err := NewEncoder(mustSpec(t, s), n)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// genDelta fills d with a heavy-tailed update: normal values whose scale
// varies log-normally across coordinates, as the layers and units of a
// network differ, times scale.
func genDelta(d []float32, seed uint64, scale float64) []float32 {
	r := rand.New(rand.NewPCG(seed, 0x6772616469656e74))
	for i := range d {
		d[i] = float32(scale * r.NormFloat64() * math.Exp(r.NormFloat64()))
	}
	return d
}

// reseal recomputes the checksum of a message after a test changed it.
func reseal(msg []byte) []byte {
	n := len(msg) - crcSize
	binary.LittleEndian.PutUint32(msg[n:], crc32.Checksum(msg[:n], castagnoli))
	return msg
}

// build assembles a message from a header and section bodies, with
// correct lengths and checksum, whatever the header says.
func build(h Header, bodies ...[]byte) []byte {
	for i, b := range bodies {
		h.Sections[i].Length = len(b)
	}
	h.NumSections = len(bodies)
	msg := appendHeader(nil, &h)
	for _, b := range bodies {
		msg = append(msg, b...)
	}
	return binary.LittleEndian.AppendUint32(msg, crc32.Checksum(msg, castagnoli))
}

func f32bytes(x ...float32) []byte { return AppendFloat32s(nil, x) }

func errorsIsStd(err, target error) bool { return errors.Is(err, target) }
