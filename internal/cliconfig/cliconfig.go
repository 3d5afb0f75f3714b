// Package cliconfig gives every fedzip command's flags two more sources: a
// YAML file (--config FILE) and the environment (FEDZIP_<FLAG>, the flag's
// name in upper case with dashes as underscores). Precedence, lowest
// first: the flag's default, the file, the environment, the command line.
// The file is a mapping of flag names to values, for one command:
//
//	# coordinator.yaml
//	rounds: 20
//	upload-codec: stcm
//	join: [10.0.0.2:7070, 10.0.0.3:7070]   # a list is joined with commas
//
// An unknown key, a repeated key or a value the flag refuses is an error
// that names the file, the line and the key. It is implemented once, over
// flag.FlagSet: a command calls AddFlag before parsing its command line
// and Apply after.
package cliconfig

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// FlagName is the flag that names the config file.
const FlagName = "config"

// Usage is the help text of --config.
const Usage = "read flags from this YAML file (keys are flag names); $FEDZIP_<FLAG> environment variables override it and command-line flags override both"

// MaxFile bounds a configuration file.
const MaxFile = 1 << 20

// AddFlag adds --config to fs, once.
func AddFlag(fs *flag.FlagSet) {
	if fs.Lookup(FlagName) == nil {
		fs.String(FlagName, "", Usage)
	}
}

// EnvName is the environment variable of a flag: FEDZIP_UPLOAD_CODEC for
// upload-codec.
func EnvName(flagName string) string {
	return "FEDZIP_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Sources says where each flag that is not at its default got its value:
// "flag", "file PATH:LINE" or "env NAME".
type Sources map[string]string

// Apply applies the config file and the environment (read with lookup,
// e.g. os.LookupEnv) to fs, which has parsed the command line: a flag on
// the command line wins over the environment, which wins over the file,
// which wins over the default. An empty variable counts as unset.
func Apply(fs *flag.FlagSet, lookup func(string) (string, bool)) (Sources, error) {
	src := Sources{}
	fs.Visit(func(f *flag.Flag) { src[f.Name] = "flag" })
	if fs.Lookup(FlagName) != nil {
		if v, ok := lookup(EnvName(FlagName)); ok && v != "" && src[FlagName] != "flag" {
			fs.Set(FlagName, v)
			src[FlagName] = "env " + EnvName(FlagName)
		}
		if path := fs.Lookup(FlagName).Value.String(); path != "" {
			if err := applyFile(fs, path, src); err != nil {
				return nil, err
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvName(f.Name)
		v, ok := lookup(env)
		if f.Name == FlagName || !ok || v == "" || err != nil || src[f.Name] == "flag" {
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
func applyFile(fs *flag.FlagSet, path string, src Sources) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFile+1))
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	if len(b) > MaxFile {
		return fmt.Errorf("%s: larger than %d bytes", path, MaxFile)
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
		if fl == nil || key == FlagName {
			hint := " (see 'fedzip " + fs.Name() + " -h')"
			if near := Nearest(fs, key); near != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", near)
			}
			return fmt.Errorf("%s: unknown key %q: fedzip %s has no flag --%s%s", at, key, fs.Name(), key, hint)
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

// Secret reports whether a flag's value must not be printed: secrets,
// tokens and the gossip key.
func Secret(name string) bool {
	return strings.Contains(name, "secret") || strings.Contains(name, "token") || name == "gossip-key"
}
