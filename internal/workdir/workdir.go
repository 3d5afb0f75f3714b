// Package workdir is the folder fedzip's commands write into when no flag
// names a place: a coordinator's and a client's state, simulate's device
// model and its signing key, dev-certs' certificates. Keeping them out of
// the working directory keeps a source checkout clean.
//
// The folder is, in order: $FEDZIP_HOME; $XDG_STATE_HOME/fedzip;
// ~/.local/state/fedzip. It is made with mode 0700 when a command first
// writes into it, because it holds private keys and tokens.
//
// A flag whose default lies in the work folder is defined with Flag (a
// folder or file name under it, possibly built from other flags) and
// resolved after parsing with Resolve.
package workdir

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNoHome is the error when no work folder can be found.
var ErrNoHome = errors.New("workdir: no work folder")

// Env is the environment variable that names the work folder.
const Env = "FEDZIP_HOME"

// Dir returns the work folder: $FEDZIP_HOME, else $XDG_STATE_HOME/fedzip,
// else ~/.local/state/fedzip. It does not make it. An empty variable is
// unset; a relative $FEDZIP_HOME is an error (ErrNoHome), a relative
// $XDG_STATE_HOME is ignored, as the XDG specification says.
func Dir() (string, error) {
	if d := os.Getenv(Env); d != "" {
		if !filepath.IsAbs(d) {
			// Relative to whichever folder a command runs in: a new work
			// folder, and keys, in every checkout.
			return "", fmt.Errorf("%w: $%s=%q is not an absolute path", ErrNoHome, Env, d)
		}
		return filepath.Clean(d), nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "fedzip"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", fmt.Errorf("%w: no home directory (%v); set $%s", ErrNoHome, err, Env)
	}
	return filepath.Join(home, ".local", "state", "fedzip"), nil
}

// Path returns the path of name in the work folder, for showing in help
// text; if there is no work folder it returns "$FEDZIP_HOME/name".
func Path(name string) string {
	d, err := Dir()
	if err != nil {
		return filepath.Join("$"+Env, name)
	}
	return filepath.Join(d, name)
}

// Make makes the work folder, mode 0700, and returns it. A folder that
// exists must be private (Private): this user's, and not open to others
// unless it is empty (it is then made 0700).
func Make() (string, error) {
	d, err := Dir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return "", fmt.Errorf("workdir: %w", err)
	}
	if err := Private(d); err != nil {
		return "", err
	}
	return d, nil
}

// Value is a string flag whose default is a name in the work folder.
// Until Resolve, an unset Value holds its pattern for help text; Resolve
// stores the default path into the variable.
type Value struct {
	p    *string
	name func() string // the name in the work folder, read at Resolve
	show string        // the default as help text shows it
	set  bool          // set from a flag, file or variable
	done bool          // set to its default by Resolve
}

// Flag returns a flag.Value that stores into p. If the flag is never set
// (on the command line, in a config file or the environment), Resolve
// sets p to the work folder joined with name(), called after parsing so
// it can read other flags. show is name as help text shows it, e.g.
// "coordinator-ID" for a name built from --id; a nil name means show.
//
//	fs.Var(workdir.Flag(&f.stateDir, "coordinator-ID", func() string { return "coordinator-" + f.id }), "state-dir", "...")
func Flag(p *string, show string, name func() string) *Value {
	if name == nil {
		name = func() string { return show }
	}
	v := &Value{p: p, name: name, show: show}
	*p = v.String()
	return v
}

// String returns the value, or before Resolve the default path as help
// text shows it.
func (v *Value) String() string {
	if v == nil || v.p == nil {
		return "" // the zero Value flag.PrintDefaults makes
	}
	if v.set || v.done {
		return *v.p
	}
	return Path(v.show)
}

// Set sets the value; an empty string is a value like any other.
func (v *Value) Set(s string) error {
	*v.p, v.set = s, true
	return nil
}

// Get returns the value as a string (flag.Getter).
func (v *Value) Get() any { return v.String() }

// Resolve sets the variable of every unset Value in fs to its path in the
// work folder. With create, it also makes the work folder if a default is
// used.
func Resolve(fs *flag.FlagSet, create bool) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := f.Value.(*Value)
		if !ok || v.set || err != nil {
			return
		}
		d, e := Dir()
		if e == nil && create {
			d, e = Make()
		}
		if e != nil {
			err = fmt.Errorf("--%s: %w", f.Name, e)
			return
		}
		*v.p, v.done = filepath.Join(d, v.name()), true
	})
	return err
}
