package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTableAndResume: the table gives the clean accuracy and each attack's
// change against its own strategy's clean run, the backdoor's success
// rate, and a dash for a missing cell; the cells read back from the
// results file are the ones a rerun skips.
func TestTableAndResume(t *testing.T) {
	g := grid{seeds: []int{1, 2}, codecs: []string{"none"}, strategies: []string{"fedavg", "median"}, attacks: []string{"alie", "backdoor", "gaussian"}, rounds: 200, last: 10}
	bd := 0.75
	cells := []Cell{
		{Seed: 1, Codec: "none", Strategy: "fedavg", Accuracy: 0.90},
		{Seed: 2, Codec: "none", Strategy: "fedavg", Accuracy: 0.92},
		{Seed: 1, Codec: "none", Strategy: "fedavg", Attack: "alie", Accuracy: 0.85},
		{Seed: 2, Codec: "none", Strategy: "fedavg", Attack: "alie", Accuracy: 0.89},
		{Seed: 1, Codec: "none", Strategy: "median", Accuracy: 0.80},
		{Seed: 1, Codec: "none", Strategy: "median", Attack: "backdoor", Accuracy: 0.81, Backdoor: &bd},
		{Seed: 1, Codec: "none", Strategy: "fedavg", Attack: "gaussian", Failed: "fedzip simulate: client 6: gradient: non-finite value"},
	}
	path := filepath.Join(t.TempDir(), "results.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cells {
		c.Rounds, c.Last = 200, 10
		b, _ := json.Marshal(c)
		f.Write(append(b, '\n'))
	}
	f.Close()
	done, err := readCells(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != len(cells) {
		t.Fatalf("read %d cells of %d", len(done), len(cells))
	}
	if _, ok := done[Cell{Seed: 2, Codec: "none", Strategy: "fedavg", Attack: "alie", Rounds: 200}.key()]; !ok {
		t.Fatal("a cell done is not found by its key")
	}
	var b strings.Builder
	if err := writeTable(&b, g, done); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| clean (accuracy) | 91.00% | 80.00% [seeds 1] |",
		"| alie | -4.0 | – |",
		"| backdoor | – | +1.0 (bd 75%) [seeds 1] |",
		"| gaussian | failed [seeds 1] | – |",
		"9 of the 16 runs (seeds 1,2) are missing.",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestTablePerSeed: with perSeed each seed is a column with two decimals,
// and a loss beyond the goal (2 points dense, 3 with a codec) is bold.
func TestTablePerSeed(t *testing.T) {
	g := grid{seeds: []int{1, 2}, codecs: []string{"none", "stcg"}, strategies: []string{"robust"}, attacks: []string{"alie"}, rounds: 200, perSeed: true}
	done := map[string]Cell{}
	for _, c := range []Cell{
		{Seed: 1, Codec: "none", Accuracy: 0.9},
		{Seed: 1, Codec: "none", Attack: "alie", Accuracy: 0.875},
		{Seed: 2, Codec: "none", Accuracy: 0.9},
		{Seed: 2, Codec: "none", Attack: "alie", Accuracy: 0.885},
		{Seed: 1, Codec: "stcg", Accuracy: 0.9},
		{Seed: 1, Codec: "stcg", Attack: "alie", Accuracy: 0.875},
	} {
		c.Strategy, c.Rounds = "robust", 200
		done[c.key()] = c
	}
	var b strings.Builder
	if err := writeTable(&b, g, done); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| attack | `robust` seed 1 none | `robust` seed 2 none | `robust` seed 1 stcg | `robust` seed 2 stcg |",
		"| clean (accuracy) | 90.00 % | 90.00 % | 90.00 % | – |",
		"| alie | **-2.50** | -1.50 | -2.50 | – |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestArgs: a cell's command is the documented setting, with the attack
// only when there is one; quote makes it a shell command.
func TestArgs(t *testing.T) {
	g := grid{attackers: 0.2}
	a := g.args(Cell{Seed: 7, Codec: "stcg", Strategy: "median,bucket=2", Attack: "ipm", Rounds: 200, Last: 10})
	got := quote(a)
	for _, want := range []string{"--partition dirichlet --alpha 0.1 --clients 100 --fraction 0.1 --rounds 200 --seed 7",
		"--strategy 'median,bucket=2' --upload-codec stcg", "--eval-last 10", "--attack ipm --attackers 0.2"} {
		if !strings.Contains(got, want) {
			t.Errorf("%s lacks %q", got, want)
		}
	}
	if strings.Contains(quote(g.args(Cell{Seed: 1, Codec: "none", Strategy: "fedavg", Rounds: 5, Last: 1})), "--attack") {
		t.Error("the clean run names an attack")
	}
}
