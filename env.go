package main

import (
	"fmt"
	"reflect"
	"strings"
)

// variable describes one setting for the usage text.
type variable struct{ name, def, desc string }

func describeVariables() []variable {
	typ := reflect.TypeFor[Config]()
	vars := make([]variable, typ.NumField())
	for i := range vars {
		f := typ.Field(i)
		vars[i] = variable{envPrefix + "_" + f.Tag.Get("envconfig"), f.Tag.Get("default"), f.Tag.Get("desc")}
	}
	return vars
}

// unknownVariables returns a warning for each NOTIFY_* variable in environ
// (KEY=value pairs) that no setting reads, naming the nearest real one:
// a misspelt variable is otherwise silently ignored.
func unknownVariables(environ []string) []string {
	vars := describeVariables()
	known := make([]string, len(vars))
	isKnown := make(map[string]bool, len(vars))
	for i, v := range vars {
		known[i] = v.name
		isKnown[v.name] = true
	}
	var warnings []string
	for _, kv := range environ {
		key, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(key, envPrefix+"_") || isKnown[key] {
			continue
		}
		msg := fmt.Sprintf("%s is not a notify-worker setting and is ignored", key)
		if near, ok := nearest(key, known); ok {
			msg += fmt.Sprintf("; did you mean %s?", near)
		}
		warnings = append(warnings, msg)
	}
	return warnings
}

// nearest returns the candidate closest to s in edit distance, if it is
// close enough to be a likely misspelling.
func nearest(s string, candidates []string) (string, bool) {
	best, bestDist := "", -1
	for _, c := range candidates {
		if d := editDistance(s, c); bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	suffix := len(s) - len(envPrefix) - 1
	return best, bestDist >= 0 && bestDist <= max(2, suffix/3)
}

// editDistance is the Levenshtein distance between a and b, by bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
