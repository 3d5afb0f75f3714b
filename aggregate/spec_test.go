package aggregate

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Strategy
	}{
		{"", NewAutoBound(FedAvg{})},
		{"fedavg", NewAutoBound(FedAvg{})},
		{"fedavg,bound=off", FedAvg{}},
		{"fedavg,bound=auto,bound-median=3,weight-cap=off", autoBound(FedAvg{}, 3, 0, 0)},
		{"fedavg,weight-cap=1.5", autoBound(FedAvg{}, 2, 1.5, 0)},
		{"fedavg,bound-growth=2", autoBound(FedAvg{}, 2, 2, 2)},
		{"fedavgm,lr=3,momentum=0,anneal=200,bound-growth=1.5", autoBound(&FedAvgM{LR: 3, Anneal: 200, LREnd: 1}, 2, 2, 1.5)},
		{"fedavg,bound-growth=off", NewAutoBound(FedAvg{})},
		{"median,bound=auto", NewAutoBound(Median{})},
		{"fedavg,bound=5", NormBound{Inner: FedAvg{}, Bound: 5}},
		{"fedavg,reputation=2,bound=off", &Reputation{Inner: FedAvg{}, Z: 2, MinRounds: 3, MaxDrop: 0.5}},
		{"fedavg,reputation=2", NewAutoBound(&Reputation{Inner: FedAvg{}, Z: 2, MinRounds: 3, MaxDrop: 0.5})},
		{"fedavg,mean=senders,bound=off", FedAvg{Mean: MeanSenders}},
		{"fedavg,mean=all,bound=off", FedAvg{}},
		{"fedavgm,lr=2,momentum=0,mean=senders,bound=off", &FedAvgM{LR: 2, Momentum: 0, Mean: MeanSenders}},
		{"fedadam,mean=senders,bound=off", &FedAdam{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3, Mean: MeanSenders}},
		{" fedavgm , lr = 0.5 , bound = off", &FedAvgM{LR: 0.5, Momentum: 0.9}},
		{"fedavgm", NewAutoBound(&FedAvgM{LR: 1, Momentum: 0.9})},
		{"fedadam,bound=off", &FedAdam{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}},
		{"fedadam,lr=0.03,tau=1e-4,bias-correction=true,bound=off", &FedAdam{LR: 0.03, Beta1: 0.9, Beta2: 0.99, Tau: 1e-4, BiasCorrection: true}},
		{"fedyogi,bound=off", &FedYogi{LR: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}},
		{"fedadagrad,bound=off", &FedAdagrad{LR: 0.1, Beta1: 0, Tau: 1e-3}},
		{"median", Median{}},
		{"median,over=senders", Median{Over: MeanSenders, MinSenders: 2}},
		{"trimmed-mean,over=senders,min-senders=3", TrimmedMean{Beta: 0.2, Over: MeanSenders, MinSenders: 3}},
		{"median,bucket=2,bucket-seed=7", Bucketing{Inner: Median{}, S: 2, Seed: 7}},
		{"trimmed-mean", TrimmedMean{Beta: 0.2}},
		{"trimmed-mean,beta=0", TrimmedMean{Beta: 0}},
		{"krum", Krum{F: 1}},
		{"multi-krum,f=2,m=5", MultiKrum{F: 2, M: 5}},
		{"bulyan,f=3", Bulyan{F: 3}},
		{"median,bound=10", NormBound{Inner: Median{}, Bound: 10}},
		{"fedavg,dp-clip=1,dp-noise=1.1,dp-clients=10,dp-seed=7", &DP{Inner: FedAvg{}, Clip: 1, NoiseMultiplier: 1.1, ExpectedClients: 10, Seed: 7}},
		{"fedadam,dp-adaptive=true,dp-noise=0.5,dp-clients=100", &DP{Inner: NewFedAdam(), NoiseMultiplier: 0.5, ExpectedClients: 100, Adaptive: &AdaptiveClip{}}},
		{"fedavg,dp-quantile=0.7,dp-clients=10", &DP{Inner: FedAvg{}, ExpectedClients: 10, Adaptive: &AdaptiveClip{Quantile: 0.7}}},
	} {
		got, err := Parse(tc.spec)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) = %#v, want %#v", tc.spec, got, tc.want)
		}
		// The spec a strategy prints parses back to the same strategy.
		again, err := Parse(Spec(got))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("Parse(Spec(%q) = %q) = %#v, %v", tc.spec, Spec(got), again, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want error
		says string // a fragment the message must contain
	}{
		{"fedprox", ErrUnknownStrategy, "fedprox"},
		{",lr=1", ErrUnknownStrategy, ""},
		{"fedavg,lr=1", ErrParam, `no parameter "lr"`},
		{"fedadam,beta=0.5", ErrParam, "beta1"},
		{"fedadam,lr", ErrParam, "key=value"},
		{"fedadam,lr=fast", ErrParam, `lr="fast"`},
		{"fedadam,lr=1,lr=2", ErrParam, "twice"},
		{"fedadam,lr=-1", ErrParam, "lr"},
		{"fedadam,beta2=1", ErrParam, "beta2"},
		{"fedavgm,momentum=1.5", ErrParam, "momentum"},
		{"fedavg,mean=some", ErrParam, "mean"},
		{"median,mean=senders", ErrParam, "mean"},
		{"fedavg,mean=senders,dp-clip=1", ErrParam, "mean=all"},
		{"fedadam,tau=0", ErrParam, "tau"},
		{"trimmed-mean,beta=0.5", ErrParam, "beta"},
		{"trimmed-mean,beta=-0.1", ErrParam, "beta"},
		{"krum,f=-1", ErrParam, "f = -1"},
		{"krum,f=1.5", ErrParam, "integer"},
		{"multi-krum,m=-2", ErrParam, "m = -2"},
		{"fedadam,bias-correction=maybe", ErrParam, "true or false"},
		{"median,bound=0", ErrParam, "bound"},
		{"median,dp-clip=1", ErrParam, "mean-based"},
		{"fedavg,dp-noise=1", ErrParam, "dp-clip"},
		{"fedavg,dp-clip=1,bound=2", ErrParam, "both clip"},
		{"fedavg,dp-clip=1,dp-seed=-3", ErrParam, "dp-seed"},
		{"fedavg,dp-adaptive=true,dp-noise=1", ErrParam, "expected number of clients"},
		{"fedavg,dp-adaptive=false,dp-quantile=0.3,dp-clip=1", ErrParam, "dp-adaptive=true"},
		{"fedavg,dp-adaptive=true,dp-noise=1,dp-clients=10", ErrPrivacy, "2σ_b"},
		{"fedavg,bound-median=0.5", ErrParam, "bound-median"},
		{"fedavg,weight-cap=-1", ErrParam, "weight-cap"},
		{"fedavg,weight-cap=lots", ErrParam, "weight-cap"},
		{"fedavg,bound=off,weight-cap=2", ErrParam, "need bound=auto"},
		{"median,bound-median=3", ErrParam, "need bound=auto"},
		{"fedavg,bound=5,weight-cap=2", ErrParam, "need bound=auto"},
		{"fedavg,dp-clip=1,bound=auto", ErrParam, "both clip"},
		{"fedavg,bound=sometimes", ErrParam, "bound"},
		{"fedavg,bound-growth=0.5", ErrParam, "bound-growth"},
		{"fedavg,bound-growth=fast", ErrParam, "bound-growth"},
		{"fedavg,bound-median=off,bound-growth=2", ErrParam, "bound-growth needs bound-median"},
		{"fedavg,bound=off,bound-growth=2", ErrParam, "need bound=auto"},
	} {
		_, err := Parse(tc.spec)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Parse(%q) = %v, want %v saying %q", tc.spec, err, tc.want, tc.says)
		}
	}
}

func TestNamesAndNew(t *testing.T) {
	want := []string{"bulyan", "cclip", "fedadagrad", "fedadam", "fedavg", "fedavgm", "fedyogi", "krum", "median", "multi-krum", "signvote", "trimmed-mean"}
	if !slices.Equal(Names(), want) {
		t.Fatalf("Names() = %v", Names())
	}
	for _, name := range Names() {
		s, err := New(name)
		if err != nil || s.Name() != name {
			t.Errorf("New(%q) = %v, %v", name, s, err)
		}
		ps, err := Params(name)
		if err != nil || !hasKey(ps, "dp-clip") {
			t.Errorf("Params(%q) = %v, %v", name, ps, err)
		}
	}
	if _, err := Params("nope"); !errors.Is(err, ErrUnknownStrategy) {
		t.Fatal(err)
	}
}
