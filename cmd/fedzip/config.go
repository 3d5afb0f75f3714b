package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Configuration: every command's flags can also come from a YAML file
// (--config FILE) and from the environment (FEDZIP_<FLAG>, the flag's name
// in upper case with dashes as underscores). Precedence, lowest first:
// the flag's default, the file, the command line, the environment. The
// file is a mapping of flag names to values, for one command:
//
//	# coordinator.yaml
//	rounds: 20
//	upload-codec: stcm
//	join: [10.0.0.2:7070, 10.0.0.3:7070]   # a list is joined with commas
//
// An unknown key, a repeated key or a value the flag refuses is an error
// that names the file, the line and the key. It is implemented once, over
// flag.FlagSet: parseFlags (and the commands that parse by hand) call
// addConfigFlag before parsing and configure after.

const configUsage = "read flags from this YAML file (keys are flag names); $FEDZIP_<FLAG> environment variables override it and command-line flags override both"

// maxConfigFile bounds a configuration file.
const maxConfigFile = 1 << 20

// addConfigFlag adds --config to fs.
func addConfigFlag(fs *flag.FlagSet) {
	if fs.Lookup("config") == nil {
		fs.String("config", "", configUsage)
	}
}

// envName is the environment variable of a flag: FEDZIP_UPLOAD_CODEC for
// upload-codec.
func envName(flagName string) string {
	return "FEDZIP_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// configPrint, in a context, makes configure print the effective
// configuration instead of letting the command run ('fedzip config print').
type configPrint struct {
	w      io.Writer
	format string
}

type configPrintKey struct{}

// configure finishes parsing a command's flags once fs has parsed the
// command line: it applies the --config file to the flags the command line
// left unset, then the environment to all. done reports that the command
// should return code: a bad file or variable, or 'config print' mode.
func configure(ctx context.Context, fs *flag.FlagSet, name string, stderr io.Writer) (code int, done bool) {
	src, err := applySources(fs, os.LookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "fedzip %s: %v\n", name, err)
		return exitUsage, true
	}
	if p, ok := ctx.Value(configPrintKey{}).(*configPrint); ok {
		if err := printConfig(p.w, p.format, name, fs, src); err != nil {
			fmt.Fprintf(stderr, "fedzip config print: %v\n", err)
			return exitError, true
		}
		return exitOK, true
	}
	return 0, false
}

// applySources applies the config file and the environment to fs, which
// has parsed the command line: a flag on the command line wins over the
// environment, which wins over the file, which wins over the default. It
// returns where each flag that is not at
// its default got its value: "flag", "file PATH:LINE" or "env NAME".
func applySources(fs *flag.FlagSet, lookup func(string) (string, bool)) (map[string]string, error) {
	src := map[string]string{}
	fs.Visit(func(f *flag.Flag) { src[f.Name] = "flag" })
	if fs.Lookup("config") != nil {
		if v, ok := lookup(envName("config")); ok && v != "" && src["config"] != "flag" {
			fs.Set("config", v)
			src["config"] = "env " + envName("config")
		}
		if path := fs.Lookup("config").Value.String(); path != "" {
			if err := applyFile(fs, path, src); err != nil {
				return nil, err
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		v, ok := lookup(env)
		if f.Name == "config" || !ok || v == "" || err != nil || src[f.Name] == "flag" {
			return // the command line wins
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("$%s: invalid value %q for --%s: %v", env, v, f.Name, unwrapFlagErr(e))
			return
		}
		src[f.Name] = "env " + env
	})
	return src, err
}

// applyFile sets the flags of the YAML mapping in path that the command
// line did not set.
func applyFile(fs *flag.FlagSet, path string, src map[string]string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	if len(b) > maxConfigFile {
		return fmt.Errorf("%s: larger than %d bytes", path, maxConfigFile)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of flag names to values, such as 'rounds: 20'", path, root.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		at := fmt.Sprintf("%s:%d", path, k.Line)
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("%s: a key must be a flag name", at)
		}
		key := k.Value
		if line, dup := seen[key]; dup {
			return fmt.Errorf("%s: key %q repeats the one on line %d", at, key, line)
		}
		seen[key] = k.Line
		fl := fs.Lookup(key)
		if fl == nil || key == "config" {
			return fmt.Errorf("%s: unknown key %q: %s has no flag --%s%s", at, key, commandOf(fs), key, suggest(fs, key))
		}
		value, err := yamlValue(v)
		if err != nil {
			return fmt.Errorf("%s: key %q: %v", at, key, err)
		}
		if src[key] == "flag" {
			continue // the command line wins
		}
		if err := fs.Set(key, value); err != nil {
			return fmt.Errorf("%s: key %q: invalid value %q: %v", at, key, value, unwrapFlagErr(err))
		}
		src[key] = fmt.Sprintf("file %s:%d", path, v.Line)
	}
	return nil
}

// yamlValue is the flag value a YAML value stands for: a scalar as it is
// written, a list of scalars joined with commas.
func yamlValue(v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", nil
		}
		return v.Value, nil
	case yaml.SequenceNode:
		parts := make([]string, 0, len(v.Content))
		for _, c := range v.Content {
			if c.Kind != yaml.ScalarNode {
				return "", errors.New("a list may hold only plain values")
			}
			parts = append(parts, c.Value)
		}
		return strings.Join(parts, ","), nil
	case yaml.AliasNode:
		return yamlValue(v.Alias)
	}
	return "", errors.New("want a value or a list of values, not a mapping")
}

// unwrapFlagErr drops strconv's "strconv.ParseInt: parsing ..." prefix
// that flag values return.
func unwrapFlagErr(err error) error {
	var ne interface{ Unwrap() error }
	if errors.As(err, &ne) && ne.Unwrap() != nil {
		return ne.Unwrap()
	}
	return err
}

func commandOf(fs *flag.FlagSet) string { return "fedzip " + fs.Name() }

// suggest names the flag closest to key, if one is close.
func suggest(fs *flag.FlagSet, key string) string {
	norm := strings.ReplaceAll(strings.ToLower(key), "_", "-")
	best, bestD := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		if d := editDistance(norm, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return " (see 'fedzip " + fs.Name() + " -h')"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// secretFlag reports whether a flag's value must not be printed.
func secretFlag(name string) bool {
	return strings.Contains(name, "secret") || strings.Contains(name, "token") || name == "gossip-key"
}

// configEntry is one flag in 'config print -o json'.
type configEntry struct {
	Name     string `json:"name"`
	Value    any    `json:"value"`
	Source   string `json:"source"`
	Env      string `json:"env"`
	Redacted bool   `json:"redacted,omitempty"`
}

// printConfig writes the effective configuration of a command: YAML that
// --config accepts, each line commented with where its value came from, or
// JSON.
func printConfig(w io.Writer, format, name string, fs *flag.FlagSet, src map[string]string) error {
	var entries []configEntry
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		e := configEntry{Name: f.Name, Value: flagValue(f), Source: src[f.Name], Env: envName(f.Name)}
		if e.Source == "" {
			e.Source = "default"
		}
		if secretFlag(f.Name) && f.Value.String() != "" {
			e.Value, e.Redacted = nil, true
		}
		entries = append(entries, e)
	})
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Command string        `json:"command"`
			Config  string        `json:"config,omitempty"`
			Flags   []configEntry `json:"flags"`
		}{name, fs.Lookup("config").Value.String(), entries})
	}
	fmt.Fprintf(w, "# fedzip %s: effective configuration\n", name)
	fmt.Fprintln(w, "# precedence: default < --config file < command-line flag < $FEDZIP_* environment")
	if c := fs.Lookup("config").Value.String(); c != "" {
		fmt.Fprintf(w, "# config file: %s\n", c)
	}
	lines := make([]string, len(entries))
	width := 0
	for i, e := range entries {
		if e.Redacted {
			lines[i] = "# " + e.Name + ": (set; not shown)"
		} else {
			b, err := yaml.Marshal(e.Value)
			if err != nil {
				return err
			}
			lines[i] = e.Name + ": " + strings.TrimSuffix(string(b), "\n")
		}
		if len(lines[i]) <= 48 {
			width = max(width, len(lines[i]))
		}
	}
	for i, e := range entries {
		fmt.Fprintf(w, "%-*s  # %s\n", width, lines[i], e.Source)
	}
	return nil
}

// flagValue returns a flag's value typed for YAML and JSON: booleans and
// numbers as such, durations and everything else as strings.
func flagValue(f *flag.Flag) any {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return f.Value.String()
	}
	switch v := g.Get().(type) {
	case bool, int, int64, uint, uint64, float64:
		return v
	case time.Duration:
		return v.String()
	}
	return f.Value.String()
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
