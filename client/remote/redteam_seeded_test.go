package remote

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/secagg"
)

// TestRedteamHostileSeededSync: a coordinator (or a MITM without TLS)
// serves a seeded sync whose supports' length or keys are not the
// server's: a length of 2^57−1 (its uvarint running over the key), 0,
// or another than the sync's values fit, or a key that rebuilds another
// support of the right length. The client's replica (newReplica, as the
// runtime makes it, applying through client.ApplySync) refuses each
// without a panic and, for a length, without changing what it holds (a
// length above n, or 0, before rebuilding any support); a wrong key moves the model off the server's
// checksum, and ApplySync refuses it (the runtime then starts again from
// version 0). The honest sync then applies, bit for bit.
func TestRedteamHostileSeededSync(t *testing.T) {
	const n, k = 1203, 60
	rng := rand.New(rand.NewPCG(1, 2))
	init := make([]float32, n)
	for i := range init {
		init[i] = float32(rng.NormFloat64() * 0.1)
	}
	spec, err := gradient.ParseSpec("seeded")
	if err != nil {
		t.Fatal(err)
	}
	enc, err := gradient.NewServerEncoder(spec, init, 4)
	if err != nil {
		t.Fatal(err)
	}
	enc.SetSupportFunc(secagg.Supports(n))
	global := slices.Clone(init)
	sup := make([]int32, k)
	publish := func(key uint64) {
		secagg.Support(sup, n, key)
		for _, i := range sup {
			global[i] += float32(rng.NormFloat64() * 0.02)
		}
		if _, err := enc.PublishSupport(global, 0, key, sup); err != nil {
			t.Fatal(err)
		}
	}
	publish(11)
	publish(12)
	rep, err := newReplica(init)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := enc.AppendUpdate(nil, 0)
	if _, err := client.ApplySync(rep, 2, client.Download{Kind: client.DownloadDelta, Version: 2, Body: first}, n, 1<<20); err != nil {
		t.Fatal(err)
	}
	publish(13)
	good, _ := enc.AppendUpdate(nil, 2)
	lim := gradient.Limits{MaxParams: n}
	h, err := gradient.ReadHeader(good, lim)
	if err != nil || h.Selection != gradient.RandK || good[h.Sections[0].Offset] != k {
		t.Fatalf("the sync from 2 is not seeded with one-byte length %d: %+v, %v", k, h, err)
	}
	crc := gradient.ModelCRC(enc.Model())
	at := h.Sections[0].Offset
	for _, tc := range []struct {
		name   string
		tamper func(m []byte)
		kept   bool // the replica is left as it was
	}{
		{"length 2^57-1", func(m []byte) { // a uvarint over the key's 8 bytes
			for i := range 8 {
				m[at+i] = 0xff
			}
			m[at+8] = 0x01
		}, true},
		{"length 0", func(m []byte) { m[at] = 0 }, true},
		{"length 127", func(m []byte) { m[at] = 127 }, true},
		{"length 30", func(m []byte) { m[at] = 30 }, true},
		{"another key", func(m []byte) { m[at+1] ^= 1 }, false},
	} {
		m := slices.Clone(good)
		tc.tamper(m)
		binary.LittleEndian.PutUint32(m[len(m)-4:], crc32.Checksum(m[:len(m)-4], crc32.MakeTable(crc32.Castagnoli)))
		if _, err := gradient.ReadHeader(m, lim); err != nil {
			t.Fatalf("%s: the resealed sync's header: %v", tc.name, err)
		}
		before := rep.AppendBinary(nil)
		_, err := client.ApplySync(rep, 3, client.Download{Kind: client.DownloadDelta, Version: 3, BaseVersion: 2, CRC: &crc, Body: m}, n, 1<<20)
		if !errors.Is(err, client.ErrDownload) {
			t.Fatalf("%s: %v, want ErrDownload", tc.name, err)
		}
		t.Logf("%s: %v", tc.name, err)
		if tc.kept {
			if rep.Version() != 2 || !slices.Equal(rep.AppendBinary(nil), before) {
				t.Fatalf("%s: a refused sync changed the replica", tc.name)
			}
		} else {
			// As the runtime does: start again from version 0.
			if rep, err = newReplica(init); err != nil {
				t.Fatal(err)
			}
			if _, err := client.ApplySync(rep, 2, client.Download{Kind: client.DownloadDelta, Version: 2, Body: first}, n, 1<<20); err != nil {
				t.Fatal(err)
			}
		}
	}
	got, err := client.ApplySync(rep, 3, client.Download{Kind: client.DownloadDelta, Version: 3, BaseVersion: 2, CRC: &crc, Body: good}, n, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range enc.Model() {
		if math.Float32bits(got[i]) != math.Float32bits(x) {
			t.Fatalf("coordinate %d: %v, the server's %v", i, got[i], x)
		}
	}
}
