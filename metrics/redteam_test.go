package metrics

import (
	"fmt"
	"testing"
	"time"
)

// TestRedteamClientCodecLabels: the codec label of a client's byte
// counter is the task's codec string, which the coordinator chooses: a
// hostile one naming another codec in every task ("topk=0.001", then
// "topk=0.002", ...) added a series per task, without end. The distinct
// codecs a client labels are bounded; the bytes of the others still
// count, under "other".
func TestRedteamClientCodecLabels(t *testing.T) {
	reg := NewRegistry()
	m := NewClient(reg)
	const tasks = 1000
	for i := range tasks {
		c := fmt.Sprintf("topk=0.%04d,bits=8", i+1)
		m.DownloadedCodec(c, 10, time.Millisecond)
		m.Uploaded(uint64(i), c, 1, time.Millisecond)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series, total := 0, 0.0
	for _, mf := range mfs {
		if mf.GetName() != "fedzip_client_bytes_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			series++
			total += mt.GetCounter().GetValue()
		}
	}
	if series > 2*(maxCodecLabels+1) {
		t.Fatalf("%d series of fedzip_client_bytes_total after %d codecs, want at most %d", series, tasks, 2*(maxCodecLabels+1))
	}
	if total != 11*tasks {
		t.Fatalf("%v bytes counted, want %d", total, 11*tasks)
	}
}
