package nn

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestRedteamScratchFloatsBoundsEveryPass: the client bounds a task's
// memory by ScratchFloats before it makes the Scratch (client/remote
// TaskModel), so every pass a client runs must stay within it, whatever
// the net: strides, valid padding, group norm, wide 1×1 convs, a deep
// stack, and the SGD step and grouped evaluation as well as LossGrad.
func TestRedteamScratchFloatsBoundsEveryPass(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		in    Shape
		batch int
	}{
		{"conv:16x5/2,conv:16x3/3:valid,fc:10", Shape{3, 40, 40}, 9},
		{"conv:64x1,conv:64x1,gn:8,pool:3/1,fc:10", Shape{1, 12, 12}, 33},
		{"conv:4x7:valid:linear,relu,pool:2/3,gn:4,conv:8x3,pool:2,fc:32,fc:10", Shape{2, 30, 17}, 17},
		{"conv:8x3,conv:8x3,conv:8x3,conv:8x3,conv:8x3,conv:8x3,fc:10", Shape{1, 20, 20}, 40},
	} {
		m, err := ParseModel(tc.spec, tc.in, 10)
		if err != nil {
			t.Fatal(err)
		}
		want := ScratchFloats(m, tc.batch)
		params, grad := make([]float32, m.NumParams()), make([]float32, m.NumParams())
		m.Init(params, 1)
		x := make([]float32, 3*tc.batch*m.InputDim()+5*m.InputDim())
		y := make([]uint8, 3*tc.batch+5)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := m.Scratch(tc.batch)
		s.LossGrad(params, grad, tc.batch)
		if f, ok := s.(fusedStepper); ok {
			f.SGDStep(params, tc.batch, 0.01, 0)
			f.SGDStep(params, tc.batch-1, 0.01, 1e-4)
		}
		s.Forward(params, tc.batch)
		s.Evaluate(params, x, y)
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(s)
		got := after.TotalAlloc - before.TotalAlloc
		// Slack: labels, slice headers, and each buffer rounded up to its
		// size class or page (about 0.2 % for the deep stack).
		if got > 4*want+4*want/64+64<<10 {
			t.Errorf("%s batch %d: passes allocated %d bytes, ScratchFloats says %d floats (%d bytes)", tc.spec, tc.batch, got, want, 4*want)
		}
	}
}

// TestRedteamNetYAMLBombs: a network file is small, but YAML aliases
// expand ("billion laughs") and nesting recurses; ParseNetYAML must refuse
// both quickly.
func TestRedteamNetYAMLBombs(t *testing.T) {
	var laughs strings.Builder
	laughs.WriteString("a0: &a0 [\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\",\"conv: 8x3\"]\n")
	for i := 1; i < 20; i++ {
		p := "*a" + string(rune('0'+i-1))
		if i > 10 {
			p = "*a" + "1" + string(rune('0'+i-11))
		}
		name := "a" + string(rune('0'+i))
		if i >= 10 {
			name = "a1" + string(rune('0'+i-10))
		}
		laughs.WriteString(name + ": &" + name + " [" + strings.Repeat(p+",", 8) + p + "]\n")
	}
	laughs.WriteString("layers: *a19\n")
	deep := "layers: " + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + "\n"
	deepMap := strings.Repeat("a:\n ", 12000)
	for name, doc := range map[string]string{"laughs": laughs.String(), "deep": deep, "deepmap": deepMap} {
		start := time.Now()
		_, err := ParseNetYAML([]byte(doc))
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		t.Logf("%s (%d bytes): %v after %v", name, len(doc), err, time.Since(start))
	}
}
