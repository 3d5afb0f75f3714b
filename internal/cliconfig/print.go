package cliconfig

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Entry is one flag in the JSON form of Print.
type Entry struct {
	Name     string `json:"name"`
	Value    any    `json:"value"`
	Source   string `json:"source"`
	Env      string `json:"env"`
	Redacted bool   `json:"redacted,omitempty"`
}

// Print writes the effective configuration of command, whose flags fs
// has parsed and Apply has completed with src: with format "yaml", YAML
// that --config accepts, each line commented with where its value came
// from; with "json", a JSON object. Secret values are not shown.
func Print(w io.Writer, format, command string, fs *flag.FlagSet, src Sources) error {
	var entries []Entry
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == FlagName {
			return
		}
		e := Entry{Name: f.Name, Value: flagValue(f), Source: src[f.Name], Env: EnvName(f.Name)}
		if e.Source == "" {
			e.Source = "default"
		}
		if Secret(f.Name) && f.Value.String() != "" {
			e.Value, e.Redacted = nil, true
		}
		entries = append(entries, e)
	})
	config := ""
	if c := fs.Lookup(FlagName); c != nil {
		config = c.Value.String()
	}
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Command string  `json:"command"`
			Config  string  `json:"config,omitempty"`
			Flags   []Entry `json:"flags"`
		}{command, config, entries})
	}
	fmt.Fprintf(w, "# fedzip %s: effective configuration\n", command)
	fmt.Fprintln(w, "# precedence: default < --config file < $FEDZIP_* environment < command-line flag")
	if config != "" {
		fmt.Fprintf(w, "# config file: %s\n", config)
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
