package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// parseFlags parses a subcommand's flags, then its --config file and the
// environment (configure); done reports that the command should return
// code (help, a usage error, or 'config print').
func parseFlags(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer, name, about, example string) (code int, done bool) {
	addConfigFlag(fs)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: fedzip %s [flags]\n\n%s\n\nFlags:\n", name, about)
			printDefaults(fs, stdout)
			fmt.Fprintf(stdout, "\nExample:\n%s", example)
			return exitOK, true
		}
		fmt.Fprintf(stderr, "fedzip %s: %v (run 'fedzip %s -h' for help)\n", name, err, name)
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fedzip %s: unexpected argument %q (run 'fedzip %s -h' for help)\n", name, fs.Arg(0), name)
		return exitUsage, true
	}
	return configure(ctx, fs, name, stderr)
}

// printDefaults prints fs's flags and how else to set them.
func printDefaults(fs *flag.FlagSet, w io.Writer) {
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
	fmt.Fprintln(w, "\nEvery flag can also come from --config FILE (YAML: flag-name: value) or $FEDZIP_<FLAG_NAME>\n(e.g. FEDZIP_UPLOAD_CODEC); the environment overrides the file, and flags override both.\nSee 'fedzip config print'.")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func gossipKey(b64 string) ([]byte, error) {
	if b64 == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key: not base64: %v", err)
	}
	if len(key) != 16 && len(key) != 24 && len(key) != 32 {
		return nil, fmt.Errorf("--gossip-key: %d bytes, want 16, 24 or 32 (e.g. head -c 32 /dev/urandom | base64)", len(key))
	}
	return key, nil
}

