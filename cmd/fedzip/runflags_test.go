package main

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedzip/fedzip/dataset"
	"github.com/fedzip/fedzip/nn"
	"github.com/fedzip/fedzip/round"
	"github.com/fedzip/fedzip/runspec"
)

// TestRunFlagsShared: simulate and coordinator offer every run flag with
// the same name, default and help (each flag's -h entry appears verbatim
// in both commands' help), and the upload codec defaults to stcm in both.
func TestRunFlagsShared(t *testing.T) {
	_, simHelp, _ := runCmd("simulate", "-h")
	_, coordHelp, _ := runCmd("coordinator", "-h")
	var r runFlags
	run := flag.NewFlagSet("run", flag.ContinueOnError)
	addRunFlags(run, &r)
	n := 0
	run.VisitAll(func(f *flag.Flag) {
		n++
		one := flag.NewFlagSet("one", flag.ContinueOnError)
		one.Var(f.Value, f.Name, f.Usage)
		one.Lookup(f.Name).DefValue = f.DefValue
		var b bytes.Buffer
		one.SetOutput(&b)
		one.PrintDefaults()
		for name, help := range map[string]string{"simulate": simHelp, "coordinator": coordHelp} {
			if !strings.Contains(help, b.String()) {
				t.Errorf("%s -h lacks the run flag as shared:\n%s", name, b.String())
			}
		}
	})
	if n < 19 {
		t.Fatalf("%d run flags", n)
	}
	for name, want := range map[string]string{"upload-codec": runspec.DefaultUploadCodec, "download-codec": runspec.DefaultDownloadCodec, "strategy": runspec.DefaultStrategy} {
		if f := run.Lookup(name); f.DefValue != want {
			t.Fatalf("--%s defaults to %q, want %q", name, f.DefValue, want)
		}
	}
	for _, old := range []string{"-mnist-dir"} {
		if strings.Contains(coordHelp, old) {
			t.Errorf("coordinator -h still offers %s", old)
		}
	}
}

// TestCoordinatorRefusesBadRunEarly: a run a client would refuse is a
// usage error that names the flag, before the coordinator creates its
// state directory.
func TestCoordinatorRefusesBadRunEarly(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ args []string }{
		{[]string{"--momentum", "1.5"}},
		{[]string{"--local-epochs", "5000"}},
		{[]string{"--batch-size", "1048576"}},
		{[]string{"--weight-decay", "3"}},
		{[]string{"--lr", "1e-50"}},
		{[]string{"--upload-codec", "topk=2"}},
		{[]string{"--strategy", "fedsomething"}},
		{[]string{"--model", "resnet"}},
		{[]string{"--dataset", "cifar"}},
		{[]string{"--input-shape", "0x28x28"}},
		{[]string{"--classes", "1"}},
		{[]string{"--model", "cnn", "--input-shape", "784"}}, // pooling one row
		{[]string{"--model", "conv:4096x3,pool:2,fc:10", "--batch-size", "1000"}},
		{[]string{"--dp-noise", "1"}},
	} {
		state := filepath.Join(dir, "state")
		args := append([]string{"coordinator", "--insecure", "--open-registration", "--state-dir", state, "--listen", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"}, tc.args...)
		code, _, stderr := runCmd(args...)
		if code != exitUsage || !strings.Contains(stderr, tc.args[0]) || strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d, one line naming %s", tc.args, code, stderr, exitUsage, tc.args[0])
		}
		if _, err := os.Stat(state); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%v: the state directory was touched: %v", tc.args, err)
		}
	}
}

// TestCoordinatorNeedsNoData: with --input-shape and --classes a
// coordinator's run names any data set, which it never reads, and trains
// the net --model names on it; without them the data set's name gives
// the shape (MNIST's 1×28×28), which an MLP's run leaves out of the log.
func TestCoordinatorNeedsNoData(t *testing.T) {
	parse := func(args ...string) coordinatorFlags {
		t.Helper()
		var f coordinatorFlags
		fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
		addRunFlags(fs, &f.runFlags)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f
	}
	run, err := parse("--dataset", "my-photos", "--input-shape", "3x32x32", "--classes", "100", "--model", "conv:16x5,pool:2,fc:100").runConfig()
	if err != nil {
		t.Fatal(err)
	}
	if run.InputShape != (nn.Shape{C: 3, H: 32, W: 32}) || run.InputDim != 3072 || run.Classes != 100 {
		t.Fatalf("run %+v", run.Spec)
	}
	if m, err := run.Network(); err != nil || m.Layout().Size != 16*3*25+16+16*16*16*100+100 {
		t.Fatalf("Network: %v, %v", m, err)
	}
	if _, err := parse("--dataset", "my-photos", "--model", "cnn").runConfig(); err == nil || !strings.Contains(err.Error(), "--input-shape") {
		t.Fatalf("an unknown data set without --input-shape: %v", err)
	}
	run, err = parse("--model", "cnn").runConfig()
	if err != nil || run.InputShape != dataset.MNISTShape {
		t.Fatalf("cnn on MNIST: %+v, %v", run, err)
	}
	if m, _ := run.Network(); m.NumParams() != 1663370 {
		t.Fatalf("cnn has %d parameters", m.NumParams())
	}
	run, err = parse("--model", "2nn").runConfig()
	if err != nil || run.InputShape != (nn.Shape{}) || run.InputDim != 784 {
		t.Fatalf("2nn on MNIST: %+v, %v", run, err)
	}
}

// TestModelFromYAML: --model net.yaml runs the network the file describes;
// the run carries its spec, and a bad file stops the command naming it.
func TestModelFromYAML(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "net.yaml")
	if err := os.WriteFile(good, []byte("layers:\n  - conv: 4x5\n  - pool: 2\n  - fc: 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var r runFlags
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	addRunFlags(fs, &r)
	if err := fs.Parse([]string{"--model", good}); err != nil {
		t.Fatal(err)
	}
	s, err := r.spec(round.Config{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Model != "conv:4x5,pool:2,fc:10" || s.Shape() != dataset.MNISTShape {
		t.Fatalf("model %q on %v", s.Model, s.Shape())
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("layers:\n  - dense: 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--model", bad}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.spec(round.Config{}, 0); !errors.Is(err, runspec.ErrInvalid) || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("a bad network file: %v", err)
	}
}
