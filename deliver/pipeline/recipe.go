package pipeline

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ErrRecipe means a recipe string is malformed or names an unknown stage,
// parameter or value.
var ErrRecipe = errors.New("invalid recipe")

// Stage is one step of a recipe: an operation, its main argument and its
// parameters.
type Stage struct {
	Op     string            // distill, prune, cluster, quantize, lowrank, encode, finetune
	Arg    string            // the bare value after "op=", if any
	Params map[string]string // key → value
	Text   string            // the stage as written
}

// Ops lists the stage operations in the order they usually appear.
var Ops = []string{"distill", "prune", "cluster", "quantize", "lowrank", "encode", "finetune"}

// trainKeys are the fine-tuning parameters every training stage accepts.
var trainKeys = []string{"finetune", "lr", "batch", "momentum", "wd", "kd", "T"}

// opKeys lists the parameters of each operation (besides per-layer keys
// fc1, fc2, ... where noted).
var opKeys = map[string][]string{
	"distill":  {"student", "T", "alpha", "epochs", "lr", "batch", "momentum", "wd"},
	"prune":    append([]string{"sparsity", "neurons", "filters", "nm", "scope", "schedule", "steps"}, trainKeys...),
	"cluster":  append([]string{"bits", "iters", "clr"}, trainKeys...),
	"quantize": {"calib", "pct"},
	"lowrank":  append([]string{"rank", "energy"}, trainKeys...),
	"encode":   {"bias", "codebook"},
	"finetune": {"epochs", "lr", "batch", "momentum", "wd", "kd", "T"},
}

// layerKeys are the operations that take per-layer values keyed fcN:
// sparsity for prune, bits for cluster, rank for lowrank.
var layerKey = regexp.MustCompile(`^(fc|conv)[0-9]+$`)

// ParseRecipe parses a recipe:
//
//	recipe = stage { ";" stage }
//	stage  = op [ "=" item ] { "," item }
//	item   = key ( ":" | "=" ) value  |  value
//
// A bare value is the stage's main argument (prune=0.92, quantize=int8,
// encode=huffman, finetune=2); every other item is a parameter, split at
// its first ":" or "=" (student:mlp:100 is the parameter student with the
// value mlp:100). Spaces around items are ignored, and so is an empty
// stage at the end.
func ParseRecipe(s string) ([]Stage, error) {
	var stages []Stage
	parts := strings.Split(s, ";")
	for i, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			if i == len(parts)-1 && i > 0 {
				continue
			}
			return nil, fmt.Errorf("%w: empty stage %d in %q", ErrRecipe, i+1, s)
		}
		st := Stage{Params: map[string]string{}, Text: part}
		op, rest, hasRest := strings.Cut(part, "=")
		if c := strings.IndexByte(op, ','); c >= 0 {
			op, rest, hasRest = part[:c], part[c+1:], true
		}
		st.Op = strings.TrimSpace(op)
		if !slices.Contains(Ops, st.Op) {
			return nil, fmt.Errorf("%w: unknown stage %q (want one of %s)", ErrRecipe, st.Op, strings.Join(Ops, ", "))
		}
		if hasRest {
			for j, item := range strings.Split(rest, ",") {
				item = strings.TrimSpace(item)
				if item == "" {
					return nil, fmt.Errorf("%w: stage %q: empty item", ErrRecipe, part)
				}
				k := strings.IndexAny(item, ":=")
				if k < 0 {
					if j > 0 || strings.HasPrefix(part, st.Op+",") {
						return nil, fmt.Errorf("%w: stage %q: %q is not key:value (only the first item may be a bare value)", ErrRecipe, part, item)
					}
					st.Arg = item
					continue
				}
				key, val := strings.TrimSpace(item[:k]), strings.TrimSpace(item[k+1:])
				if key == "" || val == "" {
					return nil, fmt.Errorf("%w: stage %q: item %q needs a key and a value", ErrRecipe, part, item)
				}
				if _, dup := st.Params[key]; dup {
					return nil, fmt.Errorf("%w: stage %q: %s given twice", ErrRecipe, part, key)
				}
				allowed := opKeys[st.Op]
				if !slices.Contains(allowed, key) && !(layerKey.MatchString(key) && slices.Contains([]string{"prune", "cluster", "lowrank"}, st.Op)) {
					extra := ""
					if slices.Contains([]string{"prune", "cluster", "lowrank"}, st.Op) {
						extra = " or a layer name fcN or convN"
					}
					return nil, fmt.Errorf("%w: stage %q: unknown parameter %q (want %s%s)", ErrRecipe, part, key, strings.Join(allowed, ", "), extra)
				}
				st.Params[key] = val
			}
		}
		stages = append(stages, st)
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("%w: empty recipe", ErrRecipe)
	}
	for i, st := range stages {
		if st.Op == "distill" && i > 0 {
			return nil, fmt.Errorf("%w: distill must be the first stage (its teacher is the input model)", ErrRecipe)
		}
		if err := st.check(); err != nil {
			return nil, err
		}
	}
	return stages, nil
}

// check validates the values of a stage, so that a bad recipe fails before
// any training.
func (st Stage) check() error {
	var errs []error
	num := func(key string, lo, hi float64) {
		if v, ok := st.Params[key]; ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || math.IsNaN(f) || f < lo || f > hi {
				errs = append(errs, fmt.Errorf("%s=%s: want a number in [%g, %g]", key, v, lo, hi))
			}
		}
	}
	integer := func(key string, lo, hi int) {
		if v, ok := st.Params[key]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				errs = append(errs, fmt.Errorf("%s=%s: want an integer in [%d, %d]", key, v, lo, hi))
			}
		}
	}
	oneOf := func(key string, allowed ...string) {
		if v, ok := st.Params[key]; ok && !slices.Contains(allowed, v) {
			errs = append(errs, fmt.Errorf("%s=%s: want one of %s", key, v, strings.Join(allowed, ", ")))
		}
	}
	train := func() {
		integer("finetune", 0, 1000)
		integer("epochs", 0, 1000)
		num("lr", 1e-9, 100)
		integer("batch", 1, 65536)
		num("momentum", 0, 0.999)
		num("wd", 0, 1)
		num("kd", 0, 1)
		num("T", 0.01, 1000)
	}
	layers := func(lo, hi float64, isInt bool) {
		for k := range st.Params {
			if layerKey.MatchString(k) {
				if isInt {
					integer(k, int(lo), int(hi))
				} else {
					num(k, lo, hi)
				}
			}
		}
	}
	arg := func(key string) {
		if st.Arg != "" {
			if _, ok := st.Params[key]; ok {
				errs = append(errs, fmt.Errorf("%s given twice", key))
			}
			st.Params[key] = st.Arg
		}
	}
	switch st.Op {
	case "distill":
		arg("student")
		if _, ok := st.Params["student"]; !ok {
			errs = append(errs, errors.New("needs student:ARCH (mlp:H1-H2, 2nn or lenet300)"))
		} else if _, err := parseArch(st.Params["student"]); err != nil {
			errs = append(errs, err)
		}
		num("alpha", 0, 1)
		train()
	case "prune":
		arg("sparsity")
		n := 0
		for _, k := range []string{"sparsity", "neurons", "filters", "nm"} {
			if _, ok := st.Params[k]; ok {
				n++
			}
		}
		hasLayer := false
		for k := range st.Params {
			hasLayer = hasLayer || layerKey.MatchString(k)
		}
		if n > 1 || (n == 0 && !hasLayer) {
			errs = append(errs, errors.New("give one of a sparsity (prune=0.9), neurons:FRACTION, filters:FRACTION or nm:N:M"))
		}
		num("sparsity", 0, 1)
		num("neurons", 0, 0.99)
		num("filters", 0, 0.99)
		if v, ok := st.Params["nm"]; ok {
			if _, _, err := parseNM(v); err != nil {
				errs = append(errs, err)
			}
		}
		oneOf("scope", "layer", "global")
		oneOf("schedule", "cubic", "oneshot")
		integer("steps", 1, 10000)
		layers(0, 1, false)
		train()
	case "cluster":
		arg("bits")
		integer("bits", 1, 8)
		integer("iters", 0, 1000)
		num("clr", 0, 100)
		layers(1, 8, true)
		train()
	case "quantize":
		if st.Arg != "int8" && st.Arg != "f16" {
			errs = append(errs, fmt.Errorf("quantize=%q: want int8 or f16", st.Arg))
		}
		oneOf("calib", "minmax", "percentile")
		num("pct", 50, 100)
	case "lowrank":
		_, r := st.Params["rank"]
		_, e := st.Params["energy"]
		hasLayer := false
		for k := range st.Params {
			hasLayer = hasLayer || layerKey.MatchString(k)
		}
		if st.Arg != "" || (r && e) || (!r && !e && !hasLayer) {
			errs = append(errs, errors.New("give rank:R or energy:FRACTION (and/or fcN=R per layer)"))
		}
		integer("rank", 1, 1<<20)
		num("energy", 0.01, 1)
		layers(1, 1<<20, true)
		train()
	case "encode":
		if st.Arg != "huffman" && st.Arg != "packed" {
			errs = append(errs, fmt.Errorf("encode=%q: want huffman or packed", st.Arg))
		}
		oneOf("bias", "f32", "f16")
		oneOf("codebook", "f32", "f16")
	case "finetune":
		arg("epochs")
		if _, ok := st.Params["epochs"]; !ok {
			errs = append(errs, errors.New("needs a number of epochs (finetune=2)"))
		}
		train()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: stage %q: %w", ErrRecipe, st.Text, errors.Join(errs...))
	}
	return nil
}

func parseNM(v string) (n, m int, err error) {
	a, b, ok := strings.Cut(v, ":")
	n, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || n > m || m > 64 {
		return 0, 0, fmt.Errorf("nm=%s: want N:M with 1 <= N <= M <= 64, such as 2:4", v)
	}
	return n, m, nil
}

// parseArch parses a student architecture: "2nn", "lenet300", or
// "mlp:H1-H2-..." (hidden sizes separated by "-" or "x", since "," separates
// recipe items). It returns the hidden sizes.
func parseArch(s string) ([]int, error) {
	switch s {
	case "2nn":
		return []int{200, 200}, nil
	case "lenet300":
		return []int{300, 100}, nil
	}
	rest, ok := strings.CutPrefix(s, "mlp:")
	if !ok {
		return nil, fmt.Errorf("student %q: want mlp:H1-H2-..., 2nn or lenet300", s)
	}
	var hidden []int
	if rest == "" {
		return hidden, nil
	}
	for _, f := range strings.FieldsFunc(rest, func(r rune) bool { return r == '-' || r == 'x' }) {
		h, err := strconv.Atoi(f)
		if err != nil || h < 1 || h > 1<<16 {
			return nil, fmt.Errorf("student %q: hidden size %q is not a positive integer", s, f)
		}
		hidden = append(hidden, h)
	}
	return hidden, nil
}

// get returns a parameter as a float, or def.
func (st Stage) float(key string, def float64) float64 {
	if v, ok := st.Params[key]; ok {
		f, _ := strconv.ParseFloat(v, 64)
		return f
	}
	return def
}

func (st Stage) int(key string, def int) int {
	if v, ok := st.Params[key]; ok {
		n, _ := strconv.Atoi(v)
		return n
	}
	return def
}

func (st Stage) str(key, def string) string {
	if v, ok := st.Params[key]; ok {
		return v
	}
	return def
}

// layerValue returns the per-layer override for layer name, or def.
func (st Stage) layerValue(name string, def float64) float64 {
	return st.float(name, def)
}
