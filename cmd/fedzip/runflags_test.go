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
	if f := run.Lookup("upload-codec"); f.DefValue != "stcm" {
		t.Fatalf("--upload-codec defaults to %q", f.DefValue)
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
