package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/fedzip/fedzip/round"
)

// TestExcludedAttrs: the "round closed" line always says how many updates
// the strategy excluded, names their clients when there are any, and
// lists at most maxExcludedLogged of them.
func TestExcludedAttrs(t *testing.T) {
	many := make([]round.ClientID, 100)
	for i := range many {
		many[i] = round.ClientID(i + 1)
	}
	for _, c := range []struct {
		ex    []round.ClientID
		count int
		ids   []float64 // nil: no excluded_clients attribute
	}{
		{nil, 0, nil},
		{[]round.ClientID{3, 7}, 2, []float64{3, 7}},
		{many, 100, func() []float64 {
			var ids []float64
			for i := range maxExcludedLogged {
				ids = append(ids, float64(i+1))
			}
			return ids
		}()},
	} {
		var buf bytes.Buffer
		slog.New(slog.NewJSONHandler(&buf, nil)).Info("round closed", excludedAttrs(c.ex)...)
		var line map[string]any
		if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line["excluded"] != float64(c.count) {
			t.Errorf("%d excluded: the line says %v", len(c.ex), line["excluded"])
		}
		got, has := line["excluded_clients"].([]any)
		if has != (c.ids != nil) || len(got) != len(c.ids) {
			t.Errorf("%d excluded: excluded_clients %v, want %v", len(c.ex), line["excluded_clients"], c.ids)
			continue
		}
		for i, id := range got {
			if id != c.ids[i] {
				t.Errorf("%d excluded: excluded_clients %v, want %v", len(c.ex), got, c.ids)
				break
			}
		}
	}
}
