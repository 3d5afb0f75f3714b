package dataset

import (
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// mnistTrainCounts is the label histogram of the MNIST training set.
var mnistTrainCounts = []int{5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949}

// mnistLikeLabels returns 60,000 labels with MNIST's training histogram in
// a fixed pseudo-random order, so the partition tests need no files.
func mnistLikeLabels() []uint8 {
	var y []uint8
	for c, n := range mnistTrainCounts {
		for range n {
			y = append(y, uint8(c))
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	r.Shuffle(len(y), func(i, j int) { y[i], y[j] = y[j], y[i] })
	return y
}

// checkPartition fails unless p has the given number of clients, each
// client's indices ascending, and (with all) every index of 0..n-1 exactly
// once, or (without) no index twice.
func checkPartition(t *testing.T, p Partition, clients, n int, all bool) {
	t.Helper()
	if len(p) != clients {
		t.Fatalf("%d clients, want %d", len(p), clients)
	}
	if err := p.Validate(n); err != nil {
		t.Fatal(err)
	}
	for k, idx := range p {
		if !slices.IsSorted(idx) {
			t.Fatalf("client %d: indices not ascending", k)
		}
	}
	if all && p.Total() != n {
		t.Fatalf("%d indices assigned, want all %d", p.Total(), n)
	}
}

// labelStats returns the mean and max number of distinct labels per client
// and the mean fraction of a client's examples that carry its most common
// label.
func labelStats(p Partition, labels []uint8, classes int) (meanLabels float64, maxLabels int, meanTop float64) {
	for _, idx := range p {
		c := LabelCounts(labels, classes, idx)
		distinct := 0
		for _, v := range c {
			if v > 0 {
				distinct++
			}
		}
		meanLabels += float64(distinct)
		maxLabels = max(maxLabels, distinct)
		meanTop += float64(slices.Max(c)) / float64(len(idx))
	}
	return meanLabels / float64(len(p)), maxLabels, meanTop / float64(len(p))
}

func TestIID(t *testing.T) {
	tests := []struct{ n, clients int }{
		{1, 1}, {5, 1}, {7, 7}, {10, 3}, {101, 10}, {60000, 100}, {60000, 7},
	}
	for _, tt := range tests {
		p, err := IID(tt.n, tt.clients, 42)
		if err != nil {
			t.Fatalf("IID(%d, %d): %v", tt.n, tt.clients, err)
		}
		checkPartition(t, p, tt.clients, tt.n, true)
		sizes := p.Sizes()
		if slices.Max(sizes)-slices.Min(sizes) > 1 {
			t.Errorf("IID(%d, %d): sizes %v differ by more than 1", tt.n, tt.clients, sizes)
		}
		again, _ := IID(tt.n, tt.clients, 42)
		if !reflect.DeepEqual(p, again) {
			t.Errorf("IID(%d, %d): not deterministic", tt.n, tt.clients)
		}
		if tt.clients > 1 && tt.n > 3 {
			other, _ := IID(tt.n, tt.clients, 43)
			if reflect.DeepEqual(p, other) {
				t.Errorf("IID(%d, %d): seeds 42 and 43 give the same partition", tt.n, tt.clients)
			}
		}
	}
	// Shuffled, not dealt in order: the first client of 60000/100 is not 0..599.
	p, _ := IID(60000, 100, 1)
	if p[0][599] == 599 {
		t.Error("IID did not shuffle")
	}
	// IID keeps label proportions: every client has all 10 MNIST labels.
	labels := mnistLikeLabels()
	if _, _, top := labelStats(p, labels, 10); top > 0.25 {
		t.Errorf("IID mean top-label fraction %.2f, want about 0.11", top)
	}
}

func TestPartitionErrors(t *testing.T) {
	labels := []uint8{0, 1, 2, 3, 0, 1, 2, 3}
	tests := []struct {
		name string
		f    func() (Partition, error)
	}{
		{"IID zero clients", func() (Partition, error) { return IID(10, 0, 1) }},
		{"IID more clients than examples", func() (Partition, error) { return IID(3, 4, 1) }},
		{"IID no examples", func() (Partition, error) { return IID(0, 1, 1) }},
		{"Shards zero clients", func() (Partition, error) { return Shards(labels, 0, 2, 1) }},
		{"Shards zero shards", func() (Partition, error) { return Shards(labels, 2, 0, 1) }},
		{"Shards too many shards", func() (Partition, error) { return Shards(labels, 3, 3, 1) }},
		{"Shards overflow", func() (Partition, error) { return Shards(labels, math.MaxInt/2, 4, 1) }},
		{"Dirichlet alpha 0", func() (Partition, error) { return Dirichlet(labels, 4, 2, 0, 1) }},
		{"Dirichlet alpha < 0", func() (Partition, error) { return Dirichlet(labels, 4, 2, -1, 1) }},
		{"Dirichlet alpha NaN", func() (Partition, error) { return Dirichlet(labels, 4, 2, math.NaN(), 1) }},
		{"Dirichlet alpha Inf", func() (Partition, error) { return Dirichlet(labels, 4, 2, math.Inf(1), 1) }},
		{"Dirichlet too many clients", func() (Partition, error) { return Dirichlet(labels, 4, 9, 1, 1) }},
		{"Dirichlet zero clients", func() (Partition, error) { return Dirichlet(labels, 4, 0, 1, 1) }},
		{"Dirichlet label out of range", func() (Partition, error) { return Dirichlet(labels, 3, 2, 1, 1) }},
		{"Dirichlet zero classes", func() (Partition, error) { return Dirichlet(labels, 0, 2, 1, 1) }},
	}
	for _, tt := range tests {
		if p, err := tt.f(); !errors.Is(err, ErrBadArgument) {
			t.Errorf("%s: got %v, %v; want ErrBadArgument", tt.name, p, err)
		}
	}
}

func TestShardsMcMahan(t *testing.T) {
	labels := mnistLikeLabels()
	p, err := Shards(labels, 100, 2, 7)
	if err != nil {
		t.Fatal(err)
	}
	checkPartition(t, p, 100, len(labels), true)
	for k, s := range p.Sizes() {
		if s != 600 {
			t.Fatalf("client %d has %d examples, want 600", k, s)
		}
	}
	mean, maxL, _ := labelStats(p, labels, 10)
	if maxL > 4 || mean >= 2.5 {
		t.Errorf("labels per client: mean %.2f max %d, want mean < 2.5 and max <= 4", mean, maxL)
	}
	// Each client's examples are two runs of the label-sorted order: a
	// client with one label got two shards of the same label.
	t.Logf("labels per client: mean %.2f, max %d", mean, maxL)

	again, _ := Shards(labels, 100, 2, 7)
	other, _ := Shards(labels, 100, 2, 8)
	if !reflect.DeepEqual(p, again) {
		t.Error("Shards not deterministic")
	}
	if reflect.DeepEqual(p, other) {
		t.Error("Shards: seeds 7 and 8 give the same partition")
	}
}

func TestShardsShapes(t *testing.T) {
	tests := []struct {
		n, clients, per int
		size            int // per client
	}{
		{1003, 10, 2, 100}, // 20 shards of 50, 3 dropped
		{10, 10, 1, 1},
		{10, 2, 5, 5},
		{59, 3, 4, 16}, // 12 shards of 4
	}
	for _, tt := range tests {
		labels := make([]uint8, tt.n)
		for i := range labels {
			labels[i] = uint8(i * 7 % 5)
		}
		p, err := Shards(labels, tt.clients, tt.per, 3)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		checkPartition(t, p, tt.clients, tt.n, false)
		for k, s := range p.Sizes() {
			if s != tt.size {
				t.Errorf("%+v: client %d has %d examples, want %d", tt, k, s, tt.size)
			}
		}
	}
	// The shard layout is the label-sorted order: with one shard per
	// client and one shard per label, each client gets exactly one label.
	labels := []uint8{2, 0, 1, 2, 0, 1, 1, 0, 2}
	p, err := Shards(labels, 3, 1, 5)
	if err != nil {
		t.Fatal(err)
	}
	for k, idx := range p {
		c := LabelCounts(labels, 3, idx)
		if slices.Max(c) != 3 {
			t.Errorf("client %d: indices %v have labels %v, want one label", k, idx, c)
		}
	}
}

func TestDirichletSkew(t *testing.T) {
	labels := mnistLikeLabels()
	tests := []struct {
		alpha      float64
		minTop     float64 // bounds on the mean top-label fraction
		maxTop     float64
		minLabelsL float64 // bounds on mean labels per client
		maxLabelsL float64
	}{
		{0.1, 0.6, 1, 1, 6},
		{0.5, 0.3, 0.6, 5, 9.5},
		{100, 0, 0.16, 9.9, 10},
	}
	var tops []float64
	for _, tt := range tests {
		p, err := Dirichlet(labels, 10, 100, tt.alpha, 11)
		if err != nil {
			t.Fatal(err)
		}
		checkPartition(t, p, 100, len(labels), true)
		if m := slices.Min(p.Sizes()); m < 10 {
			t.Errorf("alpha %v: smallest client has %d examples, want >= 10", tt.alpha, m)
		}
		mean, _, top := labelStats(p, labels, 10)
		t.Logf("alpha %v: mean labels %.2f, mean top fraction %.3f, sizes %d..%d",
			tt.alpha, mean, top, slices.Min(p.Sizes()), slices.Max(p.Sizes()))
		if top < tt.minTop || top > tt.maxTop {
			t.Errorf("alpha %v: mean top-label fraction %.3f, want in [%v, %v]", tt.alpha, top, tt.minTop, tt.maxTop)
		}
		if mean < tt.minLabelsL || mean > tt.maxLabelsL {
			t.Errorf("alpha %v: mean labels per client %.2f, want in [%v, %v]", tt.alpha, mean, tt.minLabelsL, tt.maxLabelsL)
		}
		tops = append(tops, top)
	}
	if !(tops[0] > tops[1] && tops[1] > tops[2]) {
		t.Errorf("top-label fractions %v do not fall as alpha grows", tops)
	}
}

func TestDirichletDeterministic(t *testing.T) {
	labels := mnistLikeLabels()[:5000]
	a, err := Dirichlet(labels, 10, 20, 0.5, 99)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Dirichlet(labels, 10, 20, 0.5, 99)
	c, _ := Dirichlet(labels, 10, 20, 0.5, 100)
	if !reflect.DeepEqual(a, b) {
		t.Error("Dirichlet not deterministic")
	}
	if reflect.DeepEqual(a, c) {
		t.Error("Dirichlet: seeds 99 and 100 give the same partition")
	}
}

// TestDirichletHard covers draws that rarely or never meet the minimum
// size, so that the repair runs, and alphas small enough that every gamma
// draw underflows to zero.
func TestDirichletHard(t *testing.T) {
	tests := []struct {
		n, classes, clients int
		alpha               float64
	}{
		{200, 10, 50, 1e-3},
		{200, 10, 50, 1e-300},
		{30, 1, 30, 0.01},
		{100, 2, 7, 1e-6},
		{1000, 10, 100, 0.05},
	}
	for _, tt := range tests {
		labels := make([]uint8, tt.n)
		for i := range labels {
			labels[i] = uint8(i % tt.classes)
		}
		p, err := Dirichlet(labels, tt.classes, tt.clients, tt.alpha, 5)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		checkPartition(t, p, tt.clients, tt.n, true)
		if m, want := slices.Min(p.Sizes()), min(10, tt.n/tt.clients); m < want {
			t.Errorf("%+v: smallest client %d, want >= %d", tt, m, want)
		}
	}
}

func TestRebalance(t *testing.T) {
	p := Partition{{0, 1, 2, 3, 4, 5, 6, 9}, {}, {7, 8}, {}}
	// Largest client 0 gives its largest index to the smallest (lowest id on
	// ties): 9 to 1, 6 to 3, 5 to 1, 4 to 3.
	rebalance(p, 2)
	want := Partition{{0, 1, 2, 3}, {5, 9}, {7, 8}, {4, 6}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("rebalance = %v, want %v", p, want)
	}
}

func BenchmarkIID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := IID(60000, 100, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkShards(b *testing.B) {
	labels := mnistLikeLabels()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Shards(labels, 100, 2, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDirichlet(b *testing.B) {
	labels := mnistLikeLabels()
	for _, alpha := range []float64{0.1, 0.5, 100} {
		b.Run(fmtAlpha(alpha), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Dirichlet(labels, 10, 100, alpha, 1); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func fmtAlpha(a float64) string { return "alpha=" + strconvFloat(a) }
