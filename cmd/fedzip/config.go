package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/fedzip/fedzip/internal/cliconfig"
	"github.com/fedzip/fedzip/internal/workdir"
)

// Configuration: every command's flags can also come from a YAML file
// (--config FILE) and from the environment (FEDZIP_<FLAG>); precedence,
// lowest first: default, file, environment, command line. The layering is
// package cliconfig; parseFlags (and the commands that parse by hand) call
// addConfigFlag before parsing and configure after.

// addConfigFlag adds --config to fs.
func addConfigFlag(fs *flag.FlagSet) { cliconfig.AddFlag(fs) }

// configPrint, in a context, makes configure print the effective
// configuration instead of letting the command run ('fedzip config print').
type configPrint struct {
	w      io.Writer
	format string
}

type configPrintKey struct{}

// configure finishes parsing a command's flags once fs has parsed the
// command line: it applies the --config file and the environment to the
// flags the command line left unset, then sets the defaults that lie in
// the work folder (workdir.Resolve). done reports that the command should
// return code: a bad file or variable, or 'config print' mode.
func configure(ctx context.Context, fs *flag.FlagSet, name string, stderr io.Writer) (code int, done bool) {
	src, err := cliconfig.Apply(fs, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip %s: %v\n", name, err)
		return exitUsage, true
	}
	p, printing := ctx.Value(configPrintKey{}).(*configPrint)
	if err := workdir.Resolve(fs, !printing); err != nil {
		fmt.Fprintf(stderr, "fedzip %s: %v\n", name, err)
		return exitError, true
	}
	if printing {
		if err := cliconfig.Print(p.w, p.format, name, fs, src); err != nil {
			fmt.Fprintf(stderr, "fedzip config print: %v\n", err)
			return exitError, true
		}
		return exitOK, true
	}
	return 0, false
}

const configAbout = `Usage: fedzip config print [COMMAND [FLAGS...]] [-o yaml|json]

Prints the configuration COMMAND would run with: each flag's value and
where it came from (default, the --config file, the command line, or a
$FEDZIP_* environment variable), as YAML that --config accepts. FLAGS are
COMMAND's own, --config among them. Secrets (--*-secret, --*-token,
--gossip-key) are not shown. Without COMMAND it prints every command's.

Every command takes --config FILE, a YAML mapping of its flag names to
values; environment variables FEDZIP_<FLAG> (upper case, dashes as
underscores: FEDZIP_UPLOAD_CODEC) override the file, and command-line
flags override both. An unknown key or a bad value is an error that names the
line and the key.

Example:
  printf 'rounds: 20\nupload-codec: stcm\n' > coord.yaml
  FEDZIP_ROUNDS=30 fedzip config print coordinator --config coord.yaml --insecure
`

// runConfig is 'fedzip config print'.
func runConfig(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, configAbout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] != "print" {
		fmt.Fprintf(stderr, "fedzip config: unknown subcommand %q: want print (run 'fedzip config -h')\n", args[0])
		return exitUsage
	}
	args = args[1:]
	// -o may come anywhere; take it out before COMMAND's flags are parsed.
	format := "yaml"
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--o":
			if i+1 == len(args) {
				fmt.Fprintln(stderr, "fedzip config print: -o needs a value: yaml or json")
				return exitUsage
			}
			format, i = args[i+1], i+1
		case strings.HasPrefix(a, "-o=") || strings.HasPrefix(a, "--o="):
			format = a[strings.Index(a, "=")+1:]
		default:
			rest = append(rest, a)
		}
	}
	if format != "yaml" && format != "json" {
		fmt.Fprintf(stderr, "fedzip config print: -o %q: want yaml or json\n", format)
		return exitUsage
	}
	ctx = context.WithValue(ctx, configPrintKey{}, &configPrint{w: stdout, format: format})
	if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
		if len(rest) > 0 {
			fmt.Fprintln(stderr, "fedzip config print: name the COMMAND the flags are for, e.g. 'fedzip config print coordinator --config FILE'")
			return exitUsage
		}
		for i, c := range configurable() {
			if i > 0 && format == "yaml" {
				fmt.Fprintln(stdout, "---")
			}
			if code := c.run(ctx, configArgs(c.name, nil), stdout, stderr); code != exitOK {
				return code
			}
		}
		return exitOK
	}
	name := rest[0]
	i := slices.IndexFunc(configurable(), func(c command) bool { return c.name == name })
	if i < 0 {
		fmt.Fprintf(stderr, "fedzip config print: %q is not a command with flags (run 'fedzip help')\n", name)
		return exitUsage
	}
	return configurable()[i].run(ctx, configArgs(name, rest[1:]), stdout, stderr)
}

// configurable returns the commands that take flags.
func configurable() []command {
	return slices.DeleteFunc(commands(), func(c command) bool { return c.name == "version" || c.name == "config" })
}

// configArgs gives a command's flags the arguments it needs before them:
// cluster wants its subcommand first.
func configArgs(name string, flags []string) []string {
	if name == "cluster" && (len(flags) == 0 || strings.HasPrefix(flags[0], "-")) {
		return append([]string{"status"}, flags...)
	}
	return flags
}
