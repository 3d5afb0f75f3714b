package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/fedzip/fedzip/internal/cliconfig"
)

// cmdHelp is what a command's -h prints: "Usage: SYNOPSIS", about, the
// flags and example.
type cmdHelp struct {
	name, synopsis, about, example string
}

// parseFlags parses a subcommand's flags, then its --config file and the
// environment (configure); done reports that the command should return
// code (help, a usage error, or 'config print'). The command takes no
// arguments besides flags.
func parseFlags(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer, name, about, example string) (code int, done bool) {
	rest, code, done := parseArgs(ctx, fs, args, stdout, stderr, cmdHelp{name, "fedzip " + name + " [flags]", about, example})
	if !done && len(rest) > 0 {
		fmt.Fprintf(stderr, "fedzip %s: unexpected argument %q (run 'fedzip %s -h' for help)\n", name, rest[0], name)
		return exitUsage, true
	}
	return code, done
}

// parseArgs is parseFlags for a command that takes arguments (files, a
// folder): flags and arguments may come in any order, and after "--"
// everything is an argument. It returns the arguments.
func parseArgs(ctx context.Context, fs *flag.FlagSet, args []string, stdout, stderr io.Writer, h cmdHelp) (rest []string, code int, done bool) {
	addConfigFlag(fs)
	fs.SetOutput(io.Discard)
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stdout, "Usage: %s\n\n%s\n\nFlags:\n", h.synopsis, strings.TrimRight(h.about, "\n"))
				printDefaults(fs, stdout)
				if h.example != "" {
					fmt.Fprintf(stdout, "\nExample:\n%s", h.example)
				}
				return nil, exitOK, true
			}
			fmt.Fprintf(stderr, "fedzip %s: %v (run 'fedzip %s -h' for help)\n", h.name, flagError(fs, err), h.name)
			return nil, exitUsage, true
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		if len(args) > len(left) && args[len(args)-len(left)-1] == "--" {
			rest = append(rest, left...)
			break
		}
		rest, args = append(rest, left[0]), left[1:]
	}
	code, done = configure(ctx, fs, h.name, stderr)
	return rest, code, done
}

// flagError adds the nearest flag's name to fs.Parse's error for an
// unknown flag: "flag provided but not defined: -round; did you mean
// --rounds?".
func flagError(fs *flag.FlagSet, err error) error {
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: "); ok {
		if near := cliconfig.Nearest(fs, name); near != "" {
			return fmt.Errorf("%w; did you mean --%s?", err, near)
		}
	}
	return err
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
