package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/checkpoint"
	"github.com/fedzip/fedzip/deliver"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/report"
)

// TestSimulateBadRobustnessAndPrivacyFlags: FedProx, attack and DP flags
// out of range exit 2 with one line on stderr.
func TestSimulateBadRobustnessAndPrivacyFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--prox-mu", "-1"},
		{"--prox-mu", "NaN"},
		{"--prox-mu", "30"}, // prox-mu·lr = 3
		{"--attack", "bitflip", "--attackers", "0.2"},
		{"--attack", "signflip"},
		{"--attackers", "0.2"},
		{"--attack", "signflip", "--attackers", "1.2"},
		{"--attack", "signflip", "--attackers", "-0.1"},
		{"--attack", "signflip", "--attackers", "0.001"}, // of 100 clients
		{"--attack", "scale", "--attackers", "0.2", "--attack-scale", "-3"},
		{"--attack", "gaussian", "--attackers", "0.2", "--attack-stddev", "0"},
		{"--attack", "minmax", "--attackers", "0.2", "--attack-scale", "2"},
		{"--attack", "backdoor", "--attackers", "0.2", "--backdoor-target", "-1"},
		{"--attack", "backdoor", "--attackers", "0.2", "--backdoor-fraction", "0"},
		{"--attack", "backdoor", "--attackers", "0.2", "--backdoor-fraction", "1.5"},
		{"--attack", "backdoor", "--attackers", "0.2", "--backdoor-trigger", "0"},
		{"--eval-last", "-1"},
		{"--dp-clip", "-1"},
		{"--dp-clip", "1", "--dp-noise", "-0.5"},
		{"--dp-clip", "1", "--dp-noise", "Inf"},
		{"--dp-noise", "1"},
		{"--dp-clip", "1", "--dp-delta", "0"},
		{"--dp-clip", "1", "--dp-delta", "1"},
		{"--dp-clip", "1", "--strategy", "median"},
		{"--dp-clip", "1", "--strategy", "fedavg,dp-noise=1,dp-clip=1"},
		{"--dp-adaptive", "--dp-noise", "1"}, // 10 per round: needs z < 2σ_b = 1
		{"--strategy", "krum,f=4"},           // needs 11 of the 10 selected
		{"--strategy", "trimmed-mean,beta=0.5"},
	} {
		code, _, stderr := runCmd(append([]string{"simulate"}, args...)...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr)
		}
		if n := strings.Count(strings.TrimRight(stderr, "\n"), "\n"); n != 0 || stderr == "" {
			t.Errorf("%v: want one line on stderr, got %q", args, stderr)
		}
	}
}

func readMetrics(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestSimulateReportsEpsilon runs DP-FedAvg: every round's metrics carry
// epsilon, increasing, and the summary reports the last.
func TestSimulateReportsEpsilon(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "m.jsonl")
	code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
		"--model", "mlp:8", "--rounds", "4", "--dp-clip", "0.5", "--dp-noise", "1", "--dp-delta", "1e-4",
		"--metrics-out", metrics, "-o", "json", "--quiet", "--deliver", "")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	lines := readMetrics(t, metrics)
	if len(lines) != 4 {
		t.Fatalf("%d metric lines", len(lines))
	}
	prev := 0.0
	for i, m := range lines {
		eps, ok := m["epsilon"].(float64)
		if !ok || !(eps > prev) {
			t.Fatalf("round %d: epsilon %v after %v", i+1, m["epsilon"], prev)
		}
		prev = eps
	}
	if s.Epsilon != prev || s.DPDelta != 1e-4 || s.DPClip != 0.5 {
		t.Fatalf("summary epsilon %v delta %v clip %v, last round %v", s.Epsilon, s.DPDelta, s.DPClip, prev)
	}
	if !strings.Contains(s.Strategy, "dp-noise=1") || !strings.Contains(s.Strategy, "dp-clients=10") {
		t.Fatalf("summary strategy %q does not show the DP wrapper", s.Strategy)
	}
}

// TestSimulateAttackIsReproducible runs the same attacked simulation on 1
// and 3 workers: the same summary accuracy, and the rounds count their
// attackers.
func TestSimulateAttackIsReproducible(t *testing.T) {
	dir := t.TempDir()
	var losses []float64
	for _, w := range []string{"1", "3"} {
		metrics := filepath.Join(dir, w+".jsonl")
		code, stdout, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5",
			"--model", "mlp:8", "--rounds", "3", "--attack", "labelflip", "--attackers", "0.3", "--prox-mu", "0.5",
			"--strategy", "trimmed-mean", "--workers", w, "--metrics-out", metrics, "-o", "json", "--quiet", "--deliver", "")
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		var s report.Simulation
		if err := json.Unmarshal([]byte(stdout), &s); err != nil {
			t.Fatal(err)
		}
		if s.Attack != "labelflip" || s.Attackers != 0.3 || s.ProxMu != 0.5 {
			t.Fatalf("summary %+v", s)
		}
		losses = append(losses, s.FinalLoss)
		n := 0.0
		for _, m := range readMetrics(t, metrics) {
			a, _ := m["attackers"].(float64)
			n += a
		}
		if n == 0 {
			t.Fatal("no round reports an attacker")
		}
	}
	if losses[0] != losses[1] {
		t.Fatalf("final test loss %v on 1 worker, %v on 3", losses[0], losses[1])
	}
}

// TestSimulateSavesNet: 'fedzip simulate --model' takes a layer spec,
// trains the net, saves it (the checkpoint rebuilds the same net) and
// delivers it: the device file holds the conv layer.
func TestSimulateSavesNet(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "net.fzmodel")
	code, _, stderr := runCmd("simulate", "--dataset", "synthetic", "--clients", "10", "--fraction", "0.5",
		"--model", "conv:2x3,fc:10", "--rounds", "1", "--save-model", model, "--quiet", "--deliver", filepath.Join(dir, "device.fzm"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, "device.fzm"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := deliver.ReadUnverified(b, deliver.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if len(u.File.Layers) == 0 || u.File.Layers[0].Op != deliver.OpConv {
		t.Fatalf("delivered layers %+v, want a conv first", u.File.Layers)
	}
	ck, err := checkpoint.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	net, err := ck.Network()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := net.(*nn.Net); !ok || net.Name() != "conv:2x3,fc:10" || net.InputShape() != nn.Flat(60) || net.NumParams() != 2*9+2+2*60*10+10 {
		t.Fatalf("checkpoint holds %T %s on %v with %d parameters", net, net.Name(), net.InputShape(), net.NumParams())
	}
}

// TestSimulateBackdoorReportsSuccess: a backdoor run reports its success
// rate in the metrics file (every evaluated round), the JSON summary and
// the table; a target beyond the data's classes is refused.
func TestSimulateBackdoorReportsSuccess(t *testing.T) {
	metrics := filepath.Join(t.TempDir(), "m.jsonl")
	args := []string{"simulate", "--dataset", "synthetic", "--clients", "20", "--fraction", "0.5", "--model", "mlp:8", "--rounds", "3",
		"--attack", "backdoor", "--attackers", "0.2", "--backdoor-target", "3", "--metrics-out", metrics, "--quiet", "--deliver", ""}
	code, stdout, stderr := runCmd(append(args, "-o", "json")...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var s report.Simulation
	if err := json.Unmarshal([]byte(stdout), &s); err != nil {
		t.Fatal(err)
	}
	rounds := readMetrics(t, metrics)
	last, ok := rounds[len(rounds)-1]["backdoor_success"].(float64)
	if s.BackdoorSuccess == nil || !ok || *s.BackdoorSuccess != last {
		t.Fatalf("summary backdoor success %v, last round's %v", s.BackdoorSuccess, rounds[len(rounds)-1]["backdoor_success"])
	}
	for _, m := range rounds {
		if _, ok := m["backdoor_success"]; !ok {
			t.Fatalf("round %v has no backdoor success rate", m["round"])
		}
	}
	if code, stdout, _ = runCmd(args...); code != exitOK || !strings.Contains(stdout, "backdoor success") {
		t.Fatalf("exit %d, the table has no backdoor success:\n%s", code, stdout)
	}
	code, _, stderr = runCmd("simulate", "--dataset", "synthetic", "--clients", "20", "--rounds", "1", "--attack", "backdoor", "--attackers", "0.2", "--backdoor-target", "12", "--deliver", "")
	if code == exitOK || !strings.Contains(stderr, "backdoor target label 12") {
		t.Fatalf("target 12 of 10 classes: exit %d, %s", code, stderr)
	}
}
