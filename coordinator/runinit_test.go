package coordinator

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// TestValidRunsInitTheFSM: a run Validate accepts is one every replica's
// FSM builds when the init entry is applied, also with hostile
// parameters: huge or tiny strategy parameters, seed 0, selection counts
// and deadlines at their limits, codecs keeping more than the model holds.
// (A committed run the FSM then refuses would stop every replica.)
func TestValidRunsInitTheFSM(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(xs ...any) any { return xs[rng.IntN(len(xs))] }
	accepted := 0
	for i := 0; i < 5000; i++ {
		s := runspec.Spec{
			Model: pick("mlp:", "mlp:4", "2nn").(string), InputDim: pick(4, 1, 784).(int), Classes: pick(2, 10).(int),
			InitSeed: pick(uint64(0), rng.Uint64()).(uint64),
			Strategy: pick("fedavg", "krum,f=1000000000", "krum,f=9223372036854775807", "bulyan,f=4611686018427387904", "multi-krum,f=1,m=-1", "multi-krum,m=100000000000",
				"trimmed-mean,beta=0.4999999", "fedadam,lr=1e308", "fedadam,tau=1e-320", "fedavgm,lr=1e300,momentum=0.999999999",
				"fedavg,dp-clip=1e308,dp-noise=1e308", "fedavg,dp-clip=1e-320,dp-noise=0", "fedyogi,lr=NaN", "fedavg,dp-clip=Inf", "median,dp-clip=1,dp-noise=1,dp-delta=0.99").(string),
			Round: round.Config{Fraction: pick(0.1, 1.0, math.SmallestNonzeroFloat64).(float64), PerRound: pick(0, 1, 1<<40).(int), MinClients: pick(0, 1, 1<<40).(int),
				Rounds: pick(0, 10, runspec.MaxRounds).(int), Seed: pick(uint64(0), rng.Uint64()).(uint64),
				Deadline: pick(time.Duration(0), time.Duration(math.MaxInt64), time.Nanosecond).(time.Duration)},
			TaskSeed:    rng.Uint64(),
			LocalEpochs: 1, BatchSize: 1, LR: pick(0.1, 1000.0, 1e-45, 1e-46).(float64), Momentum: pick(0.0, 0.99999999).(float64),
			WeightDecay: 0, ProxMu: pick(0.0, 1e4).(float64),
			UploadCodec:   pick("none", "stcm", "topk=0.000001,bits=8", "topk=1000000").(string),
			DownloadCodec: pick("", "stc", "topk=1000000000,bits=8").(string),
		}
		run := RunConfig{Spec: s, RunID: "0102030405060708090a0b0c0d0e0f10", AggregateOrder: OrderSelection}
		if err := run.Validate(); err != nil {
			continue
		}
		accepted++
		raw, err := json.Marshal(run)
		if err != nil {
			t.Fatal(err)
		}
		if err := NewFSM().init(raw); err != nil {
			t.Fatalf("run %+v accepted, the FSM refuses it: %v", s, err)
		}
	}
	if accepted < 100 {
		t.Fatalf("only %d runs accepted: the property means little", accepted)
	}
}
