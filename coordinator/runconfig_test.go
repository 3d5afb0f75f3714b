package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fedzip/fedzip/client/remote"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// oldRunConfig is a run as the coordinator wrote it to the Raft log before
// runspec existed (every field set), and oldRun the values it holds.
const oldRunConfig = `{"model":"mlp:16","input_dim":60,"classes":10,"init_seed":7,"strategy":"fedadam,lr=0.03",` +
	`"round":{"Fraction":0.5,"PerRound":4,"MinClients":2,"Deadline":30000000000,"Rounds":12,"Seed":5},"task_seed":9,` +
	`"local_epochs":2,"batch_size":20,"lr":0.05,"momentum":0.5,"weight_decay":0.001,"prox_mu":0.01,"upload_codec":"stcm",` +
	`"download_codec":"topk=0.1,bits=8","download_max_lag":7,"run_id":"0102030405060708090a0b0c0d0e0f10"}`

var oldRun = RunConfig{Spec: runspec.Spec{Model: "mlp:16", InputDim: 60, Classes: 10, InitSeed: 7, Strategy: "fedadam,lr=0.03",
	Round:    round.Config{Fraction: 0.5, PerRound: 4, MinClients: 2, Deadline: 30 * time.Second, Rounds: 12, Seed: 5},
	TaskSeed: 9, LocalEpochs: 2, BatchSize: 20, LR: 0.05, Momentum: 0.5, WeightDecay: 0.001, ProxMu: 0.01,
	UploadCodec: "stcm", DownloadCodec: "topk=0.1,bits=8", DownloadMaxLag: 7}, RunID: "0102030405060708090a0b0c0d0e0f10"}

// TestOldRunConfigDecodes: a run config written by the code before
// runspec decodes (as FSM.init does, refusing unknown fields) to the same
// run, encodes to the same bytes, and builds an FSM; so does one with the
// optional fields left out, as runs without them were written.
func TestOldRunConfigDecodes(t *testing.T) {
	decode := func(raw string) RunConfig {
		t.Helper()
		var c RunConfig
		dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if got := decode(oldRunConfig); got != oldRun {
		t.Fatalf("decoded %+v\nwant    %+v", got, oldRun)
	}
	if b, _ := json.Marshal(oldRun); string(b) != oldRunConfig {
		t.Fatalf("encoded %s\nwant    %s", b, oldRunConfig)
	}
	if err := oldRun.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := NewFSM().init([]byte(oldRunConfig)); err != nil {
		t.Fatal(err)
	}
	const short = `{"model":"mlp:","input_dim":3,"classes":2,"init_seed":1,"strategy":"fedavg","round":{"Fraction":0,"PerRound":3,"MinClients":0,"Deadline":0,"Rounds":0,"Seed":1},` +
		`"task_seed":1,"local_epochs":1,"batch_size":1,"lr":0.1,"momentum":0,"weight_decay":0,"upload_codec":"none"}`
	c := decode(short)
	if c.ProxMu != 0 || c.DownloadCodec != "" || c.DownloadMaxLag != 0 || c.RunID != "" || c.DownloadOn() || c.DownloadLag() != runspec.DefaultDownloadMaxLag {
		t.Fatalf("short config decoded as %+v", c)
	}
	if b, _ := json.Marshal(c); string(b) != short {
		t.Fatalf("encoded %s\nwant    %s", b, short)
	}
}

// TestCommittedRunReplaysAsBefore: a run the old coordinator committed
// although its clients refuse it (momentum 1.5, batch 2^20) is refused by
// Validate now, before it is committed, but a log that holds it replays as
// it was first applied: the FSM still builds it.
func TestCommittedRunReplaysAsBefore(t *testing.T) {
	bad := oldRun
	bad.Momentum, bad.BatchSize = 1.5, 1<<20
	if err := bad.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("Validate: %v", err)
	}
	raw, err := json.Marshal(bad)
	if err != nil {
		t.Fatal(err)
	}
	f := NewFSM()
	if err := f.init(raw); err != nil {
		t.Fatalf("replaying an old run: %v", err)
	}
	if f.cfg.Momentum != 1.5 || !bytes.Equal(f.rawCfg, raw) {
		t.Fatalf("FSM holds %+v", f.cfg)
	}
}

// TestValidRunsGiveTasksClientsAccept is the property that the run spec's
// check is the clients' own: over random runs near every bound, the task
// the coordinator sends for a run Validate accepts passes the client's
// check (client.CheckTask and client.TaskModel), and every run whose task a
// client refuses is refused by Validate, before it is committed.
func TestValidRunsGiveTasksClientsAccept(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// pick draws the first value (a good one) three times in four, so
	// that enough runs are valid.
	pick := func(xs ...any) any {
		if rng.IntN(4) > 0 {
			return xs[0]
		}
		return xs[rng.IntN(len(xs))]
	}
	var accepted, refused int
	for i := 0; i < 5000; i++ {
		s := runspec.Spec{
			Model:       pick("2nn", "lenet300", "mlp:", "mlp:16", "mlp:0", "resnet", "mlp:5000,5000").(string),
			InputDim:    pick(784, 60, 1, 0, 1<<20, 1<<20+1).(int),
			Classes:     pick(10, 2, 1, 1<<20+1).(int),
			InitSeed:    rng.Uint64(),
			Strategy:    pick("fedavg", "median", "fedadam,lr=0.03", "fedavg,dp-clip=1,dp-noise=1").(string),
			Round:       round.Config{Fraction: pick(0.1, 1.0).(float64), Rounds: pick(0, 10).(int), Seed: rng.Uint64()},
			TaskSeed:    rng.Uint64(),
			LocalEpochs: pick(1, 5, 1000, 1001, 5000, 0).(int),
			BatchSize:   pick(1, 10, 1000, 65536, 65537, 1<<20, 0).(int),
			LR:          pick(0.1, 1e-50, 1000.0, 1000.0001, 0.0, math.NaN()).(float64),
			Momentum:    pick(0.0, 0.9, 0.99999999, 1.0, 1.5, -0.1).(float64),
			WeightDecay: pick(0.0, 0.01, 1.0, 1.0000000001, 3.0).(float64),
			ProxMu:      pick(0.0, 0.01, 19.99, 20.0, 1e4, 1e4+1e-9, -1.0).(float64),
			UploadCodec: pick("stcm", "none", "", "topk=0.01,bits=8,ef=on", "topk=2", "nonsense").(string),
		}
		if s.DownloadCodec = pick("", "none", "stc", "topk=0.1,bits=8", "dgc").(string); s.DownloadCodec != "" {
			s.DownloadMaxLag = pick(0, 5, runspec.MaxDownloadMaxLag, runspec.MaxDownloadMaxLag+1).(int)
		}
		if rng.IntN(4) == 0 {
			// A net, with its input shape right or wrong.
			s.Model = pick("conv:4x5,pool:2,fc:10", "cnn", "lenet5", "conv:4096x3,pool:2,fc:10", "conv:4x5,pool:9,fc:10").(string)
			s.InputShape = pick(nn.Shape{C: 1, H: 28, W: 28}, nn.Shape{C: 2, H: 28, W: 14}, nn.Shape{}, nn.Flat(784)).(nn.Shape)
			s.InputDim = pick(s.InputShape.Dim(), 784).(int)
		}
		run := RunConfig{Spec: s, RunID: "0102030405060708090a0b0c0d0e0f10"}
		params := 1
		if m, err := run.network(); err == nil {
			params = m.NumParams()
		}
		msg := taskMessage(Task{Round: 3, Seed: round.TaskSeed(s.TaskSeed, 3, 1), Config: run, Deadline: time.Unix(1e9, 0)}, params)
		clientErr := remote.CheckTask(msg, remote.DefaultMaxParams)
		if clientErr == nil {
			_, clientErr = remote.TaskModel(msg)
		}
		err := run.Validate()
		switch {
		case err == nil && clientErr != nil:
			t.Fatalf("run %+v accepted, its task refused by the client: %v", s, clientErr)
		case err == nil:
			accepted++
		case clientErr != nil:
			refused++
		}
	}
	// Enough of both for the property to mean something.
	if accepted < 20 || refused < 1000 {
		t.Fatalf("%d runs accepted, %d refused by both", accepted, refused)
	}
}

// TestRunConfigInputShape: a run without an input shape (every log
// written before the field, and every MLP run) replays as before: its
// model is the MLP, its tasks carry no shape, and a net named without a
// shape is refused as it was. A run with a shape builds the net it names,
// keeps the shape through the log's JSON and sends it in every task.
func TestRunConfigInputShape(t *testing.T) {
	f := NewFSM()
	if err := f.init([]byte(oldRunConfig)); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.model.(*nn.MLP); !ok || f.model.InputShape() != nn.Flat(60) {
		t.Fatalf("old run: model %T %v", f.model, f.model.InputShape())
	}
	msg := taskMessage(Task{Round: 1, Config: oldRun}, f.n)
	if msg.GetInputChannels() != 0 || msg.GetInputHeight() != 0 || msg.GetInputWidth() != 0 {
		t.Fatalf("old run's task carries a shape: %v", msg)
	}

	noShape := oldRun
	noShape.Model = "conv:4x5,pool:2,fc:10"
	raw, _ := json.Marshal(noShape)
	if err := NewFSM().init(raw); err == nil {
		t.Fatal("a net without an input shape applied; the code before shapes refused it")
	}
	if err := noShape.Validate(); !errors.Is(err, runspec.ErrInvalid) {
		t.Fatalf("Validate of a net without a shape: %v", err)
	}

	conv := noShape
	conv.InputShape = nn.Shape{C: 1, H: 6, W: 10}
	if err := conv.Validate(); err != nil {
		t.Fatal(err)
	}
	raw, _ = json.Marshal(conv)
	if !bytes.Contains(raw, []byte(`"input_shape":{"C":1,"H":6,"W":10}`)) {
		t.Fatalf("encoded %s", raw)
	}
	f = NewFSM()
	if err := f.init(raw); err != nil {
		t.Fatal(err)
	}
	want, err := nn.ParseModel("conv:4x5,pool:2,fc:10", nn.Shape{C: 1, H: 6, W: 10}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if f.cfg.InputShape != conv.InputShape || !f.model.Layout().Equal(want.Layout()) || f.n != want.NumParams() {
		t.Fatalf("FSM holds %v with %d parameters, want %v", f.model.Layout(), f.n, want.Layout())
	}
	msg = taskMessage(Task{Round: 1, Config: conv}, f.n)
	if msg.GetInputChannels() != 1 || msg.GetInputHeight() != 6 || msg.GetInputWidth() != 10 {
		t.Fatalf("task shape %d×%d×%d", msg.GetInputChannels(), msg.GetInputHeight(), msg.GetInputWidth())
	}
	if m, err := remote.TaskModel(msg); err != nil || !m.Layout().Equal(want.Layout()) {
		t.Fatalf("the client builds %v, %v", m, err)
	}
	bad := conv
	bad.InputShape = nn.Shape{C: 2, H: 6, W: 10} // 120 floats for an input dimension of 60
	raw, _ = json.Marshal(bad)
	if err := NewFSM().init(raw); err == nil {
		t.Fatal("a shape of the wrong size applied")
	}
}
