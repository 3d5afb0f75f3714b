package runspec

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestSecAggStrategies: only rules that need nothing but the mean run on
// masked inputs; bound=N moves to the clients.
func TestSecAggStrategies(t *testing.T) {
	for spec, bound := range map[string]float64{
		"": 0, "fedavg": 0, "fedavg,bound=off": 0, SecAggStrategy(DefaultStrategy): 0, "fedadam,lr=0.01": 0,
		"fedavg,bound=5": 5, "fedavgm,lr=2,bound=0.5": 0.5,
	} {
		got, err := SecAggNormBound(spec)
		if err != nil || got != bound {
			t.Errorf("%q: bound %v, %v; want %v", spec, got, err, bound)
		}
	}
	for _, spec := range []string{
		"median", "trimmed-mean", "krum", "multi-krum", "bulyan", "cclip", "signvote", "robust",
		"fedavg,bound=auto", "fedavg,bound-median=3", "fedavg,weight-cap=3", "fedavg,mean=senders", "fedavg,filter=0", "fedavg,bucket=2",
		"fedavg,reputation=2", "fedavg,quorum=2", "fedavg,dp-clip=1,dp-noise=1",
	} {
		if _, err := SecAggNormBound(spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", spec, err)
		}
	}
}

// TestSecAggValidate checks the SecAgg fields and that a spec without
// SecAgg encodes as before the field existed.
func TestSecAggValidate(t *testing.T) {
	s := good()
	s.UploadCodec = ""
	s.SecAgg = &SecAgg{Fraction: DefaultSecAggFraction, Bits: DefaultSecAggBits}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Spec){
		"fraction":     func(s *Spec) { s.SecAgg.Fraction = 0 },
		"bits":         func(s *Spec) { s.SecAgg.Bits = MaxSecAggBits + 1 },
		"clip":         func(s *Spec) { s.SecAgg.Clip = -1 },
		"k without t":  func(s *Spec) { s.SecAgg.Neighbours = 4 },
		"upload codec": func(s *Spec) { s.UploadCodec = "stc" },
		"strategy":     func(s *Spec) { s.Strategy = "median" },
	} {
		c := s
		sa := *s.SecAgg
		c.SecAgg = &sa
		edit(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	b, err := json.Marshal(good())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "secagg") {
		t.Fatalf("a spec without secagg encodes it: %s", b)
	}
}

// TestSecAggSupport parses --secagg-support, refuses bad values through
// Validate, and omits the field from the JSON for the random default.
func TestSecAggSupport(t *testing.T) {
	for in, want := range map[string]SecAggSupport{
		"":                              {},
		"random":                        {},
		"announced":                     {Announced: true, Explore: DefaultSecAggExplore, Block: DefaultSecAggBlock},
		"announced,explore=0":           {Announced: true, Explore: 0, Block: DefaultSecAggBlock},
		"announced, block=1,explore=1 ": {Announced: true, Explore: 1, Block: 1},
	} {
		got, err := ParseSecAggSupport(in)
		if err != nil || got != want {
			t.Errorf("%q: %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"topk", "random,explore=0.5", "announced,explore=1.5", "announced,explore=-0.1",
		"announced,explore=NaN", "announced,block=0", "announced,block=65537", "announced,block=x", "announced,k=3", "announced,"} {
		s := good()
		s.UploadCodec = ""
		s.SecAgg = &SecAgg{Fraction: DefaultSecAggFraction, Bits: DefaultSecAggBits, Support: in}
		if err := s.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", in, err)
		}
	}
	b, err := json.Marshal(SecAgg{Fraction: 0.01, Bits: 8})
	if err != nil || strings.Contains(string(b), "support") {
		t.Fatalf("random support in the JSON: %s, %v", b, err)
	}
}

// TestSecAggLocal accepts support-adam with a random or an announced
// support, keeps it in the run's JSON (and leaves the default out), and
// refuses an unknown name and the SGD settings Adam on the support does
// not take, naming the flag.
func TestSecAggLocal(t *testing.T) {
	base := good()
	base.UploadCodec = ""
	for _, sup := range []string{"", "random", "announced"} {
		for _, local := range []string{"", SecAggLocalSGD, SecAggLocalSupportAdam} {
			s := base
			s.SecAgg = &SecAgg{Fraction: DefaultSecAggFraction, Bits: DefaultSecAggBits, Support: sup, Local: local, Clip: 0.5}
			if err := s.Validate(); err != nil {
				t.Errorf("support %q, local %q: %v", sup, local, err)
			}
			// Adam's moves outgrow the automatic clip: support-adam
			// needs a fixed one.
			s.SecAgg.Clip = 0
			if err := s.Validate(); (err != nil) != (local == SecAggLocalSupportAdam) || err != nil && !strings.Contains(err.Error(), "--secagg-clip") {
				t.Errorf("support %q, local %q, automatic clip: %v", sup, local, err)
			}
		}
	}
	s := base
	s.SecAgg = &SecAgg{Fraction: DefaultSecAggFraction, Bits: DefaultSecAggBits, Local: SecAggLocalSupportAdam, Clip: 0.5}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back Spec
	if err := json.Unmarshal(b, &back); err != nil || back.SecAgg == nil || back.SecAgg.Local != SecAggLocalSupportAdam {
		t.Fatalf("the run's JSON %s does not keep --secagg-local: %+v, %v", b, back.SecAgg, err)
	}
	if b, _ := json.Marshal(SecAgg{Fraction: 0.01, Bits: 8}); strings.Contains(string(b), "local") {
		t.Fatalf("the default local training is in the JSON: %s", b)
	}
	for name, c := range map[string]struct {
		edit func(*Spec)
		flag string
	}{
		"unknown":      {func(s *Spec) { s.SecAgg.Local = "adam" }, "--secagg-local"},
		"momentum":     {func(s *Spec) { s.Momentum = 0.9 }, "--momentum"},
		"weight decay": {func(s *Spec) { s.WeightDecay = 1e-4 }, "--weight-decay"},
		"prox mu":      {func(s *Spec) { s.ProxMu = 0.1 }, "--prox-mu"},
	} {
		c2 := s
		sa := *s.SecAgg
		c2.SecAgg = &sa
		c.edit(&c2)
		err := c2.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s: %v, want ErrInvalid naming %s", name, err, c.flag)
		}
	}
	// Plain SGD keeps every SGD setting.
	s.SecAgg.Local, s.Momentum, s.ProxMu = SecAggLocalSGD, 0.9, 0.1
	if err := s.Validate(); err != nil {
		t.Fatalf("sgd with momentum and prox-mu: %v", err)
	}
}
