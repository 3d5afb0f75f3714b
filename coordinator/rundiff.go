package coordinator

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// RunDiff lists, as "field: committed (given)", the fields in which given
// differs from the run committed to the log. The run ID, which the leader
// draws when it commits the run, and the aggregate order and strategy
// defaults, which it sets, are not compared. An empty result means the node runs what it was given.
func RunDiff(committed, given RunConfig) []string {
	committed.RunID, given.RunID = "", ""
	committed.AggregateOrder, given.AggregateOrder = "", ""
	committed.StrategyDefaults, given.StrategyDefaults = "", ""
	a, b := flatten(committed), flatten(given)
	var out []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			out = append(out, fmt.Sprintf("%s: %s (given %s)", k, v, orNone(w)))
		}
	}
	for k, w := range b {
		if _, ok := a[k]; !ok {
			out = append(out, fmt.Sprintf("%s: none (given %s)", k, w))
		}
	}
	slices.Sort(out)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// flatten maps each JSON leaf of c to its dotted path.
func flatten(c RunConfig) map[string]string {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		if obj, ok := v.(map[string]any); ok {
			for k, x := range obj {
				walk(strings.TrimPrefix(prefix+"."+k, "."), x)
			}
			return
		}
		b, _ := json.Marshal(v)
		out[prefix] = string(b)
	}
	walk("", m)
	return out
}
