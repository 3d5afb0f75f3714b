package dataset

import (
	"errors"
	"math"
	"reflect"
	"slices"
	"testing"
)

func TestSynthetic(t *testing.T) {
	tests := []struct {
		alpha, beta float64
		clients     int
	}{
		{0, 0, 5}, {0.5, 0.5, 30}, {1, 1, 30}, {1, 1, 1},
	}
	for _, tt := range tests {
		fed, err := Synthetic(tt.alpha, tt.beta, tt.clients, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []*Dataset{fed.Train, fed.Test} {
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			if d.Dim != 60 || d.Classes != 10 {
				t.Fatalf("Dim %d Classes %d, want 60 10", d.Dim, d.Classes)
			}
		}
		checkPartition(t, fed.TrainParts, tt.clients, fed.Train.N, true)
		checkPartition(t, fed.TestParts, tt.clients, fed.Test.N, true)
		for k := range tt.clients {
			tr, te := len(fed.TrainParts[k]), len(fed.TestParts[k])
			n := tr + te
			if n < SyntheticMinSamples || n > SyntheticMaxSamples || tr != int(0.75*float64(n)) {
				t.Errorf("(%v,%v) client %d: %d train + %d test", tt.alpha, tt.beta, k, tr, te)
			}
		}
		again, _ := Synthetic(tt.alpha, tt.beta, tt.clients, 3)
		if !reflect.DeepEqual(fed, again) {
			t.Errorf("(%v,%v): not deterministic", tt.alpha, tt.beta)
		}
		other, _ := Synthetic(tt.alpha, tt.beta, tt.clients, 4)
		if slices.Equal(fed.Train.X, other.Train.X) {
			t.Errorf("(%v,%v): seeds 3 and 4 give the same data", tt.alpha, tt.beta)
		}
	}
}

// TestSyntheticPrefix checks that client k's data does not depend on the
// number of clients.
func TestSyntheticPrefix(t *testing.T) {
	small, err := Synthetic(1, 1, 3, 9)
	if err != nil {
		t.Fatal(err)
	}
	big, err := Synthetic(1, 1, 10, 9)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(small.Train.Subset(small.TrainParts.flat()), big.Train.Subset(big.TrainParts[:3].flat())) {
		t.Error("the first 3 clients differ between 3 and 10 clients")
	}
}

func (p Partition) flat() []int { return slices.Concat(p...) }

// TestSyntheticStatistics checks the generative model: within a client,
// feature j has variance (j+1)^-1.2 around v_k[j]; client means v_k[j] vary
// with variance 1 + beta; every label occurs, and some clients have more
// than one (with large beta most clients are dominated by one label).
func TestSyntheticStatistics(t *testing.T) {
	const clients = 200
	fed, err := Synthetic(1, 4, clients, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := fed.Train
	var within [SyntheticDim]float64 // pooled within-client variance per feature
	var means []float64              // client means of feature 0
	dof := 0
	labelsSeen := 0
	for _, idx := range fed.TrainParts {
		var sum, sq [SyntheticDim]float64
		for _, i := range idx {
			for j, v := range d.Row(i) {
				sum[j] += float64(v)
				sq[j] += float64(v) * float64(v)
			}
		}
		n := float64(len(idx))
		for j := range within {
			within[j] += sq[j] - sum[j]*sum[j]/n
		}
		dof += len(idx) - 1
		means = append(means, sum[0]/n)
		c := d.ClassCounts(idx)
		labelsSeen += len(c) - count(c, 0)
	}
	for _, j := range []int{0, 9, 59} {
		got := within[j] / float64(dof)
		want := math.Pow(float64(j+1), -1.2)
		if math.Abs(got/want-1) > 0.1 {
			t.Errorf("feature %d: within-client variance %.4g, want %.4g", j, got, want)
		}
	}
	// v_k[0] = B_k + N(0,1) with B_k ~ N(0, beta=4): variance 5 (plus a
	// little sampling noise of the client means).
	var m, v float64
	for _, x := range means {
		m += x
	}
	m /= clients
	for _, x := range means {
		v += (x - m) * (x - m)
	}
	v /= clients - 1
	if v < 3.5 || v > 7 {
		t.Errorf("variance of client means of feature 0 is %.2f, want about 5", v)
	}
	if labelsSeen <= clients {
		t.Errorf("only %d distinct labels summed over %d clients", labelsSeen, clients)
	}
	if c := d.ClassCounts(nil); slices.Contains(c, 0) {
		t.Errorf("label histogram %v misses a label", c)
	}
}

func count(s []int, v int) (n int) {
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func TestSyntheticErrors(t *testing.T) {
	tests := []struct {
		alpha, beta float64
		clients     int
	}{
		{-1, 1, 5}, {1, -0.1, 5}, {math.NaN(), 1, 5}, {1, math.Inf(1), 5}, {1, 1, 0},
	}
	for _, tt := range tests {
		if _, err := Synthetic(tt.alpha, tt.beta, tt.clients, 1); !errors.Is(err, ErrBadArgument) {
			t.Errorf("Synthetic(%v, %v, %d): err = %v, want ErrBadArgument", tt.alpha, tt.beta, tt.clients, err)
		}
	}
}

func BenchmarkSynthetic(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Synthetic(1, 1, 30, 1); err != nil {
			b.Fatal(err)
		}
	}
}
